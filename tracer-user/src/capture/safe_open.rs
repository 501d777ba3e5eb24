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

mod code_sections;

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

/// Bytes of files under analysis at once, process-wide, counted by file size. Reading instead of
/// mapping puts a file's bytes in the daemon's memory: four analysis threads, start-up and
/// pre-attach each holding a 200 MiB agent executable would take it past its memory limit. A
/// read waits for room; a file larger than the whole budget waits until it is analysed alone.
/// Analysis holds only part of most files (their metadata), but the parts of large ones still
/// add up: at 256 MiB, node's symbols, a Go CLI's function table and a Rust CLI read whole
/// overlapped at start-up and added up to 37 MB to the daemon's peak; at 64 MiB large executables
/// take their turns, and the start-up scan of this host's 570 executables is no slower.
pub const ANALYSIS_BUDGET_BYTES: u64 = 64 << 20;

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

/// A file's bytes, read for analysis, charged to the analysis budget while they live. Parts may
/// be left unread ([`read_for_analysis`]): they read as zeros until [`read_data`](Self::read_data)
/// or [`read_all`](Self::read_all).
pub struct AnalysedBytes {
    data: AnonymousBuffer,
    charge: u64,
    budget: &'static ByteBudget,
    /// File ranges not read yet (sorted, merged).
    unread: Vec<std::ops::Range<u64>>,
    /// The code sections (sorted, merged): what [`read_data`](Self::read_data) leaves unread.
    code: Vec<std::ops::Range<u64>>,
}

impl AnalysedBytes {
    /// `len` bytes at file offset `offset`: from memory, or from `file` (the file these bytes
    /// were read from) where they lie in a part not read yet. What Go's locator disassembles.
    pub fn bytes_at(&self, file: &File, offset: u64, len: u64) -> Option<Vec<u8>> {
        let end = offset.checked_add(len)?;
        let start = usize::try_from(offset).ok()?;
        let stop = usize::try_from(end).ok()?;
        if !self.unread.iter().any(|r| r.start < end && offset < r.end) {
            return self.data.get(start..stop).map(<[u8]>::to_vec);
        }
        if stop > self.data.len() {
            return None;
        }
        let mut bytes = vec![0; stop - start];
        use std::os::unix::fs::FileExt as _;
        file.read_exact_at(&mut bytes, offset).ok()?;
        Some(bytes)
    }

    /// Whether some of the file is still unread.
    pub fn partly_unread(&self) -> bool {
        !self.unread.is_empty()
    }

    /// Reads all but the code sections (what Go's analysis needs).
    pub fn read_data(&mut self, file: &File, shown: &str) -> Result<(), OpenError> {
        let code = self.code.clone();
        self.read_unread_but(file, shown, &code)
    }

    /// Reads the unread parts of `wanted` (file ranges, in any order), leaving the rest unread:
    /// a Go executable's function names and entries, not its line tables.
    pub fn read_within(
        &mut self,
        file: &File,
        shown: &str,
        wanted: Vec<std::ops::Range<u64>>,
    ) -> Result<(), OpenError> {
        let others = code_sections::between(self.data.len() as u64, &code_sections::merged(wanted));
        self.read_unread_but(file, shown, &others)
    }

    /// Reads everything left unread: the locators that disassemble need all of it.
    pub fn read_all(&mut self, file: &File, shown: &str) -> Result<(), OpenError> {
        self.read_unread_but(file, shown, &[])
    }

    /// Reads the unread ranges outside `keep_unread` (sorted, merged), from `file` (the file
    /// these bytes were read from). A file whose size changed is an error.
    fn read_unread_but(
        &mut self,
        file: &File,
        shown: &str,
        keep_unread: &[std::ops::Range<u64>],
    ) -> Result<(), OpenError> {
        let size = file_size(file, shown)?;
        let expected = self.data.len() as u64;
        if size != expected {
            return Err(OpenError::Changed {
                path: shown.to_string(),
                expected,
                read: size,
            });
        }
        // What stays unread: the unread parts of `keep_unread`.
        let mut still = Vec::new();
        for range in std::mem::take(&mut self.unread) {
            let mut at = range.start;
            for keep in keep_unread {
                let (start, end) = (keep.start.max(range.start), keep.end.min(range.end));
                if start >= end {
                    continue;
                }
                if start > at {
                    read_range(file, &mut self.data, at..start, shown)?;
                }
                still.push(start..end);
                at = end;
            }
            if at < range.end {
                read_range(file, &mut self.data, at..range.end, shown)?;
            }
        }
        self.unread = still;
        Ok(())
    }
}

/// The size `fstat` gives the open file.
fn file_size(file: &File, shown: &str) -> Result<u64, OpenError> {
    file.metadata()
        .map(|meta| meta.size())
        .map_err(|source| OpenError::Io {
            path: shown.to_string(),
            source,
        })
}

/// Reads `range` of `file` into the same range of `into`; a short read is [`OpenError::Changed`].
fn read_range(
    file: &File,
    into: &mut [u8],
    range: std::ops::Range<u64>,
    shown: &str,
) -> Result<(), OpenError> {
    let expected = into.len() as u64;
    let changed = |read| OpenError::Changed {
        path: shown.to_string(),
        expected,
        read,
    };
    let start = usize::try_from(range.start).map_err(|_| changed(0))?;
    let end = usize::try_from(range.end).map_err(|_| changed(0))?;
    let target = into.get_mut(start..end).ok_or(changed(0))?;
    let mut reader = PositionedReader {
        file,
        at: range.start,
    };
    let mut done = 0;
    while done < target.len() {
        match reader.read(&mut target[done..]) {
            // The file ends before its size said: it shrank.
            Ok(0) => return Err(changed(reader.at)),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(OpenError::Io {
                    path: shown.to_string(),
                    source,
                })
            }
        }
    }
    Ok(())
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
        // The analysis's own structures (symbol tables, the Go function table, the locators'
        // maps) were freed just before: malloc keeps freed memory in its arenas, where one
        // 90 MB Go binary's analysis left 32 MB resident for the daemon's whole life.
        crate::freed_memory::give_back();
    }
}

/// Bytes read at a time by [`needles_in_file`].
const SCAN_WINDOW_BYTES: usize = 1 << 20;

/// Which of `needles` occur in `file`, read through one bounded window rather than held whole:
/// what a file's unread parts are searched with (a string a locator needs may be anywhere).
pub fn needles_in_file(
    file: &File,
    shown: &str,
    needles: &[&[u8]],
) -> Result<Vec<bool>, OpenError> {
    let finders: Vec<memchr::memmem::Finder<'_>> =
        needles.iter().map(memchr::memmem::Finder::new).collect();
    let mut found = vec![false; needles.len()];
    // A needle may straddle two windows: each window starts with the last bytes of the one
    // before, one fewer than the longest needle.
    let keep = needles
        .iter()
        .map(|n| n.len())
        .max()
        .unwrap_or(1)
        .saturating_sub(1);
    let mut window = vec![0u8; SCAN_WINDOW_BYTES + keep];
    let mut kept = 0;
    let mut reader = PositionedReader { file, at: 0 };
    loop {
        let n = match reader.read(&mut window[kept..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(OpenError::Io {
                    path: shown.to_string(),
                    source,
                })
            }
        };
        let filled = kept + n;
        for (finder, found) in finders.iter().zip(found.iter_mut()) {
            *found = *found || finder.find(&window[..filled]).is_some();
        }
        if found.iter().all(|f| *f) {
            break;
        }
        kept = keep.min(filled);
        window.copy_within(filled - kept..filled, 0);
    }
    Ok(found)
}

/// Zeroed memory mapped for one file's bytes and unmapped when dropped: a file's bytes go back
/// to the kernel the moment its analysis ends, never into malloc's arenas, which keep what they
/// were given. Pages never written stay unbacked.
pub struct AnonymousBuffer {
    start: std::ptr::NonNull<u8>,
    len: usize,
}

// Safety: it owns its mapping outright, like a `Vec<u8>`.
unsafe impl Send for AnonymousBuffer {}
// Safety: shared access is read-only.
unsafe impl Sync for AnonymousBuffer {}

impl AnonymousBuffer {
    pub fn zeroed(len: usize) -> std::io::Result<Self> {
        if len == 0 {
            return Ok(AnonymousBuffer {
                start: std::ptr::NonNull::dangling(),
                len,
            });
        }
        // Safety: a fresh private anonymous mapping, owned by the value returned.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if at == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let start = std::ptr::NonNull::new(at.cast::<u8>())
            .ok_or_else(|| std::io::Error::other("mmap returned null"))?;
        Ok(AnonymousBuffer { start, len })
    }
}

impl std::ops::Deref for AnonymousBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // Safety: `len` mapped, readable bytes (or none, at a dangling but aligned pointer).
        unsafe { std::slice::from_raw_parts(self.start.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for AnonymousBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        // Safety: as above, and writable; `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.start.as_ptr(), self.len) }
    }
}

impl Drop for AnonymousBuffer {
    fn drop(&mut self) {
        if self.len > 0 {
            // Safety: the mapping made in `zeroed`, unmapped once.
            unsafe {
                libc::munmap(self.start.as_ptr().cast(), self.len);
            }
        }
    }
}

/// The whole of an opened file, read (not mapped) and at most [`MAX_ANALYSED_BYTES`]: a file
/// that grows, shrinks or is truncated meanwhile is an error, never a crash. Waits for room in
/// the [analysis budget](ANALYSIS_BUDGET_BYTES) first.
pub fn read_capped(file: &File, shown: &str) -> Result<AnalysedBytes, OpenError> {
    read_charged(file, shown, &ANALYSIS_BUDGET, Parts::All)
}

/// [`read_capped`], but only the file's metadata (headers, symbol tables and their strings,
/// dynamic section, notes) when its headers say where it is: the rest waits for
/// [`AnalysedBytes::read_data`] or [`AnalysedBytes::read_all`] (or is read piecewise through
/// [`AnalysedBytes::bytes_at`], or searched with [`needles_in_file`]).
pub fn read_for_analysis(file: &File, shown: &str) -> Result<AnalysedBytes, OpenError> {
    read_charged(file, shown, &ANALYSIS_BUDGET, Parts::Metadata)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Parts {
    All,
    Metadata,
}

fn read_charged(
    file: &File,
    shown: &str,
    budget: &'static ByteBudget,
    parts: Parts,
) -> Result<AnalysedBytes, OpenError> {
    let size = file_size(file, shown)?;
    // The whole file, code or not: reading the code later must not wait for room while
    // holding some (two analyses could then wait on each other for ever).
    let charge = budget.take(size.min(MAX_ANALYSED_BYTES));
    let layout = match parts {
        Parts::Metadata if size <= MAX_ANALYSED_BYTES => {
            code_sections::layout(size, |offset, len| {
                let mut bytes = vec![0; len];
                use std::os::unix::fs::FileExt as _;
                file.read_exact_at(&mut bytes, offset).ok().map(|()| bytes)
            })
        }
        _ => None,
    };
    let (unread, code) = match layout {
        Some(layout) => (code_sections::between(size, &layout.metadata), layout.code),
        None => (Vec::new(), Vec::new()),
    };
    match read_at_most(file, shown, MAX_ANALYSED_BYTES, &unread) {
        Ok(data) => Ok(AnalysedBytes {
            data,
            charge,
            budget,
            unread,
            code,
        }),
        Err(e) => {
            budget.give_back(charge);
            Err(e)
        }
    }
}

/// The file, all but the ranges in `skip` (sorted, merged; left zero), and at most `limit`
/// bytes.
fn read_at_most(
    file: &File,
    shown: &str,
    limit: u64,
    skip: &[std::ops::Range<u64>],
) -> Result<AnonymousBuffer, OpenError> {
    let io = |source| OpenError::Io {
        path: shown.to_string(),
        source,
    };
    let size = file_size(file, shown)?;
    if size > limit {
        return Err(OpenError::TooLarge {
            path: shown.to_string(),
            size,
            limit,
        });
    }
    let len = usize::try_from(size).map_err(|e| io(std::io::Error::other(e)))?;
    let mut data = AnonymousBuffer::zeroed(len).map_err(io)?;
    for range in code_sections::between(size, skip) {
        read_range(file, &mut data, range, shown)?;
    }
    // One byte past the size: a file that grew meanwhile is as changed as one that shrank.
    let mut reader = PositionedReader { file, at: size };
    if matches!(reader.read(&mut [0u8]), Ok(1)) {
        return Err(OpenError::Changed {
            path: shown.to_string(),
            expected: size,
            read: size + 1,
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
