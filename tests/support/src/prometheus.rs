//! A Prometheus scraper for the tests: GET /metrics over real HTTP/1.1 (hyper's client) and a
//! parser for the text exposition format's samples.

use std::{collections::BTreeMap, net::SocketAddr};

use anyhow::{bail, Context as _, Result};
use http_body_util::{BodyExt, Empty};
use hyper::{body::Bytes, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub struct Scrape {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// `GET path` on `addr`, one connection.
pub async fn get(addr: SocketAddr, path: &str) -> Result<Scrape> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    let driver = tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = resp.into_body().collect().await?.to_bytes();
    driver.abort();
    Ok(Scrape {
        status,
        content_type,
        body: String::from_utf8(body.to_vec()).context("exposition is not UTF-8")?,
    })
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of a text exposition (comments and blank lines skipped).
pub fn parse(text: &str) -> Result<Vec<Sample>> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| parse_line(line).with_context(|| format!("bad sample line {line:?}")))
        .collect()
}

fn parse_line(line: &str) -> Result<Sample> {
    let name_end = line.find(['{', ' ']).context("no value")?;
    let name = line[..name_end].to_string();
    let (labels, rest) = match line[name_end..].strip_prefix('{') {
        Some(after) => parse_labels(after)?,
        None => (BTreeMap::new(), &line[name_end..]),
    };
    let value = rest.split_whitespace().next().context("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().with_context(|| format!("value {v:?}"))?,
    };
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// Labels from `k="v",k2="v2"}` onwards; returns them and the text after `}`.
fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    loop {
        if bytes.get(i) == Some(&b'}') {
            return Ok((labels, &text[i + 1..]));
        }
        let eq = text[i..].find("=\"").context("label without =\"")? + i;
        let key = text[i..eq].to_string();
        i = eq + 2;
        let mut value = String::new();
        loop {
            match bytes.get(i) {
                Some(b'\\') => {
                    match bytes.get(i + 1) {
                        Some(b'n') => value.push('\n'),
                        Some(b'\\') => value.push('\\'),
                        Some(b'"') => value.push('"'),
                        _ => bail!("bad escape"),
                    }
                    i += 2;
                }
                Some(b'"') => {
                    i += 1;
                    break;
                }
                Some(_) => {
                    let c = text[i..].chars().next().context("truncated")?;
                    value.push(c);
                    i += c.len_utf8();
                }
                None => bail!("unterminated label value"),
            }
        }
        labels.insert(key, value);
        if bytes.get(i) == Some(&b',') {
            i += 1;
        }
    }
}

/// The samples named `name` whose labels include every pair of `labels`.
pub fn matching<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_escaped_labels() {
        let text = "# TYPE x counter\nx_total 3\ny_bucket{le=\"+Inf\",m=\"a\\\"b\\\\c,}\"} 2\nz{} 1.5\n# EOF\n";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].name.as_str(), s[0].value), ("x_total", 3.0));
        assert_eq!(s[1].labels["le"], "+Inf");
        assert_eq!(s[1].labels["m"], "a\"b\\c,}");
        assert_eq!(matching(&s, "y_bucket", &[("le", "+Inf")]).len(), 1);
        assert_eq!(s[2].value, 1.5);
        assert!(parse("bad{k=\"v} 1").is_err());
    }
}
