//! Loading the kernel programs and attaching them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{uprobe::UProbeScope, TracePoint, UProbe},
    Ebpf, EbpfLoader,
};
use tracer_common::counter;
use tracing::{debug, info, warn};

use super::libssl::find_libssl;
use crate::health::Health;

/// The compiled kernel programs, embedded at build time by build.rs.
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf"));

/// (program, symbol) pairs attached on every OpenSSL library.
const OPENSSL_HOOKS: &[(&str, &str)] = &[
    ("ssl_write", "SSL_write"),
    ("ssl_write_ret", "SSL_write"),
    ("ssl_write_ex", "SSL_write_ex"),
    ("ssl_write_ret", "SSL_write_ex"),
    ("ssl_read", "SSL_read"),
    ("ssl_read_ret", "SSL_read"),
    ("ssl_read_ex", "SSL_read_ex"),
    ("ssl_read_ret", "SSL_read_ex"),
];

/// Loaded and attached programs. Dropping it detaches everything.
pub struct Capture {
    ebpf: Ebpf,
    /// Libraries with at least one hook attached.
    pub libraries: Vec<PathBuf>,
}

impl Capture {
    pub fn load(ring_buffer_bytes: u32) -> Result<Self> {
        let ring_buffer_bytes = ring_buffer_bytes.next_power_of_two().max(4096);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("EVENTS", ring_buffer_bytes)
            .load(PROGRAMS)
            .context("loading the eBPF programs into the kernel")?;

        for name in [
            "ssl_write",
            "ssl_write_ex",
            "ssl_read",
            "ssl_read_ex",
            "ssl_write_ret",
            "ssl_read_ret",
        ] {
            uprobe(&mut ebpf, name)?
                .load()
                .with_context(|| format!("verifying program {name}"))?;
        }
        let exit: &mut TracePoint = ebpf
            .program_mut("sched_process_exit")
            .context("program sched_process_exit missing")?
            .try_into()?;
        exit.load()
            .context("verifying program sched_process_exit")?;
        exit.attach("sched", "sched_process_exit")
            .context("attaching sched:sched_process_exit")?;

        let mut libraries = Vec::new();
        for lib in find_libssl() {
            match attach_openssl(&mut ebpf, &lib) {
                Ok(0) => debug!("no OpenSSL symbols in {}", lib.display()),
                Ok(n) => {
                    info!("attached {n} TLS hooks to {}", lib.display());
                    libraries.push(lib);
                }
                Err(e) => warn!("could not attach to {}: {e:#}", lib.display()),
            }
        }
        if libraries.is_empty() {
            bail!("no OpenSSL library (libssl.so.*) found to attach to");
        }
        Ok(Capture { ebpf, libraries })
    }

    /// The ring buffer, handed to the reader once.
    pub fn take_ring_buffer(&mut self) -> Result<RingBuf<MapData>> {
        let map = self.ebpf.take_map("EVENTS").context("map EVENTS missing")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Copies the kernel's per-CPU counters into `health`.
    pub fn read_kernel_counters(&self, health: &Health) -> Result<()> {
        let map = self.ebpf.map("COUNTERS").context("map COUNTERS missing")?;
        let counters: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        let read = |index: u32| -> u64 {
            counters
                .get(&index, 0)
                .map(|per_cpu| per_cpu.iter().sum())
                .unwrap_or(0)
        };
        use std::sync::atomic::Ordering::Relaxed;
        health
            .kernel_ringbuf_full_records
            .store(read(counter::RINGBUF_FULL_RECORDS), Relaxed);
        health
            .kernel_ringbuf_full_bytes
            .store(read(counter::RINGBUF_FULL_BYTES), Relaxed);
        health
            .kernel_read_failed_bytes
            .store(read(counter::READ_FAILED_BYTES), Relaxed);
        health
            .kernel_truncated_bytes
            .store(read(counter::TRUNCATED_BYTES), Relaxed);
        health
            .kernel_missing_entry
            .store(read(counter::MISSING_ENTRY), Relaxed);
        health.kernel_tls_calls.store(read(counter::CALLS), Relaxed);
        Ok(())
    }
}

fn uprobe<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut UProbe> {
    let program = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing"))?;
    Ok(program.try_into()?)
}

/// Attaches every hook whose symbol the library exports; returns how many were attached.
fn attach_openssl(ebpf: &mut Ebpf, lib: &Path) -> Result<usize> {
    let mut attached = 0;
    for (program, symbol) in OPENSSL_HOOKS {
        match uprobe(ebpf, program)?.attach(*symbol, lib, UProbeScope::AllProcesses) {
            Ok(_) => attached += 1,
            // Older OpenSSL lacks the _ex functions; that is not an error.
            Err(e) => debug!("{program} on {symbol} in {}: {e}", lib.display()),
        }
    }
    Ok(attached)
}
