//! Opening and reading the files traced processes name, as root, without being fooled by them.
//!
//! A path from `/proc/PID/maps` is whatever the process's owner made of it: the library may have
//! been unlinked (the path then ends in ` (deleted)`, a name anyone can create) and replaced by a
//! FIFO, whose open blocks until a writer comes, or by a symlink to any file on the host. So:
//! - a mapping is opened through `/proc/PID/map_files/START-END`, which the kernel resolves to
//!   the mapped inode itself, deleted or not, whatever now sits at its name;
//! - where that is refused (no CAP_SYS_ADMIN), the path is resolved inside the process's root
//!   with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS)`, and a deleted mapping is skipped;
//! - every open is `O_NONBLOCK | O_CLOEXEC` (a FIFO opens at once and is then refused), and
//!   `O_NOFOLLOW` where the path is not one of the kernel's own links;
//! - only regular files are accepted (`fstat` on the open descriptor, not `stat` on the name);
//! - a file is read into memory, never mapped (a file truncated while mapped raises SIGBUS,
//!   which kills the daemon), and only up to [`MAX_ANALYSED_BYTES`].

use std::{
    ffi::CString,
    fs::File,
    io::Read as _,
    os::{
        fd::{FromRawFd as _, OwnedFd},
        unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    },
    path::Path,
    sync::{Condvar, Mutex},
};

use thiserror::Error;

use super::targets::FileId;

/// Largest file analysed. The largest agent binaries (Bun, Codex CLI, a debug build of node)
/// are 100–300 MB; past this the file is refused, counted and logged, not read.
pub const MAX_ANALYSED_BYTES: u64 = 512 << 20;

/// Suffix the kernel appends in `/proc/PID/maps` to a mapping whose file was unlinked.
const DELETED: &str = " (deleted)";

#[derive(Debug, Error)]
pub enum OpenError {
    #[error("opening {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a regular file ({kind})")]
    NotRegular { path: String, kind: &'static str },
    #[error("{path} was unlinked and its mapping cannot be opened through map_files")]
    Deleted { path: String },
    #[error("{path} is {size} bytes, more than the {limit} analysed")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("{path} changed while it was read ({expected} bytes expected, {read} read)")]
    Changed {
        path: String,
        expected: u64,
        read: u64,
    },
}

/// An open regular file and its identity (from `fstat` on the descriptor).
#[derive(Debug)]
pub struct Opened {
    pub file: File,
    pub id: FileId,
}

/// One file mapping of a process, as `/proc/PID/maps` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping<'a> {
    /// `start-end` in hex, the name of its entry in `/proc/PID/map_files/`.
    pub range: &'a str,
    /// The path, possibly ending in ` (deleted)`.
    pub path: &'a str,
}

impl Mapping<'_> {
    pub fn deleted(&self) -> bool {
        self.path.ends_with(DELETED)
    }

    /// The path without the kernel's ` (deleted)` suffix, for people.
    pub fn name(&self) -> &str {
        self.path.strip_suffix(DELETED).unwrap_or(self.path)
    }
}

/// File mappings in a `/proc/PID/maps` text.
pub fn mappings(maps: &str) -> impl Iterator<Item = Mapping<'_>> {
    maps.lines().filter_map(|line| {
        let range = line.split_once(' ')?.0;
        // address perms offset dev inode pathname: the path is the sixth field and may hold spaces.
        let mut rest = line;
        for _ in 0..5 {
            rest = rest.trim_start().split_once(' ')?.1;
        }
        let path = rest.trim();
        path.starts_with('/').then_some(Mapping { range, path })
    })
}

/// A file a process maps: the mapped inode through `map_files`, else its path resolved inside
/// the process's root without following symlinks (a deleted mapping is then refused).
pub fn open_mapping(pid: u32, mapping: &Mapping<'_>) -> Result<Opened, OpenError> {
    let link = format!("/proc/{pid}/map_files/{}", mapping.range);
    // The kernel's link to the mapped file: followed by design, so no O_NOFOLLOW.
    match open_flags(&link, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC) {
        Ok(fd) => regular(fd, mapping.path),
        Err(_) if mapping.deleted() => Err(OpenError::Deleted {
            path: mapping.path.to_string(),
        }),
        Err(_) => open_in_root(pid, mapping.path),
    }
}

/// `path` inside the root directory of process `pid` (its container's file system), with no
/// symlink followed on the way, no escape from that root, no blocking open.
pub fn open_in_root(pid: u32, path: &str) -> Result<Opened, OpenError> {
    let io = |source| OpenError::Io {
        path: path.to_string(),
        source,
    };
    let root = open_flags(
        format!("/proc/{pid}/root"),
        libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
    )
    .map_err(io)?;
    let c_path = CString::new(path).map_err(|e| io(std::io::Error::other(e)))?;
    // Safety: a plain C struct of integers, for which zero is valid (the kernel wants the
    // fields not set here zero). `open_how` is non-exhaustive, hence no struct literal.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    use std::os::fd::AsRawFd as _;
    // RESOLVE_IN_ROOT answers EAGAIN when a rename raced the lookup: try again, a few times.
    for _ in 0..4 {
        // Safety: valid pointers to a NUL-terminated path and an open_how of the size passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                c_path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // Safety: a descriptor the kernel just returned, owned by nobody else.
            let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
            return regular(fd, path);
        }
        let error = std::io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EAGAIN) => continue,
            // Before Linux 5.6: no confinement to the root is possible, but the last component
            // is still no symlink and a FIFO still opens at once and is refused.
            Some(libc::ENOSYS) => {
                if path.ends_with(DELETED) {
                    return Err(OpenError::Deleted {
                        path: path.to_string(),
                    });
                }
                let full = format!("/proc/{pid}/root{path}");
                return open_host(Path::new(&full));
            }
            _ => return Err(io(error)),
        }
    }
    Err(io(std::io::Error::from_raw_os_error(libc::EAGAIN)))
}

/// The executable process `pid` runs, through the kernel's `/proc/PID/exe` link (the very file
/// it exec'd, which `execve` required to be regular: checked again all the same).
pub fn open_exe(pid: u32) -> Result<Opened, OpenError> {
    let link = format!("/proc/{pid}/exe");
    let fd = open_flags(&link, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC).map_err(
        |source| OpenError::Io {
            path: link.clone(),
            source,
        },
    )?;
    regular(fd, &link)
}

/// A file on the host's own file system (the usual library directories, runtimes on PATH,
/// pre-attach's finds): the last component is no symlink (callers pass canonical paths), no
/// blocking open, a regular file only.
pub fn open_host(path: &Path) -> Result<Opened, OpenError> {
    let shown = path.display().to_string();
    let fd = open_flags(
        path,
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC,
    )
    .map_err(|source| OpenError::Io {
        path: shown.clone(),
        source,
    })?;
    regular(fd, &shown)
}

/// Bytes of files held in memory for analysis at once, process-wide. Reading instead of mapping
/// puts a file's bytes on the heap: four analysis threads, start-up and pre-attach each holding
/// a 200 MiB agent executable would take the daemon past its memory limit. A read waits for room;
/// a file larger than the whole budget waits until it can hold all of it alone.
pub const ANALYSIS_BUDGET_BYTES: u64 = 256 << 20;

static ANALYSIS_BUDGET: ByteBudget = ByteBudget::new(ANALYSIS_BUDGET_BYTES);

/// A counting budget of bytes that blocks the taker until enough is free.
pub struct ByteBudget {
    limit: u64,
    held: Mutex<u64>,
    freed: Condvar,
}

impl ByteBudget {
    pub const fn new(limit: u64) -> Self {
        ByteBudget {
            limit,
            held: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// Takes `bytes` (at most the whole budget), waiting for room; returns what was taken.
    pub fn take(&self, bytes: u64) -> u64 {
        let charge = bytes.min(self.limit);
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        while held.saturating_add(charge) > self.limit {
            held = self.freed.wait(held).unwrap_or_else(|e| e.into_inner());
        }
        *held += charge;
        charge
    }

    pub fn give_back(&self, charge: u64) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        *held = held.saturating_sub(charge);
        self.freed.notify_all();
    }

    pub fn held(&self) -> u64 {
        *self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A file's bytes, read for analysis, charged to the analysis budget while they live.
pub struct AnalysedBytes {
    data: Vec<u8>,
    charge: u64,
    budget: &'static ByteBudget,
}

impl std::ops::Deref for AnalysedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for AnalysedBytes {
    fn drop(&mut self) {
        self.budget.give_back(self.charge);
    }
}

/// The whole of an opened file, read (not mapped) and at most [`MAX_ANALYSED_BYTES`]: a file
/// that grows, shrinks or is truncated meanwhile is an error, never a crash. Waits for room in
/// the [analysis budget](ANALYSIS_BUDGET_BYTES) first.
pub fn read_capped(file: &File, shown: &str) -> Result<AnalysedBytes, OpenError> {
    read_charged(file, shown, &ANALYSIS_BUDGET)
}

fn read_charged(
    file: &File,
    shown: &str,
    budget: &'static ByteBudget,
) -> Result<AnalysedBytes, OpenError> {
    let size = file
        .metadata()
        .map_err(|source| OpenError::Io {
            path: shown.to_string(),
            source,
        })?
        .size();
    let charge = budget.take(size.min(MAX_ANALYSED_BYTES));
    match read_at_most(file, shown, MAX_ANALYSED_BYTES) {
        Ok(data) => Ok(AnalysedBytes {
            data,
            charge,
            budget,
        }),
        Err(e) => {
            budget.give_back(charge);
            Err(e)
        }
    }
}

fn read_at_most(file: &File, shown: &str, limit: u64) -> Result<Vec<u8>, OpenError> {
    let io = |source| OpenError::Io {
        path: shown.to_string(),
        source,
    };
    let size = file.metadata().map_err(io)?.size();
    if size > limit {
        return Err(OpenError::TooLarge {
            path: shown.to_string(),
            size,
            limit,
        });
    }
    let mut data = Vec::new();
    data.try_reserve_exact(usize::try_from(size).unwrap_or(usize::MAX))
        .map_err(|e| io(std::io::Error::other(e)))?;
    // From the start whatever the descriptor's position, and one byte past the size to see
    // growth. `&File` reads through its own position: reopen-free, so read with pread.
    let mut reader = PositionedReader { file, at: 0 };
    (&mut reader)
        .take(size.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(io)?;
    if data.len() as u64 != size {
        return Err(OpenError::Changed {
            path: shown.to_string(),
            expected: size,
            read: data.len() as u64,
        });
    }
    Ok(data)
}

/// Reads with `pread` from its own offset, leaving the descriptor's position alone (the file
/// may be shared with other readers).
struct PositionedReader<'a> {
    file: &'a File,
    at: u64,
}

impl std::io::Read for PositionedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt as _;
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

fn open_flags(path: impl AsRef<Path>, flags: i32) -> std::io::Result<OwnedFd> {
    let c_path = CString::new(path.as_ref().as_os_str().as_bytes())?;
    // Safety: a NUL-terminated path; the returned descriptor is owned below.
    let fd = unsafe { libc::open(c_path.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // Safety: a descriptor the kernel just returned, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Accepts the descriptor only if it is a regular file (judged on the descriptor itself).
fn regular(fd: OwnedFd, shown: &str) -> Result<Opened, OpenError> {
    let file = File::from(fd);
    let meta = file.metadata().map_err(|source| OpenError::Io {
        path: shown.to_string(),
        source,
    })?;
    let kind = meta.file_type();
    if !kind.is_file() {
        use std::os::unix::fs::FileTypeExt as _;
        let kind = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_dir() {
            "a directory"
        } else {
            "not a file"
        };
        return Err(OpenError::NotRegular {
            path: shown.to_string(),
            kind,
        });
    }
    Ok(Opened {
        id: FileId::from_metadata(&meta),
        file,
    })
}

#[cfg(test)]
mod tests;
