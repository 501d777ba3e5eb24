//! Stdio servers already running when the tracer starts: the kernel marks the stdin and stdout
//! of every program that execs afterwards (`tracer-ebpf/src/maps.rs`, `mark_stdio`), but a
//! process started before has to be found in /proc. One whose fds 0 and 1 are both pipes or UNIX
//! stream sockets (which libuv makes for a child's stdio) may be an MCP server its client spawned;
//! those fds, and any other fd open on the same files, are seeded as JSON-RPC candidates. The
//! kernel then decides on their next call's bytes.

use std::path::{Path, PathBuf};

use tracer_common::FORGET_FDS;

/// What a stdio fd is, from its /proc link (`pipe:[N]`, `socket:[N]`, a path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StdioKind {
    Pipe,
    UnixStream,
    Other,
}

/// The fds to seed, given each open fd's link and kind: stdin and stdout must both be pipes or
/// UNIX stream sockets; every fd below the kernel's forget range open on the same files comes
/// along. `None` when the process is not a stdio server candidate.
pub fn stdio_candidates(fds: &[(u32, String, StdioKind)]) -> Option<Vec<u32>> {
    let link = |n: u32| fds.iter().find(|(fd, _, _)| *fd == n);
    let (stdin, stdout) = (link(0)?, link(1)?);
    if [stdin, stdout]
        .iter()
        .any(|(_, _, k)| *k == StdioKind::Other)
    {
        return None;
    }
    let mut seeded: Vec<u32> = fds
        .iter()
        .filter(|(fd, l, _)| *fd < FORGET_FDS && (*l == stdin.1 || *l == stdout.1))
        .map(|(fd, _, _)| *fd)
        .collect();
    seeded.sort_unstable();
    Some(seeded)
}

/// The stdio fds of a running process to seed, read from /proc.
pub fn stdio_fds(pid: u32) -> Option<Vec<u32>> {
    let dir = PathBuf::from(format!("/proc/{pid}/fd"));
    let describe = |fd: u32| -> Option<(u32, String, StdioKind)> {
        let path = dir.join(fd.to_string());
        let link = std::fs::read_link(&path)
            .ok()?
            .to_string_lossy()
            .into_owned();
        let kind = if link.starts_with("pipe:[") {
            StdioKind::Pipe
        } else if link.starts_with("socket:[") && is_unix_stream(&path) {
            StdioKind::UnixStream
        } else {
            StdioKind::Other
        };
        Some((fd, link, kind))
    };
    // The common case (a terminal, a file, /dev/null) is decided on fd 0 and 1 alone.
    let stdio = [describe(0)?, describe(1)?];
    stdio_candidates(&stdio)?;
    let mut fds: Vec<(u32, String, StdioKind)> = stdio.to_vec();
    for entry in std::fs::read_dir(&dir).ok()?.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if fd > 1 && fd < FORGET_FDS {
            if let Ok(link) = std::fs::read_link(entry.path()) {
                fds.push((fd, link.to_string_lossy().into_owned(), StdioKind::Other));
            }
        }
    }
    stdio_candidates(&fds)
}

/// A socket fd's protocol, from the `system.sockprotoname` attribute sockfs gives its inode
/// (`UNIX-STREAM` for the socketpair libuv makes for a child's stdio, `TCP`, ...).
fn is_unix_stream(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mut value = [0u8; 32];
    // Safety: both strings are NUL-terminated and `value` is writable for its length.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"system.sockprotoname".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n > 0 && value[..n as usize].starts_with(b"UNIX-STREAM")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd(n: u32, link: &str, kind: StdioKind) -> (u32, String, StdioKind) {
        (n, link.to_string(), kind)
    }

    #[test]
    fn stdio_servers_are_pipe_or_socketpair_pairs() {
        use StdioKind::*;
        assert_eq!(
            stdio_candidates(&[fd(0, "pipe:[7]", Pipe), fd(1, "pipe:[8]", Pipe)]),
            Some(vec![0, 1])
        );
        assert_eq!(
            stdio_candidates(&[
                fd(0, "socket:[7]", UnixStream),
                fd(1, "socket:[8]", UnixStream),
                fd(2, "/dev/pts/1", Other),
                // A duplicate of stdin made before the seed landed comes along; another pipe
                // does not.
                fd(3, "socket:[7]", Other),
                fd(4, "pipe:[9]", Other),
            ]),
            Some(vec![0, 1, 3])
        );
        // A shell pipeline's first and last stages, a terminal, a TCP socket (inetd style).
        assert_eq!(
            stdio_candidates(&[fd(0, "/dev/pts/1", Other), fd(1, "pipe:[8]", Pipe)]),
            None
        );
        assert_eq!(
            stdio_candidates(&[fd(0, "pipe:[8]", Pipe), fd(1, "/dev/null", Other)]),
            None
        );
        assert_eq!(
            stdio_candidates(&[fd(0, "socket:[3]", Other), fd(1, "socket:[3]", Other)]),
            None
        );
        assert_eq!(stdio_candidates(&[fd(1, "pipe:[8]", Pipe)]), None);
    }

    #[test]
    fn reads_this_process_socketpair_kind() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        use std::os::fd::AsRawFd as _;
        let path = PathBuf::from(format!("/proc/self/fd/{}", a.as_raw_fd()));
        assert!(is_unix_stream(&path));
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let path = PathBuf::from(format!("/proc/self/fd/{}", tcp.as_raw_fd()));
        assert!(!is_unix_stream(&path));
    }
}
