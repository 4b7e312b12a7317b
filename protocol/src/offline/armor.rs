//! Armor: an envelope as short lines of text, for a serial console, an e-mail or a web form.
//!
//! ```text
//! -----BEGIN LICD GRANT-----
//! AQKgmqX0…                         base64 (RFC 4648, padded), 64 characters a line
//! …
//! =1a2b3c4d                         checksum: the first 4 bytes of SHA-256 of the binary, hex
//! -----END LICD GRANT-----
//! ```
//!
//! The label (`REQUEST`, `GRANT`, `RELEASE`, `TRUST`, `DIAG`, `DELEGATION`, `RELAY`) follows the envelope's kind
//! byte ([`super::label`]); the decoder refuses a label that does not match it. The checksum
//! catches a mangled copy before the signature check would (with a message that says so); it
//! is not a security measure — the signature is. Blank lines before the header and after the
//! footer and `\r` line ends are allowed; anything else is refused with the line it is on.

use alloc::string::String;
use alloc::vec::Vec;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::envelope::MessageKind;
use crate::error::Error;
use crate::limits::MAX_ENVELOPE_LEN;

/// Start of every header line.
pub const BEGIN: &[u8] = b"-----BEGIN LICD ";
/// Start of every footer line.
const END: &str = "-----END LICD ";
/// End of header and footer lines.
const DASHES: &str = "-----";
/// Base64 characters per body line written.
pub const LINE_LEN: usize = 64;
/// Longest body line read (76: MIME's wrap, for text that went through a mailer).
pub const MAX_LINE_LEN: usize = 76;
/// Largest armored text read: the largest envelope in base64 with a line end every 64
/// characters, plus header, checksum and footer, plus slack for blank lines and `\r`.
pub const MAX_ARMOR_LEN: usize = MAX_ENVELOPE_LEN / 3 * 4 * 66 / 64 + 1024;

/// Why an armored text was refused. Line numbers start at 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArmorError {
    /// Longer than [`MAX_ARMOR_LEN`].
    #[error("armored text of {len} bytes is over the {max}-byte limit")]
    Oversized {
        /// Bytes received.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Not UTF-8 text.
    #[error("armored text is not UTF-8")]
    NotText,
    /// The first non-blank line is not `-----BEGIN LICD <LABEL>-----`.
    #[error("line {line}: expected the header \"-----BEGIN LICD <LABEL>-----\"")]
    NoHeader {
        /// Line number.
        line: usize,
    },
    /// A label this build does not know.
    #[error("line {line}: unknown label in the header")]
    UnknownLabel {
        /// Line number.
        line: usize,
    },
    /// A body line longer than [`MAX_LINE_LEN`].
    #[error("line {line}: longer than {MAX_LINE_LEN} characters")]
    LineTooLong {
        /// Line number.
        line: usize,
    },
    /// A body line with a character that is not base64.
    #[error("line {line}: not base64")]
    BadBase64 {
        /// Line number.
        line: usize,
    },
    /// The base64 body does not decode (bad length or padding).
    #[error("the base64 body does not decode (cut short or padded wrongly)")]
    BadBody,
    /// No `=xxxxxxxx` checksum line before the footer, or a malformed one.
    #[error("line {line}: expected the checksum line \"=\" and 8 hex digits")]
    NoChecksum {
        /// Line number.
        line: usize,
    },
    /// The text ends before the footer.
    #[error("no footer \"-----END LICD <LABEL>-----\": the text is cut short")]
    NoFooter,
    /// The footer's label differs from the header's.
    #[error("line {line}: the footer does not match the header")]
    FooterMismatch {
        /// Line number.
        line: usize,
    },
    /// Something other than blank lines after the footer.
    #[error("line {line}: text after the footer")]
    TrailingText {
        /// Line number.
        line: usize,
    },
    /// The checksum does not match the decoded bytes: the text was changed or mis-copied.
    #[error("checksum mismatch: the text says {stated}, the content gives {computed} (changed or mis-copied)")]
    BadChecksum {
        /// Checksum in the text (hex).
        stated: String,
        /// Checksum of the decoded bytes (hex).
        computed: String,
    },
    /// The label does not match the envelope's kind.
    #[error("the label says {label}, but the content is a {content} file")]
    LabelMismatch {
        /// Label in the header.
        label: &'static str,
        /// Label of the content's kind.
        content: &'static str,
    },
}

const LABELS: [&str; 7] = [
    "REQUEST",
    "GRANT",
    "RELEASE",
    "TRUST",
    "DIAG",
    "DELEGATION",
    "RELAY",
];

fn checksum(bytes: &[u8]) -> String {
    hex4(&Sha256::digest(bytes)[..4])
}

fn hex4(b: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(8);
    for x in b {
        s.push(HEX[(x >> 4) as usize] as char);
        s.push(HEX[(x & 15) as usize] as char);
    }
    s
}

/// Armors an envelope. Errors only when `bytes` is not an envelope whose kind gives a label
/// (the kind byte is read; nothing is verified).
pub fn armor(bytes: &[u8]) -> Result<String, Error> {
    let kind = MessageKind::from_byte(*bytes.get(1).ok_or(Error::Truncated("missing kind byte"))?)?;
    let label = super::label(kind);
    let body = STANDARD.encode(bytes);
    let mut out = String::with_capacity(body.len() + body.len() / LINE_LEN + 80);
    out.push_str("-----BEGIN LICD ");
    out.push_str(label);
    out.push_str("-----\n");
    for chunk in body.as_bytes().chunks(LINE_LEN) {
        // base64 output is ASCII.
        out.push_str(core::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push('=');
    out.push_str(&checksum(bytes));
    out.push('\n');
    out.push_str(END);
    out.push_str(label);
    out.push_str("-----\n");
    Ok(out)
}

fn parse_label(line: &str, prefix: &str) -> Option<&'static str> {
    let label = line.strip_prefix(prefix)?.strip_suffix(DASHES)?;
    LABELS.iter().copied().find(|l| *l == label)
}

/// Decodes an armored text to the envelope bytes it carries: header, base64 body, checksum,
/// footer, then the label against the content's kind byte. The envelope itself is not parsed.
pub fn dearmor(text: &[u8]) -> Result<Vec<u8>, Error> {
    if text.len() > MAX_ARMOR_LEN {
        return Err(ArmorError::Oversized {
            len: text.len(),
            max: MAX_ARMOR_LEN,
        }
        .into());
    }
    let text = core::str::from_utf8(text).map_err(|_| ArmorError::NotText)?;
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .skip_while(|(_, l)| l.trim().is_empty());
    let (n, header) = lines.next().ok_or(ArmorError::NoHeader { line: 1 })?;
    let header = header.trim_end();
    if !header.as_bytes().starts_with(BEGIN) || !header.ends_with(DASHES) {
        return Err(ArmorError::NoHeader { line: n }.into());
    }
    let label =
        parse_label(header, "-----BEGIN LICD ").ok_or(ArmorError::UnknownLabel { line: n })?;
    let mut body = String::new();
    let stated = loop {
        let (n, line) = lines.next().ok_or(ArmorError::NoFooter)?;
        let line = line.trim_end();
        if let Some(sum) = line.strip_prefix('=') {
            if sum.len() != 8 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ArmorError::NoChecksum { line: n }.into());
            }
            break sum.to_ascii_lowercase();
        }
        if line.starts_with(END) {
            return Err(ArmorError::NoChecksum { line: n }.into());
        }
        if line.len() > MAX_LINE_LEN {
            return Err(ArmorError::LineTooLong { line: n }.into());
        }
        // `=` only as padding at the end of the body, which STANDARD checks on decoding.
        if !line
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
        {
            return Err(ArmorError::BadBase64 { line: n }.into());
        }
        body.push_str(line);
    };
    let (n, footer) = lines.next().ok_or(ArmorError::NoFooter)?;
    match parse_label(footer.trim_end(), END) {
        Some(l) if l == label => {}
        Some(_) => return Err(ArmorError::FooterMismatch { line: n }.into()),
        None if footer.trim().is_empty() => return Err(ArmorError::NoFooter.into()),
        None => return Err(ArmorError::FooterMismatch { line: n }.into()),
    }
    if let Some((n, _)) = lines.find(|(_, l)| !l.trim().is_empty()) {
        return Err(ArmorError::TrailingText { line: n }.into());
    }
    let bytes = STANDARD
        .decode(body.as_bytes())
        .map_err(|_| ArmorError::BadBody)?;
    let computed = checksum(&bytes);
    if computed != stated {
        return Err(ArmorError::BadChecksum { stated, computed }.into());
    }
    if let Some(kind) = bytes.get(1).and_then(|b| MessageKind::from_byte(*b).ok()) {
        let content = super::label(kind);
        if content != label {
            return Err(ArmorError::LabelMismatch { label, content }.into());
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use alloc::format;
    use alloc::string::ToString;
    use alloc::vec;

    fn grant_like(len: usize) -> Vec<u8> {
        let mut v = vec![1u8, 2];
        v.extend((0..len).map(|i| i as u8));
        v
    }

    fn err(text: &str) -> ArmorError {
        match dearmor(text.as_bytes()) {
            Err(Error::Armor(e)) => e,
            other => panic!("expected an armor error, got {other:?}"),
        }
    }

    #[test]
    fn armor_round_trips_with_64_character_lines() {
        for len in [0, 1, 2, 3, 46, 47, 48, 600, 5000] {
            let bytes = grant_like(len);
            let text = armor(&bytes).unwrap();
            assert!(text.starts_with("-----BEGIN LICD GRANT-----\n"));
            assert!(text.ends_with("-----END LICD GRANT-----\n"));
            assert!(text.lines().all(|l| l.len() <= LINE_LEN), "{text}");
            assert_eq!(dearmor(text.as_bytes()).unwrap(), bytes);
            let crlf = text.replace('\n', "\r\n");
            assert_eq!(dearmor(crlf.as_bytes()).unwrap(), bytes);
        }
    }

    #[test]
    fn a_changed_character_is_a_checksum_mismatch() {
        let text = armor(&grant_like(100)).unwrap();
        let mut lines: Vec<String> = text.lines().map(|l| l.to_string()).collect();
        let first = lines[1].clone();
        let c = if first.starts_with('A') { "B" } else { "A" };
        lines[1] = format!("{c}{}", &first[1..]);
        let changed = lines.join("\n");
        assert!(matches!(err(&changed), ArmorError::BadChecksum { .. }));
    }

    #[test]
    fn garbage_is_refused_with_the_line_at_fault() {
        let good = armor(&grant_like(100)).unwrap();
        assert_eq!(err(""), ArmorError::NoHeader { line: 1 });
        assert_eq!(err("hello\n"), ArmorError::NoHeader { line: 1 });
        assert_eq!(
            err("-----BEGIN LICD PONY-----\n"),
            ArmorError::UnknownLabel { line: 1 }
        );
        let cut: String = good.lines().take(2).map(|l| format!("{l}\n")).collect();
        assert_eq!(err(&cut), ArmorError::NoFooter);
        let no_sum: String = good
            .lines()
            .filter(|l| !l.starts_with('='))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(matches!(err(&no_sum), ArmorError::NoChecksum { .. }));
        let bad_char = good.replacen('\n', "\n*", 1);
        assert_eq!(err(&bad_char), ArmorError::BadBase64 { line: 2 });
        let long = good.replacen('\n', &format!("\n{}", "A".repeat(80)), 1);
        assert_eq!(err(&long), ArmorError::LineTooLong { line: 2 });
        let other_footer = good.replace("END LICD GRANT", "END LICD TRUST");
        assert!(matches!(
            err(&other_footer),
            ArmorError::FooterMismatch { .. }
        ));
        let trailing = format!("{good}\nP.S. hi\n");
        assert!(matches!(err(&trailing), ArmorError::TrailingText { .. }));
        let relabeled = good
            .replace("BEGIN LICD GRANT", "BEGIN LICD RELEASE")
            .replace("END LICD GRANT", "END LICD RELEASE");
        assert_eq!(
            err(&relabeled),
            ArmorError::LabelMismatch {
                label: "RELEASE",
                content: "GRANT"
            }
        );
        assert!(matches!(
            dearmor(&vec![b'A'; MAX_ARMOR_LEN + 1]),
            Err(Error::Armor(ArmorError::Oversized { .. }))
        ));
        assert_eq!(
            dearmor(b"-----BEGIN LICD GRANT-----\n\xff\n"),
            Err(Error::Armor(ArmorError::NotText))
        );
    }

    #[test]
    fn the_largest_envelope_armored_fits_the_armor_limit() {
        let text = armor(&grant_like(MAX_ENVELOPE_LEN - 2)).unwrap();
        assert!(
            text.len() <= MAX_ARMOR_LEN,
            "{} > {MAX_ARMOR_LEN}",
            text.len()
        );
        assert_eq!(dearmor(text.as_bytes()).unwrap().len(), MAX_ENVELOPE_LEN);
    }
}
