//! Finding TLS libraries on the host's usual library directories.

use std::{collections::HashSet, os::unix::fs::MetadataExt, path::PathBuf};

const LIBRARY_DIRS: &[&str] = &[
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
];

/// `libssl.so`, `libssl.so.3`, `libssl.so.1.1`: OpenSSL's shared library (not NSS's
/// `libssl3.so`, which has another API).
pub fn is_libssl(file_name: &str) -> bool {
    file_name == "libssl.so" || file_name.starts_with("libssl.so.")
}

/// Distinct TLS libraries in the usual library directories. Libraries only mapped by running
/// processes (containers, bundled copies) are found by the attacher's process scan.
pub fn find_libssl() -> Vec<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    for dir in LIBRARY_DIRS {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            // By the file's own name (the `.so` link names the versioned file): the attacher
            // opens without following symlinks. These are root's directories.
            if is_libssl(name) || name.starts_with("libgnutls.so.") {
                candidates.extend(std::fs::canonicalize(entry.path()));
            }
        }
    }
    dedupe_by_inode(candidates)
}

fn dedupe_by_inode(paths: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut seen = HashSet::new();
    paths
        .into_iter()
        .filter(|p| match std::fs::metadata(p) {
            Ok(m) if m.is_file() => seen.insert((m.dev(), m.ino())),
            _ => false,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_openssl_but_not_nss() {
        assert!(is_libssl("libssl.so.3"));
        assert!(is_libssl("libssl.so.1.1"));
        assert!(is_libssl("libssl.so"));
        assert!(!is_libssl("libssl3.so"));
        assert!(!is_libssl("libssl.a"));
    }
}
