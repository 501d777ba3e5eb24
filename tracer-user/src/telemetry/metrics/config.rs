//! Where metrics go (the daemon's `config::metrics` resolves it from the flags): a Prometheus
//! endpoint on loopback and OTLP wherever traces go, by default.

use std::{net::SocketAddr, time::Duration};

use anyhow::{bail, Result};

use crate::export::otlp::OtlpConfig;

pub const DEFAULT_PROMETHEUS_LISTEN: &str = "127.0.0.1:9464";
/// The SDKs' default is 60 s; a tracer watched live wants fresher numbers.
pub const DEFAULT_EXPORT_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrometheusListen {
    pub addr: SocketAddr,
    /// Asked for explicitly: failing to bind it is an error, not a warning.
    pub explicit: bool,
}

#[derive(Clone, Debug)]
pub struct MetricsConfig {
    pub prometheus: Option<PrometheusListen>,
    /// For http/protobuf the full metrics URL (…/v1/metrics).
    pub otlp: Option<OtlpConfig>,
    pub export_interval: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            prometheus: DEFAULT_PROMETHEUS_LISTEN
                .parse()
                .ok()
                .map(|addr| PrometheusListen {
                    addr,
                    explicit: false,
                }),
            otlp: None,
            export_interval: DEFAULT_EXPORT_INTERVAL,
        }
    }
}

impl MetricsConfig {
    pub fn validate(&self) -> Result<()> {
        if self.export_interval.is_zero() {
            bail!("OTEL_METRIC_EXPORT_INTERVAL must be above 0 ms");
        }
        Ok(())
    }
}
