use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use super::*;

const LIBSSL: &str = "/lib/x86_64-linux-gnu/libssl.so.3";

#[test]
fn parses_maps_paths_with_spaces_and_deleted_ones() {
    let maps = "7f00-7f01 r-xp 00000000 08:01 1234   /usr/lib/x86_64-linux-gnu/libssl.so.3\n\
                7f02-7f03 rw-p 00000000 00:00 0 \n\
                7f04-7f05 r--p 00000000 08:01 99   /opt/my app/libssl.so.3 (deleted)\n\
                7ffd-7ffe rw-p 00000000 00:00 0   [stack]\n";
    let found: Vec<Mapping<'_>> = mappings(maps).collect();
    assert_eq!(
        found,
        vec![
            Mapping {
                range: "7f00-7f01",
                path: "/usr/lib/x86_64-linux-gnu/libssl.so.3"
            },
            Mapping {
                range: "7f04-7f05",
                path: "/opt/my app/libssl.so.3 (deleted)"
            },
        ]
    );
    assert!(!found[0].deleted());
    assert!(found[1].deleted());
    assert_eq!(found[1].name(), "/opt/my app/libssl.so.3");
}

/// A real process mapping a private copy of libssl (what a traced program's dynamic loader
/// does), killed when dropped.
struct Mapper {
    child: Child,
    dir: PathBuf,
    library: PathBuf,
    inode: u64,
}

impl Mapper {
    fn start(tag: &str) -> Mapper {
        let dir = std::env::temp_dir().join(format!("safe-open-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let library = dir.join("libssl.so.3");
        std::fs::copy(LIBSSL, &library).unwrap();
        let inode = std::fs::metadata(&library).unwrap().ino();
        let script = "import mmap, sys\n\
                      f = open(sys.argv[1], 'rb')\n\
                      m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\n\
                      f.close()\n\
                      print('mapped', flush=True)\n\
                      sys.stdin.read()\n";
        let mut child = Command::new("python3")
            .args(["-c", script])
            .arg(&library)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "mapped");
        Mapper {
            child,
            dir,
            library,
            inode,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The library's mapping as the process's maps shows it now.
    fn mapping(&self) -> (String, String) {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.pid())).unwrap();
        let wanted = self.library.to_str().unwrap();
        let m = mappings(&maps)
            .find(|m| m.name() == wanted)
            .expect("the library is mapped");
        (m.range.to_string(), m.path.to_string())
    }

    /// Unlinks the library and puts `plant` at the name `/proc/PID/maps` now shows for it.
    fn replace_with(&self, plant: impl FnOnce(&Path)) -> (String, String) {
        std::fs::remove_file(&self.library).unwrap();
        let (range, path) = self.mapping();
        assert!(path.ends_with(" (deleted)"), "{path}");
        plant(Path::new(&path));
        (range, path)
    }
}

impl Drop for Mapper {
    fn drop(&mut self) {
        let _ = self.child.stdin.take().map(|mut s| s.write_all(b""));
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `f` on another thread and fails the test if it has not returned within `limit`: the
/// bug this guards against is an open that blocks forever.
fn returns_within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .expect("the open returns at once instead of blocking")
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // Safety: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

/// Issue 17 item 3: the library a process mapped is unlinked and a FIFO created under the name
/// maps shows for it. Opening that name blocked the attacher forever; now the mapped file itself
/// is opened through map_files (and analysed: its hooks are found), and the path is refused.
#[test]
fn a_fifo_under_a_deleted_librarys_name_is_never_opened() {
    let mapper = Mapper::start("fifo");
    let (range, path) = mapper.replace_with(mkfifo);
    let pid = mapper.pid();
    let (r, p) = (range.clone(), path.clone());
    let opened = returns_within(Duration::from_secs(5), move || {
        open_mapping(
            pid,
            &Mapping {
                range: &r,
                path: &p,
            },
        )
    })
    .expect("the mapped file opens through map_files");
    assert_eq!(
        opened.id.ino, mapper.inode,
        "the mapped inode, not the FIFO"
    );
    let analysis = crate::capture::targets::analyse_file(
        &opened.file,
        &path,
        false,
        &crate::capture::locate::DiskCache::none(),
    )
    .unwrap();
    assert_eq!(analysis.hooks().count(), 8, "the copy's OpenSSL hooks");

    // Without map_files (no CAP_SYS_ADMIN): the name is resolved, and the FIFO refused at once.
    let p = path.clone();
    let by_name = returns_within(Duration::from_secs(5), move || open_in_root(pid, &p));
    assert!(
        matches!(by_name, Err(OpenError::NotRegular { kind: "a FIFO", .. })),
        "{by_name:?}"
    );
    // A deleted mapping whose map_files entry cannot be opened is skipped, not opened by name.
    let p = path.clone();
    let fallback = returns_within(Duration::from_secs(5), move || {
        open_mapping(
            pid,
            &Mapping {
                range: "0-1",
                path: &p,
            },
        )
    });
    assert!(
        matches!(fallback, Err(OpenError::Deleted { .. })),
        "{fallback:?}"
    );
}

/// The same with a symlink to /dev/zero under the deleted name (reading it never ends): the
/// mapped file is what is opened, and no symlink is ever followed.
#[test]
fn a_symlink_under_a_deleted_librarys_name_is_never_followed() {
    let mapper = Mapper::start("symlink");
    let (range, path) =
        mapper.replace_with(|at| std::os::unix::fs::symlink("/dev/zero", at).unwrap());
    let pid = mapper.pid();
    let opened = open_mapping(
        pid,
        &Mapping {
            range: &range,
            path: &path,
        },
    )
    .unwrap();
    assert_eq!(opened.id.ino, mapper.inode);
    let by_name = open_in_root(pid, &path);
    assert!(
        matches!(&by_name, Err(OpenError::Io { source, .. }) if source.raw_os_error() == Some(libc::ELOOP)),
        "{by_name:?}"
    );
    // A live (not deleted) name that is a symlink, or leads through one, is refused too.
    let link = mapper.dir.join("libssl.so.3");
    std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
    assert!(open_in_root(pid, link.to_str().unwrap()).is_err());
    assert!(open_host(&link).is_err());
    // And a device is no regular file.
    assert!(matches!(
        open_host(Path::new("/dev/zero")),
        Err(OpenError::NotRegular {
            kind: "a character device",
            ..
        })
    ));
    // The process's own executable opens through the kernel's link.
    let exe = open_exe(pid).unwrap();
    let python = std::fs::metadata(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe.id.ino, python.ino());
}

#[test]
fn a_file_over_the_cap_is_refused_not_read() {
    let opened = open_host(Path::new(LIBSSL)).unwrap();
    let size = opened.file.metadata().unwrap().len();
    assert!(matches!(
        read_at_most(&opened.file, LIBSSL, size - 1, &[]),
        Err(OpenError::TooLarge { .. })
    ));
    assert_eq!(
        read_at_most(&opened.file, LIBSSL, size, &[]).unwrap().len() as u64,
        size
    );
}

/// Issue 17 item 4: a 200 MiB library truncated while it is analysed. Mapped, the analysis
/// died of SIGBUS (and the daemon with it); read, it ends with an error or with the analysis of
/// what was read first, whichever the race gives, and the test process lives on.
#[test]
fn a_library_truncated_during_analysis_ends_the_analysis_not_the_process() {
    let dir = std::env::temp_dir().join(format!("safe-open-truncate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("libbig-ssl.so");
    let mut outcomes = Vec::new();
    for delay_ms in [0, 5, 20, 60] {
        std::fs::copy(LIBSSL, &path).unwrap();
        // Sparse: 200 MiB that cost no disk.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(200 << 20)
            .unwrap();
        let opened = open_host(&path).unwrap();
        let truncating = {
            let path = path.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(delay_ms));
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(4096)
                    .unwrap();
            })
        };
        let result = crate::capture::targets::analyse_file(
            &opened.file,
            "libbig-ssl.so",
            true,
            &crate::capture::locate::DiskCache::none(),
        );
        truncating.join().unwrap();
        match result {
            Ok(a) => outcomes.push(format!("analysed, {} hooks", a.hooks().count())),
            Err(e) => {
                assert!(
                    e.gave_up() || matches!(e, crate::capture::targets::TargetError::Elf { .. }),
                    "{e}"
                );
                outcomes.push(e.to_string());
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    // Whatever the race gave, every analysis ended.
    assert_eq!(outcomes.len(), 4, "{outcomes:?}");
}

#[test]
fn analysis_reads_wait_for_room_in_the_byte_budget() {
    static BUDGET: ByteBudget = ByteBudget::new(100);
    let dir = std::env::temp_dir().join(format!("at-budget-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sixty");
    std::fs::write(&path, vec![7u8; 60]).unwrap();
    let file = File::open(&path).unwrap();
    let first = read_charged(&file, "sixty", &BUDGET, Parts::All).unwrap();
    assert_eq!((first.len(), BUDGET.held()), (60, 60));
    // A second 60-byte read does not fit beside the first: it waits until the first is dropped.
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let file = File::open(&path).unwrap();
        let second = read_charged(&file, "sixty", &BUDGET, Parts::All).unwrap();
        tx.send(second.len()).unwrap();
    });
    assert!(
        rx.recv_timeout(std::time::Duration::from_millis(300))
            .is_err(),
        "read past the budget"
    );
    drop(first);
    assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(10)), Ok(60));
    waiter.join().unwrap();
    assert_eq!(BUDGET.held(), 0, "every charge given back");
    // A file larger than the whole budget takes all of it, alone.
    assert_eq!(BUDGET.take(1_000), 100);
    BUDGET.give_back(100);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A needle is found wherever it lies, across the scan's window boundaries too, and a file's
/// absent strings are not.
#[test]
fn needles_are_found_across_the_scan_windows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("haystack");
    let mut bytes = vec![b'.'; 3 * SCAN_WINDOW_BYTES + 100];
    let straddling = b"across-the-boundary";
    let at = SCAN_WINDOW_BYTES - 7;
    bytes[at..at + straddling.len()].copy_from_slice(straddling);
    let last = b"at-the-very-end";
    let end = bytes.len() - last.len();
    bytes[end..].copy_from_slice(last);
    bytes[0..5].copy_from_slice(b"first");
    std::fs::write(&path, &bytes).unwrap();
    let file = File::open(&path).unwrap();
    let needles: [&[u8]; 4] = [straddling, last, b"first", b"nowhere-in-it"];
    assert_eq!(
        needles_in_file(&file, "haystack", &needles).unwrap(),
        [true, true, true, false]
    );
}
