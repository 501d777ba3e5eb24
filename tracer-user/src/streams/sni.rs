//! The server name a TLS client asked for, from its ClientHello (RFC 8446 §4.1.2, RFC 6066 §3).

/// The SNI host name in a TLS record holding a ClientHello, if there is one.
pub fn server_name(record: &[u8]) -> Option<String> {
    let mut r = Reader(record);
    // Record header: type 22 (handshake), version, length.
    if r.u8()? != 22 {
        return None;
    }
    r.skip(4)?;
    // Handshake header: type 1 (ClientHello), 24-bit length.
    if r.u8()? != 1 {
        return None;
    }
    r.skip(3)?;
    r.skip(2 + 32)?; // legacy_version, random
    let session = r.u8()? as usize;
    r.skip(session)?;
    let suites = r.u16()? as usize;
    r.skip(suites)?;
    let compression = r.u8()? as usize;
    r.skip(compression)?;
    let extensions_len = r.u16()? as usize;
    let mut ext = Reader(r.take(extensions_len.min(r.0.len()))?);
    while !ext.0.is_empty() {
        let kind = ext.u16()?;
        let len = ext.u16()? as usize;
        let body = ext.take(len)?;
        if kind == 0 {
            let mut names = Reader(body);
            let list_len = names.u16()? as usize;
            let mut list = Reader(names.take(list_len)?);
            while !list.0.is_empty() {
                let name_type = list.u8()?;
                let name_len = list.u16()? as usize;
                let name = list.take(name_len)?;
                if name_type == 0 {
                    return std::str::from_utf8(name).ok().map(str::to_string);
                }
            }
        }
    }
    None
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello for `host` with one cipher suite and the SNI extension after another one.
    pub fn client_hello(host: &str) -> Vec<u8> {
        let mut sni = Vec::new();
        let name = host.as_bytes();
        sni.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
        sni.push(0);
        sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
        sni.extend_from_slice(name);
        let mut extensions = Vec::new();
        extensions.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]); // ec_point_formats
        extensions.extend_from_slice(&0u16.to_be_bytes());
        extensions.extend_from_slice(&(sni.len() as u16).to_be_bytes());
        extensions.extend_from_slice(&sni);
        let mut hello = vec![0x03, 0x03];
        hello.extend_from_slice(&[7; 32]);
        hello.push(0); // session id
        hello.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]);
        hello.extend_from_slice(&[0x01, 0x00]);
        hello.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        hello.extend_from_slice(&extensions);
        let mut handshake = vec![1];
        handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
        handshake.extend_from_slice(&hello);
        let mut record = vec![22, 3, 1];
        record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
        record.extend_from_slice(&handshake);
        record
    }

    #[test]
    fn finds_the_server_name() {
        assert_eq!(
            server_name(&client_hello("api.openai.com")).as_deref(),
            Some("api.openai.com")
        );
    }

    #[test]
    fn truncated_or_foreign_records_give_none() {
        let hello = client_hello("api.anthropic.com");
        for cut in 0..hello.len() - 1 {
            // Never panics; a cut before the name's end cannot yield it.
            let _ = server_name(&hello[..cut]);
        }
        assert_eq!(server_name(b"GET / HTTP/1.1\\r\\n"), None);
        assert_eq!(server_name(&[]), None);
    }
}
