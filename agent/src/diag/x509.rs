//! Just enough X.509 reading for `licd diag` to show what a broker presented: subject, issuer,
//! validity and the names a certificate is for. Pure DER walking over bytes, no verification
//! (rustls does that) and no dependency: a parse failure only makes the figure vaguer.
//!
//! Why by hand: a maintained parser doing the same costs the firmware binary far more than this
//! file. Measured on aarch64-musl, release profile, text + data (`size`): x509-cert 0.3 (no
//! default features) +54,328 B, x509-parser 0.18 (no default features) +79,552 B (issue 17).
//! Instead the reader is fuzzed (`fuzz/fuzz_targets/x509.rs`; the corpus is replayed on stable
//! by `agent/tests/fuzz_corpus.rs`): any bytes give `None` or a summary, never a panic.

use licd_protocol::UnixTime;
use serde::Serialize;

/// What diag shows of one certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertSummary {
    /// Subject, e.g. `CN=broker.example.com, O=Example`.
    pub subject: String,
    /// Issuer, in the same form.
    pub issuer: String,
    /// Start of validity (unix time).
    pub not_before: UnixTime,
    /// End of validity (unix time).
    pub not_after: UnixTime,
    /// DNS names and IP addresses of the subjectAltName extension.
    pub names: Vec<String>,
}

/// One DER element: tag, content, and what follows it.
fn tlv(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = buf.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The elements of a constructed value's content.
fn children(mut content: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    while !content.is_empty() {
        let (tag, value, rest) = tlv(content)?;
        out.push((tag, value));
        content = rest;
    }
    Some(out)
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_O: &[u8] = &[0x55, 0x04, 0x0a];
const OID_OU: &[u8] = &[0x55, 0x04, 0x0b];
const OID_C: &[u8] = &[0x55, 0x04, 0x06];
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

/// Reads a DER certificate; `None` when it is not one this reader understands.
pub fn summarize(der: &[u8]) -> Option<CertSummary> {
    let (tag, cert, _) = tlv(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut fields = children(tbs)?.into_iter().peekable();
    if fields.peek().is_some_and(|(t, _)| *t == 0xa0) {
        fields.next(); // [0] version
    }
    let _serial = fields.next()?;
    let _signature_alg = fields.next()?;
    let (_, issuer) = fields.next()?;
    let (_, validity) = fields.next()?;
    let (_, subject) = fields.next()?;
    let _spki = fields.next()?;
    let mut names = Vec::new();
    for (tag, value) in fields {
        if tag == 0xa3 {
            names = san_names(value).unwrap_or_default();
        }
    }
    let times = children(validity)?;
    let not_before = parse_time(times.first()?.0, times.first()?.1)?;
    let not_after = parse_time(times.get(1)?.0, times.get(1)?.1)?;
    Some(CertSummary {
        subject: name(subject).unwrap_or_else(|| "?".into()),
        issuer: name(issuer).unwrap_or_else(|| "?".into()),
        not_before,
        not_after,
        names,
    })
}

/// `CN=…, O=…` from a Name (only the attributes a human looks for).
fn name(content: &[u8]) -> Option<String> {
    let mut parts = Vec::new();
    for (tag, set) in children(content)? {
        if tag != SET {
            continue;
        }
        for (_, atv) in children(set)? {
            let kids = children(atv)?;
            let (oid, (_, value)) = (kids.first()?.1, kids.get(1)?);
            let label = match oid {
                OID_CN => "CN",
                OID_O => "O",
                OID_OU => "OU",
                OID_C => "C",
                _ => continue,
            };
            parts.push(format!("{label}={}", String::from_utf8_lossy(value)));
        }
    }
    Some(parts.join(", "))
}

/// DNS names and IP addresses from the extensions (`[3]` wrapper content).
fn san_names(wrapper: &[u8]) -> Option<Vec<String>> {
    let (_, exts, _) = tlv(wrapper)?;
    for (_, ext) in children(exts)? {
        let kids = children(ext)?;
        if kids.first()?.1 != OID_SAN {
            continue;
        }
        // Extension: OID, optional critical BOOLEAN, OCTET STRING holding the SAN sequence.
        let (_, octets) = kids.last()?;
        let (_, seq, _) = tlv(octets)?;
        let mut names = Vec::new();
        for (tag, value) in children(seq)? {
            match (tag, value.len()) {
                (0x82, _) => names.push(String::from_utf8_lossy(value).into_owned()),
                (0x87, 4) => names.push(format!(
                    "{}.{}.{}.{}",
                    value[0], value[1], value[2], value[3]
                )),
                (0x87, 16) => {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(value);
                    names.push(std::net::Ipv6Addr::from(a).to_string());
                }
                _ => {}
            }
        }
        return Some(names);
    }
    Some(Vec::new())
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as unix time.
fn parse_time(tag: u8, value: &[u8]) -> Option<UnixTime> {
    let s = std::str::from_utf8(value).ok()?.strip_suffix('Z')?;
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u8>().ok();
    let (year, rest) = match tag {
        // UTCTime: two-digit years 50-99 are 19xx (RFC 5280 4.1.2.5.1).
        0x17 if s.len() == 12 => {
            let yy = i32::from(num(0..2)?);
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, 2)
        }
        0x18 if s.len() == 14 => (s.get(0..4)?.parse::<i32>().ok()?, 4),
        _ => return None,
    };
    crate::status::utc_time(
        year,
        num(rest..rest + 2)?,
        num(rest + 2..rest + 4)?,
        num(rest + 4..rest + 6)?,
        num(rest + 6..rest + 8)?,
        num(rest + 8..rest + 10)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The self-signed fixture of `tls.rs`'s tests (CN "licd tls.rs fixture", SAN
    /// fixture.licd.test, valid 1975–4096), as DER.
    const FIXTURE_B64: &str = "MIIBYDCCAQagAwIBAgIUDQkH3PTE/S65viHQowe3wSkziZIwCgYIKoZIzj0EAwIwHjEcMBoGA1UEAwwTbGljZCB0bHMucnMgZml4dHVyZTAgFw03NTAxMDEwMDAwMDBaGA80MDk2MDEwMTAwMDAwMFowHjEcMBoGA1UEAwwTbGljZCB0bHMucnMgZml4dHVyZTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABLvIcAnLw/ziqPjguMcom5jBc82KH8nyX2x4dwIXWEfAqSkUlgzLG7hhhCY0pY1GGedKXpuSUTPS5bEdKQqJY4+jIDAeMBwGA1UdEQQVMBOCEWZpeHR1cmUubGljZC50ZXN0MAoGCCqGSM49BAMCA0gAMEUCIQDXJWvS19kgkrh0guyIhPnKCFtB5NO8lCD/WXEDUky95AIgby1CrNavjjww2TmwGj+TaZcMrkDUki+X3z/EOTFCX34=";

    /// An openssl-made broker certificate (`openssl req -x509 -newkey ec -subj
    /// "/C=DE/O=Example Org/OU=Lab/CN=broker.example" -addext
    /// "subjectAltName=DNS:broker.example,IP:192.0.2.7,IP:2001:db8::1" -days 3650`): every
    /// attribute diag names, and IP addresses of both families among the names.
    const BROKER_B64: &str = "MIICHjCCAcSgAwIBAgIUVuQItESyXcdo3mR8bkTkLnb5JvQwCgYIKoZIzj0EAwIwSjELMAkGA1UEBhMCREUxFDASBgNVBAoMC0V4YW1wbGUgT3JnMQwwCgYDVQQLDANMYWIxFzAVBgNVBAMMDmJyb2tlci5leGFtcGxlMB4XDTI2MTIwNDEzMDcyOFoXDTM2MTIwMTEzMDcyOFowSjELMAkGA1UEBhMCREUxFDASBgNVBAoMC0V4YW1wbGUgT3JnMQwwCgYDVQQLDANMYWIxFzAVBgNVBAMMDmJyb2tlci5leGFtcGxlMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEs3Pq+TR84TqBT1zn9JiEXb1FQTHQVjEOr9u/BJ0BUCEzm/6JGO3J3gcB0OmHuz26hS/Bv2gWjBRyOsDbcHiiQ6OBhzCBhDAdBgNVHQ4EFgQU9GD1XSuYb4sOq3fYDT+z1YDYDlIwHwYDVR0jBBgwFoAU9GD1XSuYb4sOq3fYDT+z1YDYDlIwDwYDVR0TAQH/BAUwAwEB/zAxBgNVHREEKjAogg5icm9rZXIuZXhhbXBsZYcEwAACB4cQIAENuAAAAAAAAAAAAAAAATAKBggqhkjOPQQDAgNIADBFAiEA+SB4EZt+JjpypoX83B+hQCOE90V+otRCIFfsv3GDzGICIA1Y5t1GuTo/7VR43AQxvRF87KL3PCwftunCM2grkpT+";

    fn b64(s: &str) -> Vec<u8> {
        let val = |c: u8| -> u32 {
            match c {
                b'A'..=b'Z' => u32::from(c - b'A'),
                b'a'..=b'z' => u32::from(c - b'a') + 26,
                b'0'..=b'9' => u32::from(c - b'0') + 52,
                b'+' => 62,
                _ => 63,
            }
        };
        let mut out = Vec::new();
        let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
        for chunk in bytes.chunks(4) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, &c)| acc | (val(c) << (18 - 6 * i)));
            let k = chunk.len() * 6 / 8;
            out.extend_from_slice(&n.to_be_bytes()[1..1 + k]);
        }
        out
    }

    #[test]
    fn the_fixture_certificate_reads_subject_validity_and_names() {
        let s = summarize(&b64(FIXTURE_B64)).expect("parses");
        assert_eq!(s.subject, "CN=licd tls.rs fixture");
        assert_eq!(s.issuer, "CN=licd tls.rs fixture");
        assert_eq!(s.not_before, 157_766_400); // 1975-01-01
        assert_eq!(crate::status::fmt_time(s.not_after), "4096-01-01T00:00:00Z");
        assert_eq!(s.names, vec!["fixture.licd.test".to_string()]);
    }

    #[test]
    fn a_broker_certificate_reads_its_name_attributes_in_order_and_ip_names() {
        let s = summarize(&b64(BROKER_B64)).expect("parses");
        assert_eq!(s.subject, "C=DE, O=Example Org, OU=Lab, CN=broker.example");
        assert_eq!(s.issuer, s.subject);
        assert_eq!(s.not_before, 1_796_389_648); // 2026-12-04T13:07:28Z
        assert_eq!(s.not_after, 2_111_749_648); // 2036-12-01T13:07:28Z
        assert_eq!(s.names, ["broker.example", "192.0.2.7", "2001:db8::1"]);
    }

    #[test]
    fn garbage_and_truncation_are_none_not_a_panic() {
        let der = b64(FIXTURE_B64);
        for cut in 0..der.len() {
            let _ = summarize(&der[..cut]);
        }
        assert_eq!(summarize(b"\x30\x84\xff\xff\xff\xff"), None);
        assert_eq!(summarize(b""), None);
    }

    #[test]
    fn times_in_both_encodings() {
        assert_eq!(parse_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(parse_time(0x17, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(parse_time(0x18, b"20270115080000Z"), Some(1_800_000_000));
        assert_eq!(parse_time(0x18, b"2027011508000Z"), None);
        assert_eq!(parse_time(0x17, b"701301000000Z"), None);
        // Dates that do not exist are refused, not rolled over into the next month.
        assert_eq!(parse_time(0x18, b"20270231000000Z"), None);
        assert_eq!(parse_time(0x17, b"270431000000Z"), None);
        assert_eq!(parse_time(0x18, b"20280229000000Z"), Some(1_835_395_200));
        assert_eq!(parse_time(0x18, b"2027+115080000Z"), None);
    }
}
