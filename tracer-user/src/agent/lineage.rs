//! Process lineage and the programs processes run: who spawned whom (fork events, /proc for
//! processes older than the tracer), the arguments of each exec, and exec → exit as one record.
//! The agent stage decides from it which tool a process's work belongs to.

use std::collections::{HashMap, VecDeque};

/// Bounds the fork map: processes whose exit was missed (a full ring buffer) stay in it.
const MAX_FORKS: usize = 65_536;
/// How far up the tree ownership is looked for.
const MAX_DEPTH: usize = 32;

/// A program a process ran, from its exec to its exit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecRecord {
    pub pid: u32,
    pub parent: Option<u32>,
    pub filename: String,
    pub args: Vec<String>,
    pub start_ns: u64,
}

#[derive(Default)]
pub struct Lineage {
    parents: HashMap<u32, u32>,
    fork_order: VecDeque<u32>,
    /// Arguments of the latest execve per process, waiting for its exec.
    pending_args: HashMap<u32, Vec<String>>,
    /// Programs running now, by pid.
    running: HashMap<u32, ExecRecord>,
    /// Read from /proc for processes whose fork was not seen; `None`: gone or unreadable.
    from_proc: HashMap<u32, Option<u32>>,
    /// Each process's executable, read from /proc once per exec rather than once per model
    /// call (the readlink was an eighth of the tracer's CPU in the HTTPS benchmark).
    executables: HashMap<u32, String>,
    /// Command lines read from /proc, for processes whose exec was not seen: likewise once.
    args_from_proc: HashMap<u32, Vec<String>>,
}

impl Lineage {
    pub fn fork(&mut self, parent: u32, child: u32) {
        if parent == child {
            return;
        }
        if self.parents.insert(child, parent).is_none() {
            self.fork_order.push_back(child);
        }
        while self.fork_order.len() > MAX_FORKS {
            if let Some(old) = self.fork_order.pop_front() {
                self.parents.remove(&old);
            }
        }
    }

    pub fn exec_args(&mut self, pid: u32, args: Vec<String>) {
        self.pending_args.insert(pid, args);
    }

    /// A process now runs `filename`; returns the record the exec starts.
    pub fn exec(&mut self, pid: u32, filename: &str, start_ns: u64) -> ExecRecord {
        let args = self
            .pending_args
            .remove(&pid)
            .unwrap_or_else(|| vec![filename.to_string()]);
        let record = ExecRecord {
            pid,
            parent: self.parent_of(pid),
            filename: filename.to_string(),
            args,
            start_ns,
        };
        self.running.insert(pid, record.clone());
        self.executables.remove(&pid);
        self.args_from_proc.remove(&pid);
        record
    }

    /// The process ended: the program it ran, if its exec was seen.
    pub fn exit(&mut self, pid: u32) -> Option<ExecRecord> {
        self.pending_args.remove(&pid);
        self.from_proc.remove(&pid);
        self.executables.remove(&pid);
        self.args_from_proc.remove(&pid);
        self.running.remove(&pid)
    }

    /// The arguments of the program `pid` runs: its exec's, else /proc's, read once.
    pub fn args(&mut self, pid: u32) -> Vec<String> {
        if let Some(record) = self.running.get(&pid) {
            return record.args.clone();
        }
        read_once(&mut self.args_from_proc, pid, |pid| {
            Some(crate::processes::procfs::args(pid)).filter(|args| !args.is_empty())
        })
        .unwrap_or_default()
    }

    /// The executable `pid` runs (/proc/PID/exe), read once until it execs or exits.
    pub fn executable(&mut self, pid: u32) -> Option<String> {
        read_once(
            &mut self.executables,
            pid,
            crate::processes::procfs::executable,
        )
    }

    pub fn running(&self, pid: u32) -> Option<&ExecRecord> {
        self.running.get(&pid)
    }

    pub fn parent_of(&mut self, pid: u32) -> Option<u32> {
        if let Some(p) = self.parents.get(&pid) {
            return Some(*p);
        }
        *self
            .from_proc
            .entry(pid)
            .or_insert_with(|| parent_from_proc(pid))
    }

    /// `pid` and its ancestors, nearest first.
    pub fn lineage(&mut self, pid: u32) -> Vec<u32> {
        let mut chain = vec![pid];
        let mut current = pid;
        while chain.len() < MAX_DEPTH {
            match self.parent_of(current) {
                Some(p) if p > 1 && !chain.contains(&p) => {
                    chain.push(p);
                    current = p;
                }
                _ => break,
            }
        }
        chain
    }
}

/// `pid`'s entry in `cache`, read with `read` until a read finds it (a process gone, or caught
/// mid-exec with an empty command line, is not remembered that way). Exits lost to a full ring
/// buffer would leave entries behind: past the fork map's bound the cache starts afresh.
fn read_once<T: Clone>(
    cache: &mut HashMap<u32, T>,
    pid: u32,
    read: fn(u32) -> Option<T>,
) -> Option<T> {
    if let Some(known) = cache.get(&pid) {
        return Some(known.clone());
    }
    if cache.len() >= MAX_FORKS {
        cache.clear();
    }
    let found = read(pid)?;
    cache.insert(pid, found.clone());
    Some(found)
}

/// The parent the process catalogue's /proc reader finds.
fn parent_from_proc(pid: u32) -> Option<u32> {
    crate::processes::procfs::parent_pid(pid)
}

/// The agent's name as a user knows it: the script an interpreter runs (`python agent.py` →
/// `agent`, `python -m my_agent` → `my_agent`), else the executable (`codex`). A script named
/// for its role rather than its program (`cli.js`, `index.js`, `main.py`) gives way to the
/// package or project it belongs to (`node .../@anthropic-ai/claude-code/cli.js` →
/// `claude-code`, `.../@google/gemini-cli/dist/index.js` → `gemini-cli`); the command a user
/// typed, a bin directory's link (`node /usr/local/bin/claude`), is kept as it is.
pub fn agent_name(args: &[String], executable: &str) -> String {
    let exe = file_stem(args.first().map(String::as_str).unwrap_or(executable));
    let interpreted = ["python", "node", "bun", "deno", "ruby", "perl", "java"]
        .iter()
        .any(|i| exe.starts_with(i));
    if interpreted {
        let mut rest = args.iter().skip(1);
        while let Some(arg) = rest.next() {
            match arg.as_str() {
                "-m" => return rest.next().map(|m| module_name(m)).unwrap_or(exe),
                "-c" | "-e" | "--eval" => return exe,
                "run" if exe == "deno" || exe == "bun" => continue,
                // Interpreter flags whose value is the next argument, not the script.
                "-r"
                | "--require"
                | "--import"
                | "--loader"
                | "--experimental-loader"
                | "-W"
                | "-X"
                | "-C"
                | "--conditions"
                | "--title" => {
                    rest.next();
                }
                a if a.starts_with('-') => continue,
                script => return script_name(script),
            }
        }
    }
    if exe.is_empty() {
        file_stem(executable)
    } else {
        exe
    }
}

/// A file's name without its directory and extensions.
fn file_stem(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split('.').next().unwrap_or(file).to_string()
}

/// Entry scripts named for their role, not their program.
fn is_generic(name: &str) -> bool {
    matches!(
        name,
        "cli" | "index" | "main" | "__main__" | "run" | "app" | "start" | "entry" | "bin"
    )
}

/// The script's name, or when that is generic, its package's or project's: the nearest
/// directory above it that is not part of a package's layout (`dist`, `lib`, `src`...).
fn script_name(script: &str) -> String {
    let name = file_stem(script);
    if !is_generic(&name) {
        return name;
    }
    let layout = [
        "dist", "build", "lib", "src", "bin", "out", "esm", "cjs", "bundle", ".bin",
    ];
    for dir in script.rsplit('/').skip(1) {
        match dir {
            "" | "." | ".." | "node_modules" | "site-packages" | "dist-packages" => break,
            d if d.starts_with('@') => break,
            d if layout.contains(&d) => continue,
            d => return d.to_string(),
        }
    }
    name
}

/// `python -m aider.main` → `aider`: a module's generic last part gives way to its package.
fn module_name(module: &str) -> String {
    let mut parts = module.rsplit('.');
    let last = parts.next().unwrap_or(module);
    if is_generic(last) {
        if let Some(package) = parts.next() {
            return package.to_string();
        }
    }
    module.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    /// Read once per exec: still known after the process is gone (its spans may come later),
    /// read afresh after an exit or exec.
    #[test]
    fn a_program_is_read_once_until_exit_or_exec() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut lineage = Lineage::default();
        // Its command line reads empty until the exec has set it up.
        let started = std::time::Instant::now();
        while crate::processes::procfs::args(pid).is_empty() {
            assert!(started.elapsed().as_secs() < 10, "sleep never started");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let exe = lineage.executable(pid).expect("a running child");
        assert!(exe.ends_with("/sleep"), "{exe}");
        assert_eq!(lineage.args(pid), ["sleep", "30"]);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(lineage.executable(pid), Some(exe), "cached");
        assert_eq!(lineage.args(pid), ["sleep", "30"], "cached");
        lineage.exit(pid);
        assert_eq!(lineage.executable(pid), None, "read again: gone");
        assert!(
            !lineage.executables.contains_key(&pid),
            "a failed read is not kept"
        );
        lineage.exec(pid, "/usr/bin/true", 1);
        assert!(!lineage.executables.contains_key(&pid), "forgotten at exec");
        assert_eq!(lineage.args(pid), ["/usr/bin/true"], "the exec's arguments");
    }

    #[test]
    fn lineage_follows_forks_nearest_first() {
        let mut l = Lineage::default();
        // Pids far above any real one, so /proc is not consulted for the top.
        l.fork(4_000_001, 4_000_002);
        l.fork(4_000_002, 4_000_003);
        assert_eq!(l.lineage(4_000_003), [4_000_003, 4_000_002, 4_000_001]);
        l.exec_args(4_000_003, args(&["sh", "-c", "ls"]));
        let r = l.exec(4_000_003, "/bin/sh", 10);
        assert_eq!(r.args, args(&["sh", "-c", "ls"]));
        assert_eq!(r.parent, Some(4_000_002));
        assert_eq!(l.exit(4_000_003), Some(r));
        assert_eq!(l.exit(4_000_003), None);
        // An exec whose arguments were not seen still has its file name.
        assert_eq!(l.exec(4_000_004, "/bin/true", 1).args, args(&["/bin/true"]));
    }

    #[test]
    fn fork_map_is_bounded() {
        let mut l = Lineage::default();
        for child in 0..(MAX_FORKS as u32 + 10) {
            l.fork(5_000_000, 5_000_001 + child);
        }
        assert_eq!(l.parents.len(), MAX_FORKS);
    }

    #[test]
    fn proc_fallback_reads_ppid() {
        assert_eq!(
            crate::processes::parent_pid("Name:\tx\nPPid:\t42\n"),
            Some(42)
        );
        assert_eq!(crate::processes::parent_pid("PPid:\t0\n"), None);
        let mut l = Lineage::default();
        let me = std::process::id();
        assert!(l.lineage(me).len() >= 2, "the test runner has a parent");
    }

    /// Agent CLIs as npm, npx, pnpm and pip install them, and as their users type them.
    #[test]
    fn agents_with_generic_entry_scripts_are_named_for_their_package() {
        let name = |a: &[&str]| agent_name(&args(a), "/usr/bin/node");
        assert_eq!(
            name(&[
                "node",
                "/usr/local/lib/node_modules/@anthropic-ai/claude-code/cli.js",
                "-p",
                "fix the failing test"
            ]),
            "claude-code"
        );
        assert_eq!(
            name(&[
                "node",
                "--max-old-space-size=8192",
                "/usr/local/lib/node_modules/@google/gemini-cli/dist/index.js",
                "--yolo"
            ]),
            "gemini-cli"
        );
        assert_eq!(
            name(&[
                "node",
                "/root/.npm/_npx/6f8a93c1d2b4e5f7/node_modules/@google/gemini-cli/dist/index.js"
            ]),
            "gemini-cli"
        );
        assert_eq!(
            name(&[
                "node",
                "/home/me/.local/share/pnpm/global/5/.pnpm/@anthropic-ai+claude-code@1.0.98/\
                 node_modules/@anthropic-ai/claude-code/cli.js"
            ]),
            "claude-code"
        );
        assert_eq!(
            name(&[
                "node",
                "--require",
                "/opt/otel/register.js",
                "/home/me/code/research-bot/dist/index.js"
            ]),
            "research-bot"
        );
        // The command the user typed: the bin directory's link to cli.js.
        assert_eq!(
            name(&["node", "/usr/local/bin/claude", "-p", "hi"]),
            "claude"
        );
        assert_eq!(
            agent_name(
                &args(&[
                    "/usr/bin/python3",
                    "/srv/venv/lib/python3.12/site-packages/aider/main.py"
                ]),
                "/usr/bin/python3.12"
            ),
            "aider"
        );
        assert_eq!(
            agent_name(&args(&["python3", "-m", "aider.main"]), "python3"),
            "aider"
        );
        assert_eq!(
            agent_name(
                &args(&["/srv/venv/bin/python", "/srv/venv/bin/aider"]),
                "python3"
            ),
            "aider"
        );
    }

    #[test]
    fn agent_names() {
        assert_eq!(
            agent_name(&args(&["python3", "-u", "/x/agent.py"]), "python3"),
            "agent"
        );
        assert_eq!(
            agent_name(&args(&["python3", "-m", "my_agent"]), "python3"),
            "my_agent"
        );
        // Nothing better known than the script's own name.
        assert_eq!(agent_name(&args(&["node", "cli.js", "--x"]), "node"), "cli");
        assert_eq!(
            agent_name(&args(&["/usr/bin/codex", "exec"]), "codex"),
            "codex"
        );
        assert_eq!(agent_name(&[], "/opt/claude"), "claude");
        assert_eq!(
            agent_name(&args(&["python3", "-c", "x"]), "python3"),
            "python3"
        );
    }
}
