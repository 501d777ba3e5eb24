//! Credentials never leave the host: the one set of rules that takes them out of what describes
//! a process or a request (a process's command line and its exec spans' arguments, `url.path`,
//! `mcp.resource.uri`). A secret is found by its name (a flag, variable, query parameter,
//! header or JSON member named like a key, token, password...), by its place (URL userinfo,
//! `curl -u user:pass`, `Bearer ...`) or by its own well-known shape (`sk-...`, `AIza...`,
//! `ghp_...`, JWTs...), wherever it stands in an argument. Its value becomes `REDACTED`; the
//! rest of the text stays, so the command line is still worth reading.
//!
//! Pure functions over strings; the patterns are compiled once. Command lines are redacted once
//! per process (the process cache keeps the result), exec arguments once per exec.

use std::{borrow::Cow, sync::LazyLock};

use regex::{Captures, Regex};

pub const REDACTED: &str = "REDACTED";

/// Whether a name (flag, environment variable, query parameter, header, JSON member) says its
/// value is a credential.
pub fn is_secret_name(name: &str) -> bool {
    let n = name
        .trim_start_matches('-')
        .trim_start_matches('$')
        .to_ascii_lowercase();
    if n.is_empty() {
        return false;
    }
    // Presigned AWS URLs: X-Amz-Credential, X-Amz-Signature, X-Amz-Security-Token...
    if n.starts_with("x-amz-") {
        return true;
    }
    if matches!(n.as_str(), "sig" | "pwd" | "pass" | "sas" | "auth") {
        return true;
    }
    // `author`, `authority` name no credential; `authorization`, `oauth_token`, `auth_key` do.
    let auth = n.contains("auth") && (n.contains("authoriz") || !n.contains("author"));
    auth || [
        "key",
        "token",
        "secret",
        "passw",
        "passphrase",
        "credential",
        "signature",
        "cookie",
    ]
    .iter()
    .any(|s| n.contains(s))
}

fn regex(pattern: &str) -> Regex {
    // The patterns are constants of this module, checked by its tests.
    Regex::new(pattern).expect("a valid redaction pattern")
}

/// Keys in the shapes their issuers give them, matched anywhere.
static KEY_SHAPES: LazyLock<Regex> = LazyLock::new(|| {
    regex(concat!(
        // OpenAI (sk-, sk-proj-, sk-svcacct-), Anthropic (sk-ant-), DeepSeek and others.
        r"\bsk-[A-Za-z0-9_-]{16,}",
        // Google API keys (Gemini, Maps...).
        r"|AIza[0-9A-Za-z_-]{30,}",
        // GitHub tokens: classic and fine-grained.
        r"|\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}",
        r"|github_pat_[A-Za-z0-9_]{30,}",
        // Slack tokens.
        r"|\bxox[abposre]-[A-Za-z0-9-]{10,}",
        // AWS access key ids (long-lived and temporary).
        r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
        // Hugging Face, Groq.
        r"|\bhf_[A-Za-z0-9]{30,}",
        r"|\bgsk_[A-Za-z0-9]{30,}",
        // JWTs: base64url header, payload and signature.
        r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+",
    ))
});

static AWS_KEY_ID: LazyLock<Regex> = LazyLock::new(|| regex(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"));

/// An AWS secret access key: 40 base64 characters standing alone.
static AWS_SECRET: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(^|[^A-Za-z0-9/+=])([A-Za-z0-9/+]{40})([^A-Za-z0-9/+=]|$)"));

/// `scheme://userinfo@`: the user may itself be a token (`https://ghp_...@github.com`).
static URL_USERINFO: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s?#@'\x22]+@"));

static QUERY_PARAM: LazyLock<Regex> =
    LazyLock::new(|| regex(r"([?&;])([A-Za-z0-9_.\-\[\]]+)=([^&#\s'\x22]*)"));

/// Telegram's Bot API carries its token in the path: `/bot123456:AA.../sendMessage`.
static TELEGRAM_BOT: LazyLock<Regex> = LazyLock::new(|| regex(r"/bot[0-9]{5,}:[A-Za-z0-9_-]{20,}"));

static BEARER: LazyLock<Regex> = LazyLock::new(|| regex(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"));

/// `name=value` at the start of a word: `--token=x`, `OPENAI_API_KEY=x` inside a shell line.
static ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| {
    regex(r#"(^|[\s'"(;&|])(-{0,2}[A-Za-z_][A-Za-z0-9_.-]*)=('[^']*'|"[^"]*"|[^\s'"&;|)]*)"#)
});

/// `--flag value` inside one argument (a `bash -c` line).
static FLAG_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    regex(r#"(^|\s)(--?[A-Za-z][A-Za-z0-9_.-]*)\s+('[^']*'|"[^"]*"|[^\s'"-][^\s'"]*)"#)
});

/// `curl -u user:pass` inside one argument (a `bash -c` line).
static USER_PASSWORD: LazyLock<Regex> = LazyLock::new(|| {
    regex(r#"(^|\s)(-u|-U|--user|--proxy-user)(\s*|=)('[^']*'|"[^"]*"|[^\s'"]+)"#)
});

/// `Name:` as an HTTP header is given on a command line (`-H 'Authorization: ...'`); its value
/// runs to the end of the argument or its quote.
static HEADER_NAME: LazyLock<Regex> =
    LazyLock::new(|| regex(r#"(^|[\s'"=])([A-Za-z][A-Za-z0-9_-]*)[ \t]*:[ \t]*"#));

/// A JSON (or Python dict) member, its quotes possibly escaped inside a shell line. Objects and
/// arrays as values are left to their own members.
static JSON_MEMBER: LazyLock<Regex> = LazyLock::new(|| {
    regex(concat!(
        r#"(\\?["'])([A-Za-z0-9_.$-]{1,64})(\\?["']\s*:\s*)"#,
        r#"(\\?"(?:[^"\\]|\\[^"])*\\?"|\\?'[^']*\\?'|[^,{}\[\]\s]+)"#
    ))
});

/// Applies `rule` and carries on with its output (borrowed until something changes).
fn apply<'a>(text: Cow<'a, str>, rule: impl FnOnce(&str) -> Cow<'_, str>) -> Cow<'a, str> {
    match rule(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(changed) => Cow::Owned(changed),
    }
}

fn replace_named<'t>(
    re: &Regex,
    text: &'t str,
    value_group: usize,
    keep: impl Fn(&Captures) -> bool,
) -> Cow<'t, str> {
    re.replace_all(text, |c: &Captures| {
        let whole = c.get(0).map_or("", |m| m.as_str());
        match c.get(value_group) {
            Some(value) if !keep(c) && !value.as_str().is_empty() => {
                let start = value.start() - c.get(0).map_or(0, |m| m.start());
                format!("{}{REDACTED}", &whole[..start])
            }
            _ => whole.to_string(),
        }
    })
}

fn named(c: &Captures, group: usize) -> bool {
    c.get(group).is_some_and(|m| is_secret_name(m.as_str()))
}

/// Every rule that needs no neighbouring argument, applied to one string: a command-line
/// argument, a URL path with its query, a URI.
pub fn redact_text(text: &str) -> Cow<'_, str> {
    let aws = AWS_KEY_ID.is_match(text);
    let mut out = Cow::Borrowed(text);
    out = apply(out, |t| {
        URL_USERINFO.replace_all(t, format!("${{1}}{REDACTED}@"))
    });
    out = apply(out, |t| replace_named(&QUERY_PARAM, t, 3, |c| !named(c, 2)));
    out = apply(out, |t| {
        TELEGRAM_BOT.replace_all(t, format!("/bot{REDACTED}"))
    });
    out = apply(out, |t| {
        JSON_MEMBER.replace_all(t, |c: &Captures| {
            if !named(c, 2) {
                return c[0].to_string();
            }
            // The value's own quotes stay, so the JSON stays JSON.
            let value = &c[4];
            let quote = ["\\\"", "\"", "'"]
                .into_iter()
                .find(|q| value.starts_with(q) && value.len() >= 2 * q.len())
                .unwrap_or("");
            format!("{}{}{}{quote}{REDACTED}{quote}", &c[1], &c[2], &c[3])
        })
    });
    out = apply(out, redact_headers);
    out = apply(out, |t| {
        USER_PASSWORD.replace_all(t, |c: &Captures| {
            let value = &c[4];
            let quote = ["'", "\""]
                .into_iter()
                .find(|q| value.len() >= 2 && value.starts_with(q) && value.ends_with(q))
                .unwrap_or("");
            let inner = &value[quote.len()..value.len() - quote.len()];
            if !inner.contains(':') {
                return c[0].to_string();
            }
            let redacted = redact_user_password(inner);
            format!("{}{}{}{quote}{redacted}{quote}", &c[1], &c[2], &c[3])
        })
    });
    out = apply(out, |t| replace_named(&ASSIGNMENT, t, 3, |c| !named(c, 2)));
    out = apply(out, |t| replace_named(&FLAG_VALUE, t, 3, |c| !named(c, 2)));
    out = apply(out, |t| BEARER.replace_all(t, format!("Bearer {REDACTED}")));
    if aws {
        out = apply(out, redact_aws_secret);
    }
    apply(out, |t| KEY_SHAPES.replace_all(t, REDACTED))
}

fn redact_headers(text: &str) -> Cow<'_, str> {
    let mut out = String::new();
    let mut copied = 0;
    for c in HEADER_NAME.captures_iter(text) {
        let (Some(whole), Some(name)) = (c.get(0), c.get(2)) else {
            continue;
        };
        if whole.start() < copied || !is_secret_name(name.as_str()) {
            continue;
        }
        let value_end = text[whole.end()..]
            .find(['\'', '"', '\r', '\n'])
            .map_or(text.len(), |i| whole.end() + i);
        if value_end == whole.end() {
            continue;
        }
        out.push_str(&text[copied..name.start()]);
        out.push_str(&format!("{}: {REDACTED}", name.as_str()));
        copied = value_end;
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

fn redact_aws_secret(text: &str) -> Cow<'_, str> {
    AWS_SECRET.replace_all(text, format!("${{1}}{REDACTED}${{3}}"))
}

/// `curl -u user:pass`: the user stays, the password goes (all of it when the user part may be
/// the key itself, `-u sk_live_...:`).
fn redact_user_password(arg: &str) -> String {
    match arg.split_once(':') {
        Some((user, password)) if !user.is_empty() && !password.is_empty() => {
            format!("{}:{REDACTED}", redact_text(user))
        }
        _ => REDACTED.to_string(),
    }
}

/// Flags whose next argument is `user:password`.
fn is_user_password_flag(arg: &str) -> bool {
    matches!(arg, "-u" | "--user" | "-U" | "--proxy-user")
}

/// Flags whose next argument is a script (`sh -c`, `bash -lc`, `python -c`, `node -e`).
fn is_script_flag(arg: &str) -> bool {
    matches!(arg, "-c" | "-lc" | "-ic" | "-e" | "--eval" | "--command")
}

/// A command line with its credentials redacted, argument by argument: `--api-key X`,
/// `--token=X`, `OPENAI_API_KEY=X`, `-u user:X`, `-H 'Authorization: X'`, URLs' userinfo and
/// secret query parameters, JSON members, `Bearer X`, well-known key shapes, and an AWS secret
/// key anywhere on a line that carries an AWS key id.
pub fn redact_args(args: &[String]) -> Vec<String> {
    let aws = args.iter().any(|a| AWS_KEY_ID.is_match(a));
    let mut out = Vec::with_capacity(args.len());
    let mut next_is_secret = false;
    let mut next_is_user_password = false;
    let mut next_is_script = false;
    for arg in args {
        // A secret flag's value, unless the flag was a switch followed by another flag.
        if std::mem::take(&mut next_is_secret) && !arg.starts_with('-') {
            out.push(REDACTED.to_string());
            continue;
        }
        // A script's words are redacted one by one; another argument is one value.
        let is_script = std::mem::take(&mut next_is_script);
        let redacted = if std::mem::take(&mut next_is_user_password) && arg.contains(':') {
            redact_user_password(arg)
        } else if is_user_password_flag(arg) {
            next_is_user_password = true;
            arg.clone()
        } else if is_script_flag(arg) || (is_script && arg.starts_with('-') && !arg.contains(' ')) {
            // `bash -c -l SCRIPT`: the script comes after the shell's other flags.
            next_is_script = true;
            arg.clone()
        } else if let Some(joined) = arg.strip_prefix("-u").filter(|r| r.contains(':')) {
            format!("-u{}", redact_user_password(joined))
        } else if arg.starts_with('-') && !arg.contains(['=', ' ']) && is_secret_name(arg) {
            next_is_secret = true;
            arg.clone()
        } else {
            match arg.split_once('=') {
                // The whole value of a secret assignment, spaces and all.
                Some((name, _))
                    if !is_script
                        && !name.contains(char::is_whitespace)
                        && !name.contains(['/', ':', '?'])
                        && is_secret_name(name) =>
                {
                    format!("{name}={REDACTED}")
                }
                _ => redact_text(arg).into_owned(),
            }
        };
        out.push(if aws {
            redact_aws_secret(&redacted).into_owned()
        } else {
            redacted
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    // Fake keys in their issuers' shapes.
    const OPENAI: &str = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";
    const ANTHROPIC: &str = "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_AA";
    const GOOGLE: &str = "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q";
    const GITHUB: &str = "ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";
    const GITHUB_PAT: &str = "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123";
    const SLACK: &str = "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx";
    const AWS_ID: &str = "AKIAIOSFODNN7EXAMPLE";
    const AWS_SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const HUGGING_FACE: &str = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567";
    const GROQ: &str = "gsk_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefGHIJ";
    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";

    /// One case per rule: (what it covers, command line, expected).
    #[test]
    fn each_rule_redacts_its_secret() {
        let cases: Vec<(&str, Vec<String>, Vec<String>)> = vec![
            (
                "positional OpenAI key",
                s(&["python", "agent.py", "https://host", OPENAI]),
                s(&["python", "agent.py", "https://host", "REDACTED"]),
            ),
            (
                "Anthropic key inside an argument",
                s(&["claude", &format!(r#"--settings={{"env":{{"K":"{ANTHROPIC}"}}}}"#)]),
                s(&["claude", r#"--settings={"env":{"K":"REDACTED"}}"#]),
            ),
            (
                "Google key in a URL's query",
                s(&[
                    "curl",
                    &format!(
                        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key={GOOGLE}"
                    ),
                ]),
                s(&[
                    "curl",
                    "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=REDACTED",
                ]),
            ),
            (
                "Google key standing alone",
                s(&["gemini", GOOGLE]),
                s(&["gemini", "REDACTED"]),
            ),
            (
                "GitHub tokens",
                s(&["gh", GITHUB, &format!("x{GITHUB_PAT}")]),
                s(&["gh", "REDACTED", "xREDACTED"]),
            ),
            ("Slack token", s(&["bot", SLACK]), s(&["bot", "REDACTED"])),
            (
                "AWS key id and the secret next to it",
                s(&["aws-cli", "configure", AWS_ID, AWS_SECRET_KEY]),
                s(&["aws-cli", "configure", "REDACTED", "REDACTED"]),
            ),
            (
                "Hugging Face and Groq tokens",
                s(&["run", HUGGING_FACE, &format!("k={GROQ}")]),
                s(&["run", "REDACTED", "k=REDACTED"]),
            ),
            ("JWT", s(&["client", JWT]), s(&["client", "REDACTED"])),
            (
                "Bearer token",
                s(&["tool", "Bearer abc.def", "x Bearer ghi"]),
                s(&["tool", "Bearer REDACTED", "x Bearer REDACTED"]),
            ),
            (
                "URL userinfo",
                s(&["git", "clone", "https://oauth2:t0ken@git.example.com/r.git"]),
                s(&["git", "clone", "https://REDACTED@git.example.com/r.git"]),
            ),
            (
                "secret query parameters, presigned URLs",
                s(&["curl", "https://b.s3.amazonaws.com/o?X-Amz-Algorithm=AWS4&X-Amz-Signature=abc123&x=1&access_token=t&sig=s&password=p&client_secret=c"]),
                s(&["curl", "https://b.s3.amazonaws.com/o?X-Amz-Algorithm=REDACTED&X-Amz-Signature=REDACTED&x=1&access_token=REDACTED&sig=REDACTED&password=REDACTED&client_secret=REDACTED"]),
            ),
            (
                "curl -u user:pass, separate and joined",
                s(&["curl", "-u", "alice:s3cret", "--user", "sk_live_x:", "-ubob:hunter2"]),
                s(&["curl", "-u", "alice:REDACTED", "--user", "REDACTED", "-ubob:REDACTED"]),
            ),
            (
                "credential headers",
                s(&[
                    "curl",
                    "-H",
                    "Authorization: Bearer sk-1",
                    "-H",
                    "x-api-key:abc",
                    "--header=Cookie: session=1",
                    "-H",
                    "content-type: application/json",
                    "https://h/v1",
                ]),
                s(&[
                    "curl",
                    "-H",
                    "Authorization: REDACTED",
                    "-H",
                    "x-api-key: REDACTED",
                    "--header=Cookie: REDACTED",
                    "-H",
                    "content-type: application/json",
                    "https://h/v1",
                ]),
            ),
            (
                "JSON members",
                s(&["curl", "-d", r#"{"model":"m","api_key":"k-1","auth":{"token":"t-2"},"n":1}"#]),
                s(&["curl", "-d", r#"{"model":"m","api_key":"REDACTED","auth":{"token":"REDACTED"},"n":1}"#]),
            ),
            (
                "secret flags and assignments",
                s(&["agent", "--api-key", "sk-1", "--token=abc", "OPENAI_API_KEY=sk-2 x", "--model", "gpt", "--author", "me"]),
                s(&["agent", "--api-key", "REDACTED", "--token=REDACTED", "OPENAI_API_KEY=REDACTED", "--model", "gpt", "--author", "me"]),
            ),
            (
                "all of it inside one shell line",
                s(&[
                    "bash",
                    "-c",
                    "-l",
                    "OPENAI_API_KEY=k1 python a.py --api-key k2 && curl -u 'al:pw' -H 'x-api-key: k3' -d '{\"password\": \"k4\"}' 'http://h/p?token=k5' | tee out",
                ]),
                s(&[
                    "bash",
                    "-c",
                    "-l",
                    "OPENAI_API_KEY=REDACTED python a.py --api-key REDACTED && curl -u 'al:REDACTED' -H 'x-api-key: REDACTED' -d '{\"password\": \"REDACTED\"}' 'http://h/p?token=REDACTED' | tee out",
                ]),
            ),
            (
                "escaped JSON inside a shell line",
                s(&["sh", "-c", r#"curl -d "{\"secret\":\"k6\",\"q\":\"x\"}" h"#]),
                s(&["sh", "-c", r#"curl -d "{\"secret\":\"REDACTED\",\"q\":\"x\"}" h"#]),
            ),
            (
                "Telegram bot token in a URL",
                s(&["curl", "https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/sendMessage"]),
                s(&["curl", "https://api.telegram.org/botREDACTED/sendMessage"]),
            ),
        ];
        for (rule, args, want) in cases {
            assert_eq!(redact_args(&args), want, "{rule}");
        }
    }

    #[test]
    fn ordinary_command_lines_are_left_alone() {
        for args in [
            s(&[
                "python3",
                "-u",
                "/srv/agent.py",
                "--model",
                "gpt-4o",
                "https://h:8443/v1",
            ]),
            s(&[
                "node",
                "/usr/lib/node_modules/@anthropic-ai/claude-code/cli.js",
                "-p",
                "fix the task-runner-configuration",
            ]),
            s(&["git", "log", "--author", "alice", "--format=%H %s"]),
            s(&["sh", "-c", "echo agent-step; exit 3"]),
            s(&["server", "--no-auth", "--port", "8080"]),
            s(&["curl", "-s", "http://127.0.0.1:8080/tool/lookup?q=1&page=2"]),
        ] {
            assert_eq!(redact_args(&args), args);
        }
    }

    #[test]
    fn url_paths_and_uris() {
        assert_eq!(
            redact_text("/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/getUpdates?offset=3"),
            "/botREDACTED/getUpdates?offset=3"
        );
        assert_eq!(
            redact_text(&format!(
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key={GOOGLE}"
            )),
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=REDACTED"
        );
        assert_eq!(
            redact_text("/v1/chat/completions"),
            Cow::Borrowed("/v1/chat/completions")
        );
        assert_eq!(
            redact_text("https://u:p@files.example.com/doc.txt?sig=abc"),
            "https://REDACTED@files.example.com/doc.txt?sig=REDACTED"
        );
        assert_eq!(
            redact_text("file:///home/me/notes.md"),
            "file:///home/me/notes.md"
        );
        assert_eq!(redact_text(&format!("/hooks/{SLACK}")), "/hooks/REDACTED");
    }

    #[test]
    fn secret_names() {
        for yes in [
            "--api-key",
            "OPENAI_API_KEY",
            "X-Amz-Credential",
            "sig",
            "Authorization",
            "oauth_token",
            "passwd",
            "Cookie",
        ] {
            assert!(is_secret_name(yes), "{yes}");
        }
        for no in [
            "--author",
            "--model",
            "q",
            "content-type",
            "authority",
            "alt",
        ] {
            assert!(!is_secret_name(no), "{no}");
        }
    }
}
