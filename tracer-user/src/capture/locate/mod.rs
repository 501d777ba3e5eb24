//! Finding TLS functions in stripped binaries from what the libraries' code must contain.

pub mod boringssl;
