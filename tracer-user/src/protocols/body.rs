//! Content decoding of HTTP bodies (after transfer decoding).

// Fed by bytes from the wire: a slice index or an overflow here would be a panic on bad input,
// so the lint refuses them rather than a comment promising there are none.
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::{
    borrow::Cow,
    io::{ErrorKind, Read},
};

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("content-encoding {0} is not supported")]
    Unsupported(String),
    #[error("{encoding} body does not decode: {message}")]
    Corrupt { encoding: String, message: String },
}

/// A body with its content codings undone, as far as the budget allowed.
#[derive(Debug, PartialEq, Eq)]
pub struct DecodedBody<'a> {
    pub bytes: Cow<'a, [u8]>,
    /// The decoded body was longer than the budget: `bytes` is its start. A compression bomb
    /// (1 GiB of zeros is 1 MiB of gzip) ends here instead of in the host's memory.
    pub truncated: bool,
}

/// Undoes `Content-Encoding` (a comma-separated list, applied in order), keeping at most
/// `limit` bytes of each layer's output: the same bound as the bodies the protocols keep.
pub fn decode_content<'a>(
    encoding: Option<&str>,
    body: &'a [u8],
    limit: usize,
) -> Result<DecodedBody<'a>, BodyError> {
    let mut data = Cow::Borrowed(body);
    let mut truncated = false;
    let Some(encoding) = encoding else {
        return Ok(DecodedBody {
            bytes: data,
            truncated,
        });
    };
    // Codings are listed in the order applied; undo them last first.
    for coding in encoding
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .rev()
    {
        // A layer cut short ends early for the next one: what it gives is kept, not an error.
        let input_cut = truncated;
        let (decoded, cut) = match coding.as_str() {
            "" | "identity" => continue,
            "gzip" | "x-gzip" => read_capped(
                flate2::read::MultiGzDecoder::new(&*data),
                &coding,
                limit,
                input_cut,
            )?,
            "deflate" => inflate(&data, limit, input_cut)?,
            "br" => read_capped(
                brotli::Decompressor::new(&*data, 64 * 1024),
                &coding,
                limit,
                input_cut,
            )?,
            "zstd" => read_capped(
                zstd::stream::read::Decoder::new(&*data).map_err(|e| BodyError::Corrupt {
                    encoding: coding.clone(),
                    message: e.to_string(),
                })?,
                &coding,
                limit,
                input_cut,
            )?,
            other => return Err(BodyError::Unsupported(other.to_string())),
        };
        data = Cow::Owned(decoded);
        truncated |= cut;
    }
    Ok(DecodedBody {
        bytes: data,
        truncated,
    })
}

/// `deflate` is meant to be zlib-wrapped, but some servers send raw deflate.
fn inflate(data: &[u8], limit: usize, input_cut: bool) -> Result<(Vec<u8>, bool), BodyError> {
    read_capped(
        flate2::read::ZlibDecoder::new(data),
        "deflate",
        limit,
        input_cut,
    )
    .or_else(|_| {
        read_capped(
            flate2::read::DeflateDecoder::new(data),
            "deflate",
            limit,
            input_cut,
        )
    })
}

/// Smallest allocation step: below it, growing by doubling costs more copies than it saves.
const MIN_GROWTH: usize = 64 * 1024;

/// Makes room for `additional` more bytes in a buffer that will never hold more than `limit`:
/// doubling, so that growing costs amortised constant time, but never past the limit, so that
/// the last step is exact and a buffer at the limit is no larger than it.
pub(crate) fn reserve_capped(out: &mut Vec<u8>, additional: usize, limit: usize) {
    if out.capacity().saturating_sub(out.len()) >= additional {
        return;
    }
    let needed = out.len().saturating_add(additional);
    let target = out
        .capacity()
        .saturating_mul(2)
        .max(MIN_GROWTH)
        .min(limit)
        .max(needed);
    out.reserve_exact(target.saturating_sub(out.len()));
}

/// Reads `reader` to its end or to `limit` bytes, whichever is first, and says whether there
/// was more. Memory follows what was produced (never the compression ratio's promise) and never
/// exceeds `limit`. `input_cut`: the input was itself cut short, so a decoder that runs out of
/// it has given all it can.
fn read_capped(
    mut reader: impl Read,
    coding: &str,
    limit: usize,
    input_cut: bool,
) -> Result<(Vec<u8>, bool), BodyError> {
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok((out, false)),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) if input_cut => return Ok((out, true)),
            Err(e) => {
                return Err(BodyError::Corrupt {
                    encoding: coding.to_string(),
                    message: e.to_string(),
                })
            }
        };
        let room = limit.saturating_sub(out.len());
        let produced = chunk.get(..n).unwrap_or_default();
        if n > room {
            out.extend_from_slice(produced.get(..room).unwrap_or_default());
            return Ok((out, true));
        }
        reserve_capped(&mut out, n, limit);
        out.extend_from_slice(produced);
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use std::io::Write;

    fn decode<'a>(encoding: Option<&str>, body: &'a [u8]) -> Result<Cow<'a, [u8]>, BodyError> {
        decode_content(encoding, body, 1 << 20).map(|d| {
            assert!(!d.truncated);
            d.bytes
        })
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn identity_and_missing_encoding_borrow() {
        assert!(matches!(decode(None, b"x"), Ok(Cow::Borrowed(b"x"))));
        assert_eq!(&*decode(Some("identity"), b"x").unwrap(), b"x");
    }

    #[test]
    fn gzip_and_both_deflate_flavours() {
        assert_eq!(
            &*decode(Some("gzip"), &gzip(b"{\"a\":1}")).unwrap(),
            b"{\"a\":1}"
        );
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(b"zlib").unwrap();
        assert_eq!(
            &*decode(Some("deflate"), &z.finish().unwrap()).unwrap(),
            b"zlib"
        );
        let mut d = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        d.write_all(b"raw").unwrap();
        assert_eq!(
            &*decode(Some("Deflate"), &d.finish().unwrap()).unwrap(),
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
        assert_eq!(&*decode(Some("br"), &br).unwrap(), b"{\"b\":\"brotli\"}");
        let z = zstd::stream::encode_all(&b"zstd body"[..], 3).unwrap();
        assert_eq!(&*decode(Some("zstd"), &z).unwrap(), b"zstd body");
        // Codings apply in order: gzip then br means undo br first.
        let mut gz_then_br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut gz_then_br, 4096, 5, 22);
            w.write_all(&gzip(b"twice")).unwrap();
        }
        assert_eq!(&*decode(Some("gzip, br"), &gz_then_br).unwrap(), b"twice");
        assert!(matches!(
            decode(Some("br"), b"\xff\xff"),
            Err(BodyError::Corrupt { .. })
        ));
    }

    #[test]
    fn corrupt_and_unknown_are_errors() {
        assert!(matches!(
            decode(Some("gzip"), b"not gzip"),
            Err(BodyError::Corrupt { .. })
        ));
        assert_eq!(
            decode(Some("compress"), b"x"),
            Err(BodyError::Unsupported("compress".into())).map(Cow::Owned)
        );
    }

    /// About 1 GiB of zeros in about 1 MiB of gzip: 1024 gzip members of 1 MiB of zeros each
    /// (a gzip body may hold several members, RFC 1952 §2.2, and decoders read them all).
    fn gzip_bomb() -> Vec<u8> {
        let member = gzip(&vec![0u8; 1 << 20]);
        member.repeat(1024)
    }

    #[test]
    fn a_gzip_bomb_is_cut_at_the_limit_without_a_larger_allocation() {
        let bomb = gzip_bomb();
        assert!(bomb.len() < 2 << 20, "{} bytes of gzip", bomb.len());
        let limit = 3 << 20;
        let decoded = decode_content(Some("gzip"), &bomb, limit).unwrap();
        assert!(decoded.truncated);
        assert_eq!(decoded.bytes.len(), limit);
        let Cow::Owned(kept) = decoded.bytes else {
            panic!("decoded bytes are owned");
        };
        assert!(kept.capacity() <= limit, "capacity {}", kept.capacity());
        assert!(kept.iter().all(|b| *b == 0));
    }

    #[test]
    fn every_layer_is_capped_and_a_cut_inner_layer_still_gives_its_start() {
        // br over gzip of incompressible bytes: the brotli layer is cut at the limit, inside
        // the gzip stream, which then ends early; the gzip layer gives what it could decode
        // and says it was cut, rather than failing.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let noise: Vec<u8> = (0..(1 << 20))
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                (state >> 56) as u8
            })
            .collect();
        let mut br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
            w.write_all(&gzip(&noise)).unwrap();
        }
        let limit = 64 * 1024;
        let decoded = decode_content(Some("gzip, br"), &br, limit).unwrap();
        assert!(decoded.truncated);
        assert!(!decoded.bytes.is_empty() && decoded.bytes.len() < limit);
        assert!(noise.starts_with(&decoded.bytes));
        // deflate and zstd the same way.
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&vec![0u8; 8 << 20]).unwrap();
        let zlib = z.finish().unwrap();
        let deflated = decode_content(Some("deflate"), &zlib, limit).unwrap();
        assert!(deflated.truncated);
        assert_eq!(deflated.bytes.len(), limit);
        let zstd = zstd::stream::encode_all(&vec![b' '; 8 << 20][..], 3).unwrap();
        let unzstd = decode_content(Some("zstd"), &zstd, limit).unwrap();
        assert!(unzstd.truncated);
        assert_eq!(unzstd.bytes.len(), limit);
    }

    #[test]
    fn a_body_exactly_at_the_limit_is_not_truncated() {
        let exact = gzip(&[7u8; 1000]);
        let decoded = decode_content(Some("gzip"), &exact, 1000).unwrap();
        assert!(!decoded.truncated);
        assert_eq!(decoded.bytes.len(), 1000);
        let longer = gzip(&[7u8; 1001]);
        let over = decode_content(Some("gzip"), &longer, 1000).unwrap();
        assert!(over.truncated);
        assert_eq!(over.bytes.len(), 1000);
    }
}
