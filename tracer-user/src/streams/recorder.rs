//! Writes reassembled streams to files, one per connection and direction, so real traffic can be
//! kept as parser fixtures (`--record-streams DIR`). A debugging tap: it sees exactly what the
//! protocol parsers see, including explicit gap markers.
//!
//! The files hold plaintext of other users' programs (prompts, API keys in headers) and are
//! written by root: the directory is made private (0700), each file is created new (0600,
//! `O_EXCL`, `O_NOFOLLOW`: a planted symlink or file is never written through), and the whole
//! recording stops at a byte budget, so a debugging flag left on cannot fill the disk.

use std::{
    collections::HashMap,
    fs::File,
    io::{ErrorKind, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use tracing::warn;

use super::{ConnKey, Direction, StreamEvent};

/// What one run records at most, all files together.
pub const MAX_RECORDED_BYTES: u64 = 1 << 30;
/// Names tried for one stream when earlier runs left files of the same name.
const MAX_NAME_ATTEMPTS: u32 = 64;

pub struct StreamRecorder {
    dir: PathBuf,
    files: HashMap<(ConnKey, Direction), File>,
    budget: u64,
    written: u64,
    /// Bytes not recorded because the budget was spent.
    pub dropped_bytes: u64,
}

impl StreamRecorder {
    pub fn new(dir: PathBuf) -> std::io::Result<Self> {
        Self::with_budget(dir, MAX_RECORDED_BYTES)
    }

    pub fn with_budget(dir: PathBuf, budget: u64) -> std::io::Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let meta = std::fs::symlink_metadata(&dir)?;
        if !meta.is_dir() {
            return Err(std::io::Error::new(
                ErrorKind::InvalidInput,
                format!("{} is not a directory", dir.display()),
            ));
        }
        // An existing directory keeps its mode from create(): make it private.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(StreamRecorder {
            dir,
            files: HashMap::new(),
            budget,
            written: 0,
            dropped_bytes: 0,
        })
    }

    pub fn record(&mut self, event: &StreamEvent) {
        let (conn, direction, bytes): (ConnKey, Direction, std::borrow::Cow<[u8]>) = match event {
            StreamEvent::Data {
                conn,
                direction,
                bytes,
                ..
            } => (*conn, *direction, bytes[..].into()),
            StreamEvent::Gap {
                conn,
                direction,
                len,
                ..
            } => (
                *conn,
                *direction,
                format!("\n<<agent-tracer gap: {len} bytes lost>>\n")
                    .into_bytes()
                    .into(),
            ),
            StreamEvent::ProcessExit { pid, .. } => {
                self.files.retain(|(conn, _), _| conn.pid != *pid);
                return;
            }
            StreamEvent::Closed { conn, .. } => {
                self.files.retain(|(c, _), _| c != conn);
                return;
            }
            StreamEvent::Peer { .. } => return,
        };
        let file = match self.files.entry((conn, direction)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                // Stdio pairs apart from sockets: fd 0 could be either.
                let stdio = if conn.source == super::Source::Stdio {
                    "stdio"
                } else {
                    ""
                };
                let name = format!(
                    "{}-{stdio}{:x}-{}.bin",
                    conn.pid,
                    conn.conn_id,
                    match direction {
                        Direction::Egress => "egress",
                        Direction::Ingress => "ingress",
                    }
                );
                match create_private(&self.dir, &name) {
                    Ok(f) => e.insert(f),
                    Err(err) => {
                        warn!("recording streams: {err}");
                        return;
                    }
                }
            }
        };
        let len = bytes.len() as u64;
        if self.written.saturating_add(len) > self.budget {
            if self.dropped_bytes == 0 {
                warn!(
                    "recording streams: {} bytes recorded, the budget; recording no more",
                    self.written
                );
            }
            self.dropped_bytes = self.dropped_bytes.saturating_add(len);
            return;
        }
        self.written += len;
        if let Err(err) = file.write_all(&bytes) {
            warn!("recording streams: {err}");
        }
    }
}

/// A new file `name` in `dir`, 0600, never an existing file or a symlink; when a file of that
/// name is there (an earlier run, a reused pid) the next free `~N` variant.
fn create_private(dir: &Path, name: &str) -> std::io::Result<File> {
    let (stem, direction) = name.rsplit_once('-').unwrap_or((name, ""));
    let mut last = None;
    for attempt in 0..MAX_NAME_ATTEMPTS {
        let candidate = if attempt == 0 {
            name.to_string()
        } else {
            format!("{stem}~{attempt}-{direction}")
        };
        match File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dir.join(&candidate))
        {
            Err(e) if e.kind() == ErrorKind::AlreadyExists => last = Some(e),
            other => return other,
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::from(ErrorKind::AlreadyExists)))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use bytes::Bytes;

    use super::*;
    use crate::streams::Source;

    fn data(pid: u32, bytes: &'static [u8]) -> StreamEvent {
        StreamEvent::Data {
            conn: ConnKey {
                pid,
                source: Source::Tls,
                conn_id: 0x10,
            },
            direction: Direction::Egress,
            timestamp_ns: 0,
            bytes: Bytes::from_static(bytes),
        }
    }

    #[test]
    fn files_are_private_new_and_never_followed_through_a_symlink() {
        let dir = std::env::temp_dir().join(format!("recorder-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        // A file planted under the name the recorder will use, pointing elsewhere.
        let victim = dir.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("7-10-egress.bin")).unwrap();
        let mut recorder = StreamRecorder::new(dir.clone()).unwrap();
        recorder.record(&data(7, b"GET / HTTP/1.1\r\n"));
        drop(recorder);
        assert_eq!(
            std::fs::read(&victim).unwrap(),
            b"keep",
            "not written through"
        );
        let written = dir.join("7-10~1-egress.bin");
        assert_eq!(std::fs::read(&written).unwrap(), b"GET / HTTP/1.1\r\n");
        assert_eq!(std::fs::metadata(&written).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn recording_stops_at_its_budget_and_counts_the_rest() {
        let dir = std::env::temp_dir().join(format!("recorder-budget-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut recorder = StreamRecorder::with_budget(dir.clone(), 10).unwrap();
        recorder.record(&data(8, b"0123456789"));
        recorder.record(&data(8, b"abc"));
        assert_eq!(recorder.dropped_bytes, 3);
        assert_eq!(
            std::fs::read(dir.join("8-10-egress.bin")).unwrap(),
            b"0123456789"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
