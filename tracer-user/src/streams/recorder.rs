//! Writes reassembled streams to files, one per connection and direction, so real traffic can be
//! kept as parser fixtures (`--record-streams DIR`). A debugging tap: it sees exactly what the
//! protocol parsers see, including explicit gap markers.

use std::{collections::HashMap, fs::File, io::Write, path::PathBuf};

use tracing::warn;

use super::{ConnKey, Direction, StreamEvent};

pub struct StreamRecorder {
    dir: PathBuf,
    files: HashMap<(ConnKey, Direction), File>,
}

impl StreamRecorder {
    pub fn new(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(StreamRecorder {
            dir,
            files: HashMap::new(),
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
                match File::options()
                    .create(true)
                    .append(true)
                    .open(self.dir.join(name))
                {
                    Ok(f) => e.insert(f),
                    Err(err) => {
                        warn!("recording streams: {err}");
                        return;
                    }
                }
            }
        };
        if let Err(err) = file.write_all(&bytes) {
            warn!("recording streams: {err}");
        }
    }
}
