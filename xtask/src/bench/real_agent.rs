//! "Real agent: Claude Code's tool loop end to end": the overhead a user of a real agent sees.
//! Claude Code, the pinned native build (one Bun executable with BoringSSL linked in, hooked by
//! the tracer when it is executed), runs one complete task against the mock model server, the
//! same way `tests/e2e_real_agents.rs` drives it: the model asks its Bash tool to run
//! `expr 6 + 36`, the agent runs it, and the model's final text quotes the output. Runs without
//! and with a fresh tracer alternate, and the difference of the mean task times comes with
//! Welch's 95 % confidence interval ([`stats`](super::stats)).

use std::{
    fs::{self, File},
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};

use super::{
    cpu_seconds,
    harness::tail,
    list, load_note, machine, median, scaled,
    stats::{mean, sample_sd, Welch},
    today, Env, Guarded, MockServer, OtherLoad, Others, Tracer,
};
use crate::util::header;

pub(super) const SECTION: &str = "## Real agent: Claude Code's tool loop end to end";

/// Measured runs each way (before `--scale-down`; never fewer than two, which a sample
/// variance needs).
const RUNS: u32 = 20;
/// The overhead the project aims to stay under, and the goal beyond it, in percent.
const TARGET_PCT: f64 = 1.0;
const GOAL_PCT: f64 = 0.5;
/// A traced run's wait for the tracer to hook `claude` after its exec. Generous: the first run
/// of a new tracer cache analyses the 400 MB executable before hooking it (the warm-up run
/// pays that; later runs find the analysis in the on-disk cache).
const HOOK_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the pre-attach start-up scan may take before a traced run starts the agent.
const SCAN_TIMEOUT: Duration = Duration::from_secs(120);
/// Every run, with or without the tracer, writes the prompt no earlier than this after the
/// agent was started, so that its own start-up (a 400 MB executable loading, its config being
/// written) is over on both sides and the clock starts at the same point of its life. A traced
/// run also waits for the hooks, which normally takes tens of milliseconds.
const SETTLE: Duration = Duration::from_secs(2);
/// One task normally takes a few seconds.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// The prompt, as one stream-json user message (what the Agent SDK writes).
const PROMPT: &str = "{\"type\":\"user\",\"message\":{\"role\":\"user\",\"content\":\
    \"Run `expr 6 + 36` and tell me what it printed.\"}}\n";
/// What the mock's final answer reads once the command really ran: `The command printed: `
/// (tests/support/src/mock_agents.rs) followed by the command's output.
const FINAL_ANSWER: &str = "The command printed: 42";
/// A fake key: the mock accepts any, and nothing real must reach the agent.
const FAKE_KEY: &str = "sk-ant-api03-agent-tracer-bench-not-a-key";
/// A traced run must show at least the loop's two streamed calls (Claude Code may make side
/// calls too).
const MIN_LLM_CALLS: u64 = 2;

/// The installed Claude Code.
struct Claude {
    /// The file with every symbolic link resolved: what the kernel names at the exec.
    executable: PathBuf,
    /// The path as installed, which a pre-attach scan may name instead.
    installed: PathBuf,
    version: String,
}

/// One task run.
struct Run {
    /// From the prompt written to the agent's exit.
    seconds: f64,
    /// The agent's user + system CPU, its tools' included (they are its waited-for children).
    agent_cpu_s: f64,
    /// CPUs other processes on the host kept busy during the run ([`OtherLoad`]).
    other_cpus: f64,
}

/// One traced run: the task, and what the tracer said about it.
struct Traced {
    run: Run,
    /// From the agent's start to the tracer's `attached` line.
    hooked_after_s: f64,
    final_line: String,
    llm_calls: u64,
}

/// The pinned Claude Code, installed by `cargo xtask setup`.
fn find_claude() -> Result<Claude> {
    let line = crate::setup::REAL_AGENTS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .find(|l| l.split_whitespace().next() == Some("claude-code"))
        .context("no claude-code line in tests/support/real-agents.txt")?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [_, package, version, executable] = fields[..] else {
        bail!("real-agents.txt: expected `name package version executable`, got {line:?}");
    };
    let path = crate::setup::real_agents_dir()?
        .join(format!("{package}@{version}"))
        .join("node_modules")
        .join(executable);
    ensure!(
        path.is_file(),
        "Claude Code {version} is not installed at {}: run `cargo xtask setup` (it installs the \
         pinned real agents)",
        path.display()
    );
    let executable = fs::canonicalize(&path).with_context(|| format!("{}", path.display()))?;
    Ok(Claude {
        executable,
        installed: path,
        version: version.to_string(),
    })
}

pub(super) fn measure(env: &Env, server: &MockServer) -> Result<String> {
    let claude = find_claude()?;
    let runs = scaled(RUNS).max(2);
    println!(
        "Claude Code {} at {}; {runs} runs each way",
        claude.version,
        claude.executable.display()
    );
    let mut others = Others::default();

    // Not counted: the first runs page the executable in, fill the tracer's analysis cache and
    // the agent's own first-start work, whichever comes first.
    header("real agent: warm-up run without the tracer");
    let run = run_untraced(env, &claude, server, "warmup-off")?;
    println!("{:.3} s", run.seconds);
    header("real agent: warm-up run with the tracer");
    let traced = run_traced(env, &claude, server, "warmup-on", &mut others)?;
    println!("{:.3} s\n{}", traced.run.seconds, traced.final_line);

    let mut off = Vec::new();
    let mut on = Vec::new();
    for i in 1..=runs {
        header(&format!("real agent: run {i}/{runs} without the tracer"));
        env.before_run(&mut others)?;
        let run = run_untraced(env, &claude, server, &format!("{i}-off"))?;
        others.check(&[]);
        println!("{:.3} s", run.seconds);
        off.push(run);

        header(&format!("real agent: run {i}/{runs} with the tracer"));
        env.before_run(&mut others)?;
        let traced = run_traced(env, &claude, server, &format!("{i}-on"), &mut others)?;
        println!(
            "{:.3} s (hooked {:.3} s after the start)\n{}",
            traced.run.seconds, traced.hooked_after_s, traced.final_line
        );
        on.push(traced);
    }
    Ok(render(&claude, &off, &on, &others))
}

fn run_untraced(env: &Env, claude: &Claude, server: &MockServer, label: &str) -> Result<Run> {
    run_task(env, claude, server, label, None).map(|(run, _)| run)
}

/// A fresh tracer, the task under it, and the tracer's own account of it.
fn run_traced(
    env: &Env,
    claude: &Claude,
    server: &MockServer,
    label: &str,
    others: &mut Others,
) -> Result<Traced> {
    let mut tracer = env.start_tracer(&format!("real-agent-{label}"))?;
    wait_for_scan(&mut tracer)?;
    let (run, hooked_after) = run_task(env, claude, server, label, Some(&mut tracer))?;
    others.check(&[tracer.pid]);
    let stderr = tracer.stderr_path.clone();
    let stopped = tracer.stop()?;
    let llm_calls = stopped.counters.get("llm_calls");
    ensure!(
        llm_calls >= MIN_LLM_CALLS,
        "the tracer counted {llm_calls} LLM calls in run {label} (at least {MIN_LLM_CALLS}, the \
         tool loop's two, were expected), so the agent was not traced: {} (log: {})",
        stopped.final_line,
        stderr.display()
    );
    Ok(Traced {
        run,
        hooked_after_s: hooked_after.map_or(f64::NAN, |d| d.as_secs_f64()),
        final_line: stopped.final_line,
        llm_calls,
    })
}

/// Waits for pre-attach's start-up scan to end, so that its analyses (on their own threads)
/// do not compete with the measured task: a tracer normally runs long before an agent starts.
fn wait_for_scan(tracer: &mut Tracer) -> Result<()> {
    let off = matches!(
        std::env::var("AGENT_TRACER_PREATTACH").as_deref(),
        Ok("off" | "0" | "false" | "no")
    );
    if off {
        return Ok(());
    }
    tracer.wait_for_log("end of the pre-attach scan", SCAN_TIMEOUT, None, |l| {
        l.contains("start-up scan done") || l.contains("pre-attach: cannot start the scan")
    })
}

/// One task: starts the agent (held on stdin, where it waits before any request), waits for
/// the tracer to hook it if there is one and for [`SETTLE`], then times from the prompt to the
/// agent's exit. Returns the run and, when traced, how long after the start the hooks were in.
fn run_task(
    env: &Env,
    claude: &Claude,
    server: &MockServer,
    label: &str,
    mut tracer: Option<&mut Tracer>,
) -> Result<(Run, Option<Duration>)> {
    // A fresh home and config directory per run: no session or cache carried over.
    let scratch = env.dir.join("real-agent").join(label);
    if scratch.exists() {
        fs::remove_dir_all(&scratch).with_context(|| format!("removing {}", scratch.display()))?;
    }
    let (home, work) = (scratch.join("home"), scratch.join("work"));
    for dir in [&home, &work] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let stderr_path = scratch.join("claude.stderr");
    let mut cmd = agent_command(claude, server, &home, &work);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(
        File::create(&stderr_path)
            .with_context(|| format!("creating {}", stderr_path.display()))?,
    );

    let started = Instant::now();
    let mut agent = Guarded::spawn(&mut cmd, "claude")?;
    let pid = agent.pid();
    // Read stdout on a thread so that a full pipe never stalls the agent; its end (the agent's
    // exit) is what the clock waits for.
    let mut stdout = agent
        .child_mut()
        .and_then(|c| c.stdout.take())
        .context("the agent has no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let read = stdout.read_to_end(&mut bytes);
        let _ = tx.send(read.map(|_| String::from_utf8_lossy(&bytes).into_owned()));
    });

    let hooked_after = match tracer.as_deref_mut() {
        Some(tracer) => {
            let exe = claude.executable.display().to_string();
            let installed = claude.installed.display().to_string();
            tracer.wait_for_log(
                &format!("`attached ... {exe}` line"),
                HOOK_TIMEOUT,
                Some(&mut agent),
                |l| {
                    l.contains("attached")
                        && (l.contains(exe.as_str()) || l.contains(installed.as_str()))
                },
            )?;
            Some(started.elapsed())
        }
        None => None,
    };
    if let Some(wait) = SETTLE.checked_sub(started.elapsed()) {
        std::thread::sleep(wait);
    }
    if let Some(status) = agent.try_wait()? {
        bail!(
            "Claude Code exited ({status}) before it was given the prompt:\n{}",
            tail(&fs::read_to_string(&stderr_path).unwrap_or_default(), 20)
        );
    }

    let mut pids = vec![server.pid()];
    pids.extend(tracer.as_ref().map(|t| t.pid));
    let load = OtherLoad::start(pids)?;
    // Children's CPU as this process has reaped it: the agent's, once it is waited for below,
    // with its tools' (its own reaped children).
    let cpu_before = cpu_seconds("/proc/self/stat", 16)?;
    let clock = Instant::now();
    {
        let mut stdin = agent
            .child_mut()
            .and_then(|c| c.stdin.take())
            .context("the agent has no stdin")?;
        stdin
            .write_all(PROMPT.as_bytes())
            .context("writing the prompt to the agent's stdin")?;
        // Dropped here: EOF, so the agent ends once it has answered.
    }
    // Blocks without polling until the agent's stdout closes, then waits for the exit itself
    // in short steps: the clock stops at the exit, within a fraction of a millisecond.
    let stdout = match rx.recv_timeout(RUN_TIMEOUT) {
        Ok(read) => read.context("reading the agent's stdout")?,
        Err(_) => bail!(
            "Claude Code (pid {pid}) did not finish within {RUN_TIMEOUT:?}; its stderr ({}):\n{}",
            stderr_path.display(),
            tail(&fs::read_to_string(&stderr_path).unwrap_or_default(), 40)
        ),
    };
    let status = wait_exit(&mut agent, Duration::from_secs(60))?;
    let seconds = clock.elapsed().as_secs_f64();
    let agent_cpu_s = cpu_seconds("/proc/self/stat", 16)? - cpu_before;
    let other_cpus = load.finish()?;

    if !status.success() || !stdout.contains(FINAL_ANSWER) {
        bail!(
            "Claude Code ({status}) did not complete the task with `{FINAL_ANSWER}` on its \
             stdout.\nstdout:\n{}\nstderr ({}):\n{}",
            tail(&stdout, 40),
            stderr_path.display(),
            tail(&fs::read_to_string(&stderr_path).unwrap_or_default(), 40)
        );
    }
    Ok((
        Run {
            seconds,
            agent_cpu_s,
            other_cpus,
        },
        hooked_after,
    ))
}

/// Polls for the exit every 0.2 ms for at most `limit` (the agent has closed its stdout, so it
/// is ending).
fn wait_exit(agent: &mut Guarded, limit: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = agent.try_wait()? {
            return Ok(status);
        }
        ensure!(
            Instant::now() < deadline,
            "Claude Code closed its stdout but did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Claude Code as `tests/e2e_real_agents.rs` runs it: nothing of this environment but a plain
/// PATH (no proxy, no real credentials, no config of the machine's user), the mock as its API
/// and its certificate trusted, print mode with the prompt read as stream-json from stdin.
fn agent_command(claude: &Claude, server: &MockServer, home: &Path, work: &Path) -> Command {
    let mut cmd = Command::new(&claude.executable);
    cmd.env_clear()
        .current_dir(work)
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", home)
        .env("NODE_EXTRA_CA_CERTS", &server.cert)
        .env("LANG", "C.UTF-8")
        .env("TERM", "dumb")
        .env("NO_COLOR", "1")
        .args(["-p", "--dangerously-skip-permissions", "--verbose"])
        .args([
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
        ])
        // The origin: Claude Code adds /v1/messages itself.
        .env(
            "ANTHROPIC_BASE_URL",
            format!("https://127.0.0.1:{}", server.port),
        )
        .env("ANTHROPIC_API_KEY", FAKE_KEY)
        .env("CLAUDE_CONFIG_DIR", home.join(".claude"))
        // As root Claude Code refuses to skip permissions unless told it is in a sandbox.
        .env("IS_SANDBOX", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_ERROR_REPORTING", "1");
    cmd
}

/// A signed percentage with a true minus sign: `+1.2 %`, `−3.0 %`.
fn pct(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let s = format!("{v:+.2} %");
    s.replacen('-', "\u{2212}", 1)
}

/// The verdict on the interval (in percent of the mean without) against the target: within it
/// only if the whole interval is at or below it, beyond it only if the whole interval is above.
fn verdict(low: f64, high: f64, runs: usize) -> String {
    if !(low.is_finite() && high.is_finite()) {
        return format!("no interval at {runs} runs each way");
    }
    let ci = format!("95 % CI {} to {}", pct(low), pct(high));
    if high <= TARGET_PCT {
        let goal = if high <= GOAL_PCT {
            "; within the goal too"
        } else {
            "; not yet shown within the goal"
        };
        format!("**within the target** ({ci}: its upper bound is at most the target{goal})")
    } else if low > TARGET_PCT {
        format!("**exceeds the target** ({ci}: even its lower bound is above it)")
    } else {
        format!(
            "**undecided at this many runs** ({runs} each way): the {ci} is {:.2} points wide \
             and contains the target",
            high - low
        )
    }
}

fn render(claude: &Claude, off: &[Run], on: &[Traced], others: &Others) -> String {
    let off_s: Vec<f64> = off.iter().map(|r| r.seconds).collect();
    let on_s: Vec<f64> = on.iter().map(|t| t.run.seconds).collect();
    let welch = Welch::new(&off_s, &on_s);
    let (diff_pct, low_pct, high_pct) =
        welch.map_or((f64::NAN, f64::NAN, f64::NAN), |w| w.relative_pct());
    let runs = off.len().min(on.len());
    let hooked: Vec<f64> = on.iter().map(|t| t.hooked_after_s).collect();
    let late = hooked.iter().filter(|s| **s > SETTLE.as_secs_f64()).count();

    let mut s = format!("{SECTION}\n\n");
    s.push_str(&format!(
        "Measured {date} on {machine} with `cargo xtask bench --only real-agent`.\n\n\
         Claude Code {version} (the pinned native build from npm: one Bun executable with \
         BoringSSL linked in and no TLS symbols, hooked by the tracer when it is executed) does \
         one complete task in print mode (`-p --input-format stream-json --output-format \
         stream-json`, permissions skipped), driven as `tests/e2e_real_agents.rs` drives it: the \
         model asks its Bash tool to run `expr 6 + 36`, the agent runs it, and the model's final \
         text quotes the output; a run counts only if the agent exits 0 with `{FINAL_ANSWER}` on \
         its stdout. The model is the local mock server (`mock-llm`, rustls, never hooked: `--skip-executable`) \
         answering Anthropic's Messages API with that scripted loop (two streamed calls, their \
         events 30 ms apart, plus whatever side calls the agent makes). It stands in for \
         Anthropic's API only because no real API may be called from here; the agent, its tool, \
         its TLS and the tracer are the real ones.\n\n\
         {runs} runs without the tracer and {runs} with it, interleaved (without, with, …), \
         after one warm-up run each way that is not counted. Each traced run uses a fresh \
         `agent-tracer run --console never` (no exporter), started before the agent and left to \
         finish its pre-attach start-up scan. Each run gives the agent a fresh home and config \
         directory and starts it held: it waits on stdin before any request. A traced run waits \
         until the tracer's log says it hooked the `claude` executable; every run waits at least \
         {settle:.0} s after the agent's start, so that its start-up is over on both sides. The \
         clock starts when the prompt is written to the agent's stdin (so after the tracer \
         hooked it) and stops when the agent exits. The tracer's and the agent's start-up are \
         not in the figures: a tracer runs long before an agent starts.\n\n",
        date = today(),
        machine = machine(),
        version = claude.version,
        settle = SETTLE.as_secs_f64(),
    ));
    s.push_str(&others.caution());
    let loads: Vec<f64> = off
        .iter()
        .chain(on.iter().map(|t| &t.run))
        .map(|r| r.other_cpus)
        .collect();
    s.push_str(&load_note(&loads));

    let mean_sd = |v: &[f64]| format!("{:.3} s ± {:.3} s", mean(v), sample_sd(v));
    let cpu = |runs: &mut dyn Iterator<Item = &Run>| median(runs.map(|r| r.agent_cpu_s).collect());
    s.push_str("| | without tracer | with tracer |\n| --- | ---: | ---: |\n");
    s.push_str(&format!("| runs | {} | {} |\n", off.len(), on.len()));
    s.push_str(&format!(
        "| median task time | {:.3} s | {:.3} s |\n",
        median(off_s.clone()),
        median(on_s.clone())
    ));
    s.push_str(&format!(
        "| mean task time ± sample SD | {} | {} |\n",
        mean_sd(&off_s),
        mean_sd(&on_s)
    ));
    s.push_str(&format!(
        "| agent CPU (user + system, its tool included), median | {:.2} s | {:.2} s |\n",
        cpu(&mut off.iter()),
        cpu(&mut on.iter().map(|t| &t.run))
    ));
    match welch {
        Some(w) => {
            s.push_str(&format!(
                "| ratio of means (with / without) | | {:.4}× |\n",
                w.mean_with / w.mean_without
            ));
            s.push_str(&format!(
                "| difference of means, relative to the mean without | | {} (95 % CI {} to {}) \
                 |\n\n",
                pct(diff_pct),
                pct(low_pct),
                pct(high_pct)
            ));
            s.push_str(&format!(
                "Verdict against the target of at most {} overhead (goal {}; AgentSight reports \
                 2.9 % for its own tracer): {}.\n\n",
                pct(TARGET_PCT),
                pct(GOAL_PCT),
                verdict(low_pct, high_pct, runs)
            ));
            s.push_str(&format!(
                "The interval is Welch's t interval for the difference of the two means (the \
                 variances are not assumed equal): {:+.4} s ± {:.3} × {:.4} s (t₀.₉₇₅ at {:.1} \
                 Welch–Satterthwaite degrees of freedom, by the Cornish–Fisher expansion), \
                 divided by the mean without the tracer, which is taken as exact.\n\n",
                w.diff, w.t, w.se, w.df
            ));
        }
        None => s.push_str("\nToo few runs for a confidence interval.\n\n"),
    }
    s.push_str(&format!(
        "Per run, task time s: without {}; with {}. Agent CPU s: without {}; with {}. Traced \
         runs, agent start → hooked s: {}.\n\n",
        list(off_s.iter().copied(), 3),
        list(on_s.iter().copied(), 3),
        list(off.iter().map(|r| r.agent_cpu_s), 2),
        list(on.iter().map(|t| t.run.agent_cpu_s), 2),
        list(hooked.iter().copied(), 3),
    ));
    if late > 0 {
        s.push_str(&format!(
            "Caution: in {late} traced run(s) the hooks came later than the {:.0} s every run \
             waits, so the prompt was written later in the agent's life than in the runs \
             without the tracer.\n\n",
            SETTLE.as_secs_f64()
        ));
    }
    let calls: Vec<u64> = on.iter().map(|t| t.llm_calls).collect();
    s.push_str(&format!(
        "The tracer's final log line of each traced run (LLM calls counted: {}):\n\n```text\n",
        calls
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for t in on {
        s.push_str(&t.final_line);
        s.push('\n');
    }
    s.push_str("```\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert!(verdict(-0.4, 0.3, 20).starts_with("**within the target**"));
        assert!(verdict(-0.4, 0.3, 20).contains("within the goal too"));
        assert!(verdict(-0.4, 0.8, 20).contains("not yet shown within the goal"));
        assert!(verdict(-0.4, 1.0, 20).starts_with("**within the target**"));
        assert!(verdict(1.1, 3.0, 20).starts_with("**exceeds the target**"));
        let undecided = verdict(-3.0, 5.4, 20);
        assert!(undecided.starts_with("**undecided at this many runs**"));
        assert!(undecided.contains("8.40 points wide"), "{undecided}");
        assert!(
            undecided.contains("\u{2212}3.00 % to +5.40 %"),
            "{undecided}"
        );
        assert!(verdict(f64::NAN, f64::NAN, 1).starts_with("no interval"));
    }

    #[test]
    fn renders_the_section() {
        let run = |seconds: f64| Run {
            seconds,
            agent_cpu_s: 0.5,
            other_cpus: 0.01,
        };
        let off: Vec<Run> = [3.00, 3.02, 2.98, 3.01].into_iter().map(run).collect();
        let on: Vec<Traced> = [3.02, 3.03, 3.01, 3.04]
            .into_iter()
            .map(|s| Traced {
                run: run(s),
                hooked_after_s: 0.05,
                final_line: "tracer stopped: llm_calls=2".into(),
                llm_calls: 2,
            })
            .collect();
        let claude = Claude {
            executable: "/x/claude".into(),
            installed: "/x/claude".into(),
            version: "1.2.3".into(),
        };
        let s = render(&claude, &off, &on, &Others::default());
        assert!(s.starts_with(SECTION), "{s}");
        assert!(
            s.contains("| median task time | 3.005 s | 3.025 s |"),
            "{s}"
        );
        assert!(s.contains("1.0075×"), "{s}");
        assert!(
            s.contains("Per run, task time s: without 3.000, 3.020, 2.980, 3.010;"),
            "{s}"
        );
        assert!(
            s.contains("**undecided at this many runs** (4 each way)"),
            "{s}"
        );
        assert!(s.contains("```text\ntracer stopped: llm_calls=2\n"), "{s}");
        assert!(!s.contains("Caution: in"), "{s}");
    }

    #[test]
    fn the_pinned_claude_code_line_parses() {
        let line = crate::setup::REAL_AGENTS
            .lines()
            .find(|l| l.starts_with("claude-code "))
            .unwrap();
        assert_eq!(line.split_whitespace().count(), 4);
    }

    #[test]
    fn the_prompt_is_one_stream_json_line() {
        assert_eq!(PROMPT.lines().count(), 1);
        assert!(PROMPT.ends_with('\n'));
        assert!(PROMPT.contains(r#""content":"Run `expr 6 + 36` and tell me what it printed."}}"#));
    }
}
