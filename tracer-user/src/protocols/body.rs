//! Content decoding of HTTP bodies (after transfer decoding).

// Fed by bytes from the wire: a slice index or an overflow here would be a panic on bad input,
// so the lint refuses them rather than a comment promising there are none.
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::{borrow::Cow, io::Read};

use thiserror::Error;

/// Decompressed bodies larger than this are refused (a compression bomb must not take the host).
pub const MAX_DECODED_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("content-encoding {0} is not supported")]
    Unsupported(String),
    #[error("{encoding} body does not decode: {message}")]
    Corrupt { encoding: String, message: String },
    #[error("decoded body exceeds {MAX_DECODED_BYTES} bytes")]
    TooLarge,
}

/// Undoes `Content-Encoding` (a comma-separated list, applied in order).
pub fn decode_content<'a>(
    encoding: Option<&str>,
    body: &'a [u8],
) -> Result<Cow<'a, [u8]>, BodyError> {
    let Some(encoding) = encoding else {
        return Ok(Cow::Borrowed(body));
    };
    let mut data = Cow::Borrowed(body);
    // Codings are listed in the order applied; undo them last first.
    for coding in encoding
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .rev()
    {
        data = match coding.as_str() {
            "" | "identity" => data,
            "gzip" | "x-gzip" => Cow::Owned(read_all(
                flate2::read::MultiGzDecoder::new(&*data),
                &coding,
            )?),
            "deflate" => Cow::Owned(inflate(&data)?),
            "br" => Cow::Owned(read_all(
                brotli::Decompressor::new(&*data, 64 * 1024),
                &coding,
            )?),
            "zstd" => Cow::Owned(read_all(
                zstd::stream::read::Decoder::new(&*data).map_err(|e| BodyError::Corrupt {
                    encoding: coding.clone(),
                    message: e.to_string(),
                })?,
                &coding,
            )?),
            other => return Err(BodyError::Unsupported(other.to_string())),
        };
    }
    Ok(data)
}

/// `deflate` is meant to be zlib-wrapped, but some servers send raw deflate.
fn inflate(data: &[u8]) -> Result<Vec<u8>, BodyError> {
    read_all(flate2::read::ZlibDecoder::new(data), "deflate")
        .or_else(|_| read_all(flate2::read::DeflateDecoder::new(data), "deflate"))
}

fn read_all(reader: impl Read, coding: &str) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::new();
    reader
        .take(MAX_DECODED_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| BodyError::Corrupt {
            encoding: coding.to_string(),
            message: e.to_string(),
        })?;
    if out.len() as u64 > MAX_DECODED_BYTES {
        return Err(BodyError::TooLarge);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn identity_and_missing_encoding_borrow() {
        assert!(matches!(
            decode_content(None, b"x"),
            Ok(Cow::Borrowed(b"x"))
        ));
        assert_eq!(&*decode_content(Some("identity"), b"x").unwrap(), b"x");
    }

    #[test]
    fn gzip_and_both_deflate_flavours() {
        assert_eq!(
            &*decode_content(Some("gzip"), &gzip(b"{\"a\":1}")).unwrap(),
            b"{\"a\":1}"
        );
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(b"zlib").unwrap();
        assert_eq!(
            &*decode_content(Some("deflate"), &z.finish().unwrap()).unwrap(),
            b"zlib"
        );
        let mut d = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        d.write_all(b"raw").unwrap();
        assert_eq!(
            &*decode_content(Some("Deflate"), &d.finish().unwrap()).unwrap(),
            b"raw"
        );
    }

    #[test]
    fn brotli_and_zstd() {
        let mut br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
            w.write_all(b"{\"b\":\"brotli\"}").unwrap();
        }
        assert_eq!(
            &*decode_content(Some("br"), &br).unwrap(),
            b"{\"b\":\"brotli\"}"
        );
        let z = zstd::stream::encode_all(&b"zstd body"[..], 3).unwrap();
        assert_eq!(&*decode_content(Some("zstd"), &z).unwrap(), b"zstd body");
        // Codings apply in order: gzip then br means undo br first.
        let mut gz_then_br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut gz_then_br, 4096, 5, 22);
            w.write_all(&gzip(b"twice")).unwrap();
        }
        assert_eq!(
            &*decode_content(Some("gzip, br"), &gz_then_br).unwrap(),
            b"twice"
        );
        assert!(matches!(
            decode_content(Some("br"), b"\xff\xff"),
            Err(BodyError::Corrupt { .. })
        ));
    }

    #[test]
    fn corrupt_and_unknown_are_errors() {
        assert!(matches!(
            decode_content(Some("gzip"), b"not gzip"),
            Err(BodyError::Corrupt { .. })
        ));
        assert_eq!(
            decode_content(Some("compress"), b"x"),
            Err(BodyError::Unsupported("compress".into())).map(Cow::Owned)
        );
    }
}
