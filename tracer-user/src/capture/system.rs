//! Host preparation the kernel programs need before anything is loaded.

use std::path::Path;

use anyhow::{Context as _, Result};
use tracing::debug;

/// Mounts tracefs when missing and lifts RLIMIT_MEMLOCK (kernels before 5.11 charge BPF maps to
/// it). Idempotent. bpffs is not needed: the tracer pins nothing, its programs and maps live as
/// long as its file descriptors, so a crash leaves nothing behind in the kernel.
pub fn prepare_host() -> Result<()> {
    mount_if_missing("tracefs", "/sys/kernel/tracing", "tracefs")?;
    raise_memlock_limit();
    Ok(())
}

/// Kernels since 5.11 charge BPF memory to the cgroup and ignore this limit, so failing to raise
/// it (no CAP_SYS_RESOURCE) only matters on older kernels: try infinity, else the hard limit.
fn raise_memlock_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // Safety: plain syscalls with valid pointers.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) == 0 {
            return;
        }
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit);
        }
    }
    debug!("RLIMIT_MEMLOCK kept at {} bytes", limit.rlim_cur);
}

fn mount_if_missing(source: &str, target: &str, fstype: &str) -> Result<()> {
    let mounts =
        std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(target))
    {
        return Ok(());
    }
    if !Path::new(target).exists() {
        std::fs::create_dir_all(target).with_context(|| format!("creating {target}"))?;
    }
    let c = |s: &str| std::ffi::CString::new(s).expect("static mount argument has no NUL");
    let (src, tgt, fs) = (c(source), c(target), c(fstype));
    // Safety: valid NUL-terminated strings, null data.
    let rc = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("mounting {fstype} on {target}"));
    }
    debug!("mounted {fstype} on {target}");
    Ok(())
}
