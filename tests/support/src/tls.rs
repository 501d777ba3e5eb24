//! A self-signed certificate for 127.0.0.1/localhost, made fresh per server.

use std::{path::Path, sync::Arc};

use anyhow::{Context as _, Result};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub struct TestCert {
    pub cert_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

pub fn self_signed() -> Result<TestCert> {
    let key = rcgen::KeyPair::generate().context("key pair")?;
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    let cert = params.self_signed(&key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TestCert {
        cert_pem: cert.pem(),
        server_config: Arc::new(config),
    })
}

impl TestCert {
    pub fn write_pem(&self, path: &Path) -> Result<()> {
        std::fs::write(path, &self.cert_pem).with_context(|| format!("writing {}", path.display()))
    }
}
