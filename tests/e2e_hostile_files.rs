//! Issue 17 item 3, end to end: files that traced processes name are opened by the tracer as
//! root, so a process can try to block or fool it. Here processes map a copy of libssl, unlink
//! it and put a FIFO (whose open blocks until a writer comes) or a symlink to /dev/zero (whose
//! read never ends) at the ` (deleted)` name `/proc/PID/maps` shows. The tracer must start, hook
//! the mapped copies themselves (through `/proc/PID/map_files`), and still hook what execs later.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result};
use tracer_testkit::{
    e2e::{
        self, of_pid, require_root, start_traced, wait_for_log, wait_until_hooked, HeldClient,
        SERIAL,
    },
    mock_openai,
};

const WAIT: Duration = Duration::from_secs(30);
const LIBSSL: &str = "/lib/x86_64-linux-gnu/libssl.so.3";

fn tracer_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_agent-tracer"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = tracer_testkit::target_dir()
        .join("hostile-files")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the scratch directory");
    // As the kernel names it in /proc/PID/maps, and so the tracer in its log.
    std::fs::canonicalize(&dir).expect("the scratch directory")
}

/// A process mapping its own copy of libssl at `dir/libssl.so.3`, which it then unlinks and
/// replaces with what `plant` puts at the ` (deleted)` name. Killed when dropped.
struct Mapper(Child);

impl Mapper {
    fn start(dir: &Path, plant: &str) -> Result<Mapper> {
        let library = dir.join("libssl.so.3");
        std::fs::copy(LIBSSL, &library)?;
        let script = "import mmap, os, sys\n\
                      lib, plant = sys.argv[1], sys.argv[2]\n\
                      f = open(lib, 'rb')\n\
                      m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\n\
                      f.close()\n\
                      os.unlink(lib)\n\
                      name = lib + ' (deleted)'\n\
                      os.mkfifo(name) if plant == 'fifo' else os.symlink('/dev/zero', name)\n\
                      print('planted', flush=True)\n\
                      sys.stdin.read()\n";
        let mut child = Command::new("python3")
            .args(["-c", script])
            .arg(&library)
            .arg(plant)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("python3")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        anyhow::ensure!(line.trim() == "planted", "the mapper said {line:?}");
        Ok(Mapper(child))
    }
}

impl Drop for Mapper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_fifos_and_symlinks_neither_block_nor_fool_the_attacher() -> Result<()> {
    require_root();
    let _serial = SERIAL.lock().await;
    let server = mock_openai::start(&e2e::certs_dir()).await?;

    // Before the tracer: its start-up scan meets them on its own thread, in line.
    let fifo_dir = scratch("fifo");
    let symlink_dir = scratch("symlink");
    let _fifo = Mapper::start(&fifo_dir, "fifo")?;
    let _symlink = Mapper::start(&symlink_dir, "symlink")?;

    let name = "hostile_files";
    let traced = start_traced(tracer_bin(), name, &[]).await?;
    // The mapped copies themselves were analysed and hooked, under their own names.
    for dir in [&fifo_dir, &symlink_dir] {
        wait_until_hooked(name, &dir.join("libssl.so.3"), WAIT).await?;
    }

    // After start: an exec met by the running attacher (its rescans see the plant).
    let late_dir = scratch("late");
    let _late = Mapper::start(&late_dir, "fifo")?;
    wait_until_hooked(name, &late_dir.join("libssl.so.3"), WAIT).await?;

    // A later program on a fresh copy of libssl (a file never hooked before) is hooked and
    // captured: the attacher is alive.
    let fresh_dir = scratch("fresh");
    std::fs::copy(LIBSSL, fresh_dir.join("libssl.so.3"))?;
    let client = "import http.client, json, os, ssl, sys\n\
                  ctx = ssl.create_default_context(cafile=os.environ['SSL_CERT_FILE'])\n\
                  sys.stdin.readline()\n\
                  c = http.client.HTTPSConnection('127.0.0.1', int(sys.argv[1]), context=ctx)\n\
                  body = json.dumps({'model': 'gpt-4o-mini', 'messages': [{'role': 'user', 'content': 'hi'}]})\n\
                  c.request('POST', '/v1/chat/completions', body, {'content-type': 'application/json'})\n\
                  r = c.getresponse()\n\
                  print(json.dumps({'pid': os.getpid(), 'status': r.status}))\n";
    let mut command = Command::new("python3");
    command
        .args(["-c", client])
        .arg(server.addr.port().to_string())
        .env("LD_LIBRARY_PATH", &fresh_dir)
        .env("SSL_CERT_FILE", &server.cert_path);
    let held = HeldClient::spawn(command)?;
    wait_until_hooked(name, &fresh_dir.join("libssl.so.3"), WAIT).await?;
    let (pid, line) = held.release_line().await?;
    assert_eq!(line["status"], 200, "{line}");
    traced
        .receiver
        .wait_for("the fresh copy's call", WAIT, |s| {
            !of_pid(s, pid).is_empty()
        })
        .await?;
    wait_for_log(name, &["attached", "libssl.so.3"], WAIT).await?;
    let stopped = traced.tracer.stop()?;
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(
        !stopped.stderr.contains("(deleted)"),
        "no file was named by its planted ` (deleted)` path:\n{}",
        stopped.stderr
    );
    Ok(())
}
