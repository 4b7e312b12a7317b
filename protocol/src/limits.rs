//! Hard limits of protocol v1. They are checked before any decoding so that a hostile peer
//! cannot make a device allocate or work in proportion to what it sends.

/// Largest envelope accepted, checked before anything else is parsed. A 5-service bundle is
/// 584 bytes with its certificate; 64 KiB leaves room for 64 services with certificates and long texts.
pub const MAX_ENVELOPE_LEN: usize = 64 * 1024;

/// Largest certificate field inside an envelope: a 145-byte certificate, or one followed by a
/// site delegation (at most 83 + 1,261 + 64 bytes with [`MAX_DELEGATED_SERVICES`] services
/// and the longest ids).
pub const MAX_CERT_LEN: usize = 2048;

/// Most services one site delegation may name.
pub const MAX_DELEGATED_SERVICES: usize = 16;

/// Most leases one relay report may carry (a relay sends more in several reports): at most
/// about 170 bytes each with the longest ids, well within the envelope limit.
pub const MAX_RELAY_REPORT_LEASES: usize = 256;

/// Most services one bundle may grant (and one report may ask for).
pub const MAX_SERVICES: usize = 64;

/// Longest free-text field (model, serial, product class, versions).
pub const MAX_TEXT_LEN: usize = 128;

/// Longest identifier (tenant, device, service, SKU, license id).
pub const MAX_ID_LEN: usize = 64;

/// Most signing-key ids one revocation list may name (16 bytes each: 16 KiB at most, well
/// within [`MAX_ENVELOPE_LEN`]).
pub const MAX_REVOKED: usize = 1024;

/// Most expiring-soon thresholds one service policy may carry (Cisco warns at two; eight
/// leaves room for a daily countdown over the last week).
pub const MAX_WARN_THRESHOLDS: usize = 8;

/// Largest overage tolerance, in percent of the VM allowance (ten times the allowance): a
/// larger one is a controller bug, not a policy.
pub const MAX_OVERAGE_TOLERANCE_PCT: u32 = 1_000;
