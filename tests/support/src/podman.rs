//! podman, the daemonless container engine (Debian's package, installed by `cargo xtask setup`),
//! for the image test: builds the image from deploy/Dockerfile around a binary built on this
//! host, creates containers, reaches into a container's network namespace, and removes every
//! container and image it made.

use std::{
    collections::BTreeSet,
    fs::File,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{anyhow, bail, Context as _, Result};

/// `podman` with the runtime every call uses.
pub fn podman() -> Command {
    let mut cmd = Command::new("podman");
    // Debian 12's crun refuses hybrid cgroup layouts (v1 controllers and a v2 hierarchy holding
    // one, as on this machine); runc runs there and everywhere else.
    cmd.arg("--runtime=runc");
    cmd
}

/// Runs `podman ARGS`; its stdout, or an error with everything it printed.
pub fn run(args: &[&str]) -> Result<String> {
    let mut cmd = podman();
    cmd.args(args);
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `--ulimit` options that leave the container this process' open-files and processes limits.
/// Kubernetes' runtimes do not set limits (a container keeps the runtime's), while podman raises
/// both to fixed maxima by default, which a root without CAP_SYS_RESOURCE (this machine's) cannot
/// grant: the container would not start.
pub fn inherited_ulimits() -> Result<Vec<String>> {
    let limit = |resource| -> Result<(u64, u64)> {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // Safety: `limit` is a valid rlimit for the call to fill.
        if unsafe { libc::getrlimit(resource, &mut limit) } != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        Ok((limit.rlim_cur, limit.rlim_max))
    };
    let (files, files_max) = limit(libc::RLIMIT_NOFILE)?;
    // podman 4.3 sets its own RLIMIT_NPROC to 32768 when it starts (seen with strace), so its
    // runtime can give no more.
    const PODMAN_NPROC: u64 = 32768;
    let (procs, procs_max) = limit(libc::RLIMIT_NPROC)?;
    Ok(vec![
        format!("--ulimit=nofile={files}:{files_max}"),
        format!(
            "--ulimit=nproc={}:{}",
            procs.min(PODMAN_NPROC),
            procs_max.min(PODMAN_NPROC)
        ),
    ])
}

fn image_ids() -> Result<BTreeSet<String>> {
    Ok(run(&["images", "--all", "--quiet", "--no-trunc"])?
        .lines()
        .map(str::to_string)
        .collect())
}

/// An image this test built: removed, with the intermediate images its build left, when dropped.
pub struct Image {
    pub tag: String,
    /// The build's other new images (the `prebuilt` stage's), which `--layers=false` would not
    /// leave but which podman 4.3 then fails to clean up itself.
    intermediates: Vec<String>,
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = run(&["rmi", "--force", &self.tag]);
        for id in &self.intermediates {
            let _ = run(&["rmi", "--force", id]);
        }
    }
}

/// Builds `tag` from deploy/Dockerfile's `prebuilt` way: deploy/image-rootfs.sh lays `binary`
/// and the libraries it links out in a build context under `work`, which is removed afterwards.
pub fn build_image(repo: &Path, binary: &Path, tag: &str, work: &Path) -> Result<Image> {
    let context = work.join("image-context");
    let _ = std::fs::remove_dir_all(&context);
    std::fs::create_dir_all(&context)?;
    let rootfs = repo.join("deploy/image-rootfs.sh");
    let out = Command::new(&rootfs)
        .arg(binary)
        .arg(context.join("rootfs"))
        .output()
        .with_context(|| format!("running {}", rootfs.display()))?;
    if !out.status.success() {
        bail!(
            "{}: {}\n{}",
            rootfs.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let before = image_ids()?;
    let dockerfile = repo.join("deploy/Dockerfile");
    let built = run(&[
        "build",
        "--quiet",
        "--file",
        dockerfile.to_str().context("path")?,
        "--build-arg",
        "ROOTFS=prebuilt",
        "--tag",
        tag,
        context.to_str().context("path")?,
    ]);
    let new: Vec<String> = image_ids()?.difference(&before).cloned().collect();
    std::fs::remove_dir_all(&context)?;
    let id = match built {
        Ok(stdout) => stdout.trim().to_string(),
        Err(e) => {
            for id in &new {
                let _ = run(&["rmi", "--force", id]);
            }
            return Err(e);
        }
    };
    Ok(Image {
        tag: tag.to_string(),
        intermediates: new.into_iter().filter(|i| *i != id).collect(),
    })
}

/// A container this test created: removed (killed first if running) when dropped.
pub struct Container {
    pub name: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = run(&["rm", "--force", "--time", "0", &self.name]);
    }
}

impl Container {
    /// `podman create --name NAME OPTIONS IMAGE ARGS`.
    pub fn create(name: &str, options: &[String], image: &str, args: &[String]) -> Result<Self> {
        let _ = run(&["rm", "--force", "--time", "0", name]);
        let mut all = vec!["create", "--name", name];
        all.extend(options.iter().map(String::as_str));
        all.push(image);
        all.extend(args.iter().map(String::as_str));
        run(&all)?;
        Ok(Container {
            name: name.to_string(),
        })
    }

    /// Sets the container up without starting its process (`podman init`): its namespaces exist
    /// from here on. Returns the network namespace's path.
    pub fn init(&self) -> Result<PathBuf> {
        run(&["init", &self.name])?;
        let pid: u32 = run(&["inspect", "--format", "{{.State.Pid}}", &self.name])?
            .trim()
            .parse()
            .context("the container's pid")?;
        Ok(PathBuf::from(format!("/proc/{pid}/ns/net")))
    }
}

/// Runs `f` on a thread that has joined the network namespace `netns`; sockets it makes belong
/// to that namespace for good, so a listener bound there serves the container's loopback.
pub fn in_netns<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns = File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
    std::thread::spawn(move || {
        // Safety: a valid namespace fd; setns changes only this thread's namespace.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| anyhow!("the thread in the container's network namespace panicked"))?
}
