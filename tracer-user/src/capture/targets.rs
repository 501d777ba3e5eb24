//! TLS targets: which TLS stack a binary carries and where to hook it. One resolver for shared
//! libraries and executables, so a static OpenSSL in node, a libssl in a container and the
//! host's libssl are found the same way.
//!
//! Results are cached per file identity (device, inode, size, mtime): a 100 MB executable is
//! analysed once, however many processes run it.

use std::{
    borrow::Cow,
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex, OnceLock,
    },
};

use object::{Object, ObjectSection, ObjectSymbol};
use thiserror::Error;

use super::safe_open::{open_host, OpenError};

/// A file, as the kernel identifies it for uprobes (they attach to the inode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: i64,
}

impl FileId {
    /// Of an open file's `fstat` (see `safe_open`): a name can be swapped under a `stat`.
    pub fn from_metadata(m: &std::fs::Metadata) -> Self {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
        }
    }
}

/// A probe to place: program name and file offset. `symbol` names the function (its symbol,
/// or for an inferred hook the library's own name for it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    pub program: Cow<'static, str>,
    pub symbol: Cow<'static, str>,
    pub offset: u64,
}

/// How a binary's hooks were found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HookMethod {
    /// From the symbol table (or Go's function table): exact.
    #[default]
    Symbol,
    /// Inferred by a locator (`locate/`) in a binary without symbols: attached with cookies and
    /// trusted only once the first captured bytes parse (`validate.rs`).
    Inferred,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsStack {
    /// OpenSSL or BoringSSL (`SSL_write`/`SSL_read` defined here).
    OpenSsl,
    GnuTls,
    Go,
    /// BoringSSL linked into a stripped executable (Bun), located by `locate::boringssl`.
    BoringSsl,
    /// rustls, hooked below its API at aws-lc's AEAD seal/open (located without symbols).
    Rustls,
}

/// One TLS stack found in a binary and the hooks that capture it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackHooks {
    pub stack: TlsStack,
    /// Empty when the stack is there but nothing could be hooked; for Go the functions are in
    /// [`Analysis::go`].
    pub hooks: Vec<Hook>,
    /// How `hooks` were found.
    pub method: HookMethod,
    /// For inferred hooks: what the locator says the stack is ("OpenSSL 3.6.3 (static, ...)").
    pub description: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Analysis {
    /// Every TLS stack the file carries that we can hook, each with its hooks. Usually one; a
    /// binary can carry more (Codex CLI: a static OpenSSL and rustls on aws-lc), and each
    /// stack's traffic is only captured through its own hooks.
    pub stacks: Vec<StackHooks>,
    /// Go functions, attached all or nothing by the Go module (entry and every RET).
    pub go: Option<super::locate::go::GoTlsHooks>,
    /// A TLS stack we recognise but cannot hook (yet), reported once per binary.
    pub unsupported: Option<&'static str>,
    /// Why part of the analysis was given up (a forged Go function table exhausted its
    /// budget): hooks it would have found are missing. Counted by [`TargetCache`].
    pub given_up: Option<String>,
}

impl Analysis {
    /// Every hook of every stack.
    pub fn hooks(&self) -> impl Iterator<Item = &Hook> {
        self.stacks.iter().flat_map(|s| &s.hooks)
    }

    /// The stacks, for people: "OpenSsl, Rustls".
    pub fn stack_names(&self) -> String {
        let names: Vec<String> = self
            .stacks
            .iter()
            .map(|s| format!("{:?}", s.stack))
            .collect();
        names.join(", ")
    }
}

#[derive(Debug, Error)]
pub enum TargetError {
    #[error("{path} is not a readable ELF file: {message}")]
    Elf { path: String, message: String },
    #[error(transparent)]
    File(#[from] OpenError),
}

impl TargetError {
    /// A limit, or the file changing underneath, ended the analysis (not a file that is
    /// simply no ELF): counted as given up.
    pub fn gave_up(&self) -> bool {
        matches!(
            self,
            TargetError::File(OpenError::TooLarge { .. } | OpenError::Changed { .. })
        )
    }
}

/// (program, symbol) pairs, in the order they are tried. Return probes share the program of
/// their direction: `SSL_write` and `SSL_write_ex` both return through `ssl_write_ret`.
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

const GNUTLS_HOOKS: &[(&str, &str)] = &[
    ("gnutls_record_send", "gnutls_record_send"),
    ("ssl_write_ret", "gnutls_record_send"),
    ("gnutls_record_recv", "gnutls_record_recv"),
    ("ssl_read_ret", "gnutls_record_recv"),
];

/// Every program a hook may name (entry programs are uprobes, `_ret` ones uretprobes).
pub const TLS_PROGRAMS: &[&str] = &[
    "ssl_write",
    "ssl_write_ex",
    "ssl_write_ex2",
    "ssl_read",
    "ssl_read_ex",
    "ssl_write_ret",
    "ssl_read_ret",
    "gnutls_record_send",
    "gnutls_record_recv",
    "aead_seal",
    "aead_seal_combined",
    "aead_open",
    "aead_open_ret",
    "aead_open_gather",
    "aead_open_gather_ret",
    "ring_seal",
    "ring_open",
    "ring_open_ret",
];

/// Strings TLS stacks embed, to tell a user what we saw but could not hook.
const UNSUPPORTED_MARKERS: &[(&[u8], &str)] = &[
    // The crate's source path, which its panic locations embed: the bare word appears in too
    // many unrelated strings.
    (b"/rustls-0.", "rustls"),
    // Its error strings' format, which every build prints with: a program that merely names
    // BoringSSL in its text (a help message, a Rust string) must not count as one.
    (b":OPENSSL_internal:", "boringssl"),
    // The version text, a C string (so after another's NUL); Rust text is not NUL-separated.
    (b"\0OpenSSL 3.", "openssl-static-stripped"),
    (b"\0OpenSSL 1.1", "openssl-static-stripped"),
    // Function names its debug messages embed (Debian's build keeps MBEDTLS_DEBUG_C).
    (b"mbedtls_ssl_", "mbedtls"),
];

/// Whether a library's file name suggests a TLS library worth analysing.
pub fn is_tls_library_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains(".so") && (n.contains("ssl") || n.contains("tls"))
}

/// Analyses the host file at `path` (tests, `check`). `executable` enables the
/// unsupported-stack scan (libraries only matter when they export hooks).
pub fn analyse(path: &Path, executable: bool) -> Result<Analysis, TargetError> {
    let opened = open_host(path)?;
    analyse_file(
        &opened.file,
        &path.display().to_string(),
        executable,
        &super::locate::DiskCache::none(),
    )
}

/// Analyses an open file (opened by `safe_open`), with the symbol-less locators' results kept
/// in `cache` across restarts. `shown` names it in errors and logs.
pub fn analyse_file(
    file: &std::fs::File,
    shown: &str,
    executable: bool,
    cache: &super::locate::DiskCache,
) -> Result<Analysis, TargetError> {
    // Read, not mapped: a file truncated under a mapping raises SIGBUS in the daemon. Only its
    // metadata at first: the rest when an analysis below needs it.
    let mut data = super::safe_open::read_for_analysis(file, shown)?;
    let shown = shown.to_string();
    let elf = object::File::parse(&*data).map_err(|e| TargetError::Elf {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    let mut analysis = Analysis::default();

    let wanted = |name: &str| {
        OPENSSL_HOOKS
            .iter()
            .chain(GNUTLS_HOOKS)
            .any(|(_, s)| *s == name)
    };
    let mut offsets: HashMap<&'static str, u64> = HashMap::new();
    for sym in elf.dynamic_symbols().chain(elf.symbols()) {
        if !sym.is_definition() {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        if !wanted(name) {
            continue;
        }
        let Some(static_name) = OPENSSL_HOOKS
            .iter()
            .chain(GNUTLS_HOOKS)
            .map(|(_, s)| *s)
            .find(|s| *s == name)
        else {
            continue;
        };
        if offsets.contains_key(static_name) {
            continue;
        }
        if let Some(offset) = file_offset(&elf, &sym) {
            offsets.insert(static_name, offset);
        }
    }
    let hooks_for = |table: &[(&'static str, &'static str)]| -> Vec<Hook> {
        table
            .iter()
            .filter_map(|(program, symbol)| {
                offsets.get(symbol).map(|offset| Hook {
                    program: Cow::Borrowed(*program),
                    symbol: Cow::Borrowed(*symbol),
                    offset: *offset,
                })
            })
            .collect()
    };
    let symbol_stack = |stack, table| StackHooks {
        stack,
        hooks: hooks_for(table),
        method: HookMethod::Symbol,
        description: None,
    };
    if offsets.contains_key("SSL_write") && offsets.contains_key("SSL_read") {
        analysis
            .stacks
            .push(symbol_stack(TlsStack::OpenSsl, OPENSSL_HOOKS));
    } else if offsets.contains_key("gnutls_record_send")
        && offsets.contains_key("gnutls_record_recv")
    {
        analysis
            .stacks
            .push(symbol_stack(TlsStack::GnuTls, GNUTLS_HOOKS));
    }
    if !executable {
        return Ok(analysis);
    }
    let may_be_go = super::locate::go::may_be_go(&elf);
    // Only asked when Go's analysis will run (no stack found by symbols).
    let go_ranges = (may_be_go && analysis.stacks.is_empty())
        .then(|| {
            super::locate::go::data_ranges(&elf, &|offset, len| data.bytes_at(file, offset, len))
        })
        .flatten();
    // TLS libraries linked in without hookable symbols, beside or instead of one that has them.
    // An OpenSSL-API stack found by its symbols, or in a shared library the program imports
    // (that library is hooked on its own), needs no locator; any other stack still does.
    let imports_openssl_api = elf
        .imports()
        .map(|imports| {
            imports.iter().any(|i| {
                std::str::from_utf8(i.name())
                    .is_ok_and(|n| n.starts_with("SSL_") || n.starts_with("gnutls_"))
            })
        })
        .unwrap_or(false);
    drop(elf);
    if analysis.stacks.is_empty() && may_be_go {
        // Go's function table and build information are data; of the code only its two
        // functions' are read, through the file. Where section headers say where the table's
        // names and entries are, only they are read.
        match go_ranges {
            Some(ranges) => data.read_within(file, &shown, ranges)?,
            None => data.read_data(file, &shown)?,
        }
        let code_at = |offset, len| data.bytes_at(file, offset, len);
        match super::locate::go::locate_reading_code(
            &data,
            &super::locate::go::Budget::standard(),
            &code_at,
        ) {
            Ok(Some(go)) => {
                analysis.stacks.push(StackHooks {
                    stack: TlsStack::Go,
                    hooks: Vec::new(),
                    method: HookMethod::Symbol,
                    description: None,
                });
                analysis.go = Some(go);
                return Ok(analysis);
            }
            Ok(None) => {}
            // Go, but not one whose calls we can read (before the register ABI, not x86-64).
            // Program headers no loader would accept: not Go's problem; the locators below
            // report the file as unreadable.
            Err(super::locate::go::GoLocateError::Layout(e)) => {
                tracing::debug!("{shown}: {e}");
            }
            Err(super::locate::go::GoLocateError::Budget(reason)) => {
                tracing::warn!("{shown}: Go analysis given up: {reason}");
                analysis.given_up = Some(format!("go: {reason}"));
                return Ok(analysis);
            }
            Err(e) => {
                use super::locate::go::GoLocateError as E;
                analysis.unsupported = Some(match e {
                    E::StackAbi(_) => "go-before-1.17",
                    E::Architecture(_) => "go-not-x86-64",
                    _ => "go-unlocatable",
                });
                tracing::debug!("{shown}: {e}");
                return Ok(analysis);
            }
        }
    }
    let mut skip = Vec::new();
    if imports_openssl_api || !analysis.stacks.is_empty() {
        skip.extend([
            super::locate::openssl::LOCATOR.name,
            super::locate::boringssl::LOCATOR.name,
        ]);
    }
    // Which of the locators' and markers' strings the file holds, searched through a bounded
    // window while most of it is unread: the whole file is read only for a locator to run.
    let locators: Vec<&super::locate::Locator> = super::locate::LOCATORS
        .iter()
        .filter(|l| !skip.contains(&l.name))
        .collect();
    let needles: Vec<&[u8]> = locators
        .iter()
        .flat_map(|l| l.needles.iter().copied())
        .chain(UNSUPPORTED_MARKERS.iter().map(|(marker, _)| *marker))
        .collect();
    let found: Vec<&[u8]> = if data.partly_unread() {
        let in_file = super::safe_open::needles_in_file(file, &shown, &needles)?;
        needles
            .iter()
            .zip(in_file)
            .filter_map(|(needle, found)| found.then_some(*needle))
            .collect()
    } else {
        needles
            .iter()
            .copied()
            .filter(|needle| memchr::memmem::find(&data, needle).is_some())
            .collect()
    };
    if locators
        .iter()
        .any(|l| super::locate::present_by_needles(l, &found))
    {
        data.read_all(file, &shown)?;
        analysis
            .stacks
            .extend(inferred(&shown, &data, cache, &skip));
    }
    if analysis.stacks.is_empty() && !imports_openssl_api {
        analysis.unsupported = UNSUPPORTED_MARKERS
            .iter()
            .find(|(marker, _)| found.contains(marker))
            .map(|(_, name)| *name);
    }
    Ok(analysis)
}

/// The stacks the locators infer in a binary without (those stacks') TLS symbols, skipping the
/// locators in `skip`.
fn inferred(
    shown: &str,
    data: &[u8],
    cache: &super::locate::DiskCache,
    skip: &[&str],
) -> Vec<StackHooks> {
    let stacks = super::locate::locate_except(data, cache, skip);
    for failure in &stacks.failed {
        tracing::info!(
            "{shown}: {} present but not located: {}",
            failure.locator,
            failure.reason
        );
    }
    stacks
        .found
        .into_iter()
        .filter_map(|found| {
            let stack = match found.kind.as_str() {
                "openssl" => TlsStack::OpenSsl,
                "boringssl" => TlsStack::BoringSsl,
                "rustls" => TlsStack::Rustls,
                other => {
                    tracing::debug!("{shown}: no TlsStack for {other}");
                    return None;
                }
            };
            Some(StackHooks {
                stack,
                hooks: found
                    .hooks
                    .into_iter()
                    .map(|h| Hook {
                        program: Cow::Owned(h.program),
                        symbol: Cow::Owned(h.function),
                        offset: h.offset,
                    })
                    .collect(),
                method: HookMethod::Inferred,
                description: Some(found.stack),
            })
        })
        .collect()
}

/// The file offset of a symbol's address (uprobes attach by file offset).
fn file_offset(elf: &object::File<'_>, sym: &object::Symbol<'_, '_>) -> Option<u64> {
    let section = elf.section_by_index(sym.section_index()?).ok()?;
    let (offset, _) = section.file_range()?;
    sym.address()
        .checked_sub(section.address())?
        .checked_add(offset)
}

/// One file's analysis, or why it failed (kept too: a file is not read again).
type Analysed = Result<Arc<Analysis>, String>;

/// Analyses, once per file identity, shared by the attacher and the pre-attach scanner (which
/// runs on its own thread). A file being analysed is analysed once: a second caller (an exec of
/// the executable the scanner is reading) waits for the first's answer instead of redoing it.
pub struct TargetCache {
    analyses: Mutex<HashMap<FileId, Arc<OnceLock<Analysed>>>>,
    disk: super::locate::DiskCache,
    /// Analyses a limit ended (file too large, changed while read, a budget spent).
    pub given_up: AtomicU64,
}

impl Default for TargetCache {
    fn default() -> Self {
        TargetCache {
            analyses: Mutex::new(HashMap::new()),
            disk: super::locate::DiskCache::from_env(),
            given_up: AtomicU64::new(0),
        }
    }
}

impl TargetCache {
    /// The analysis of `file` (identified by `id`, named `display`), made now unless made or
    /// under way already. The error of a failed analysis is kept too: the same file is not
    /// read again.
    pub fn get_or_analyse(
        &self,
        id: FileId,
        file: &std::fs::File,
        display: &str,
        executable: bool,
    ) -> Result<Arc<Analysis>, String> {
        let cell = {
            let mut analyses = self.analyses.lock().unwrap_or_else(|e| e.into_inner());
            analyses.entry(id).or_default().clone()
        };
        cell.get_or_init(|| {
            let result = analyse_file(file, display, executable, &self.disk);
            let gave_up = match &result {
                Ok(a) => a.given_up.is_some(),
                Err(e) => e.gave_up(),
            };
            if gave_up {
                self.given_up.fetch_add(1, Relaxed);
                if let Err(e) = &result {
                    tracing::warn!("analysis given up: {e}");
                }
            }
            result.map(Arc::new).map_err(|e| e.to_string())
        })
        .clone()
    }

    /// Files never hooked (`--skip-executable`): their analysis is settled as empty, so no
    /// hook is placed in them and they are never read.
    pub fn skip(&self, ids: impl IntoIterator<Item = FileId>) {
        let mut analyses = self.analyses.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            let cell = OnceLock::new();
            let _ = cell.set(Ok(Arc::new(Analysis::default())));
            analyses.insert(id, Arc::new(cell));
        }
    }

    /// Whether `id`'s analysis is done (its answer is at hand without waiting).
    pub fn analysed(&self, id: &FileId) -> bool {
        let analyses = self.analyses.lock().unwrap_or_else(|e| e.into_inner());
        analyses.get(id).is_some_and(|cell| cell.get().is_some())
    }

    /// Whether `id` has been analysed (or is being analysed).
    pub fn knows(&self, id: &FileId) -> bool {
        let analyses = self.analyses.lock().unwrap_or_else(|e| e.into_inner());
        analyses.contains_key(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(a: &Analysis) -> Vec<TlsStack> {
        a.stacks.iter().map(|s| s.stack.clone()).collect()
    }

    #[test]
    fn system_libssl_exports_all_openssl_hooks() {
        let lib = Path::new("/lib/x86_64-linux-gnu/libssl.so.3");
        let a = analyse(lib, false).unwrap();
        assert_eq!(kinds(&a), [TlsStack::OpenSsl]);
        let symbols: Vec<&str> = a.hooks().map(|h| &*h.symbol).collect();
        assert_eq!(symbols.len(), 8, "{symbols:?}");
        assert!(a.hooks().all(|h| h.offset > 0));
    }

    #[test]
    fn node_carries_a_static_openssl() {
        let a = analyse(Path::new("/usr/bin/node"), true).unwrap();
        assert_eq!(kinds(&a), [TlsStack::OpenSsl]);
        assert_eq!(a.stacks[0].method, HookMethod::Symbol);
        assert!(a.hooks().any(|h| h.symbol == "SSL_write_ex"));
    }

    #[test]
    fn a_program_without_tls_is_nothing() {
        let a = analyse(Path::new("/bin/true"), true).unwrap();
        assert_eq!(kinds(&a), []);
        assert_eq!(a.unsupported, None);
        assert_eq!(a.hooks().count(), 0);
    }

    #[test]
    fn python_uses_the_shared_library() {
        // The interpreter loads libssl through its _ssl module; the interpreter itself is not a
        // target and must not be reported as an unsupported TLS stack.
        let out = std::process::Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .unwrap();
        let python = std::fs::canonicalize(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
        let a = analyse(&python, true).unwrap();
        assert_eq!((kinds(&a), a.unsupported), (vec![], None));
    }

    #[test]
    fn a_static_rustls_binary_is_located() {
        // This test binary links rustls statically (through reqwest, tonic and kube) with the
        // ring provider: a real example, with symbols, located the way a stripped one is.
        let me = std::fs::canonicalize("/proc/self/exe").unwrap();
        let a = analyse(&me, true).unwrap();
        assert_eq!((kinds(&a), a.unsupported), (vec![TlsStack::Rustls], None));
        assert_eq!(a.stacks[0].method, HookMethod::Inferred);
        for program in ["ring_seal", "ring_open", "ring_open_ret"] {
            assert!(a.hooks().any(|h| h.program == program), "{a:?}");
        }
    }

    /// /bin/true (no TLS) with `text` appended: still an ELF file, now carrying those bytes.
    fn true_with(text: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let mut bytes = std::fs::read("/bin/true").unwrap();
        bytes.extend_from_slice(text);
        std::io::Write::write_all(&mut file, &bytes).unwrap();
        file
    }

    #[test]
    fn naming_a_tls_stack_in_text_is_not_carrying_one() {
        // What `xtask`'s help said when it was reported as an unsupported BoringSSL binary.
        let text = true_with(
            b"one Bun executable with BoringSSL linked in; static OpenSSL 3, BoringSSL, rustls",
        );
        assert_eq!(analyse(text.path(), true).unwrap().unsupported, None);
        // Bun's own BoringSSL, as it is in the release: its error format.
        let bun = true_with(b"\0%s:%s\0error:%08x:%s:OPENSSL_internal:%s\0unknown");
        assert_eq!(
            analyse(bun.path(), true).unwrap().unsupported,
            Some("boringssl")
        );
        let openssl = true_with(b"\0\0OpenSSL 3.0.19 27 Jan 2026\0");
        assert_eq!(
            analyse(openssl.path(), true).unwrap().unsupported,
            Some("openssl-static-stripped")
        );
    }

    #[test]
    fn library_names() {
        assert!(is_tls_library_name("libssl.so.3"));
        assert!(is_tls_library_name("libgnutls.so.30"));
        assert!(!is_tls_library_name("libc.so.6"));
    }
}
