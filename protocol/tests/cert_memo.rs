//! The certificate memo saves one signature check per bundle and nothing else: a different
//! certificate is verified again, and revocation and the validity window are checked each time.

use ed25519_dalek::SigningKey;
use licd_protocol::envelope::{open_bundle_memo, seal_bundle};
use licd_protocol::{
    CertMemo, DeviceId, Error, GrantBundle, PublicKey, SignerCertificate, TenantId, TrustStore,
};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn bundle(seq: u64) -> GrantBundle {
    GrantBundle {
        device: DeviceId::new("ap-1").expect("valid id"),
        device_key: PublicKey([9; 32]).id(),
        tenant: TenantId::new("acme").expect("valid id"),
        seq,
        issued_at: 1_000,
        refresh_after: 1_500,
        grants: vec![],
        withheld: vec![],
    }
}

#[test]
fn the_memo_skips_only_the_same_certificate_and_still_checks_revocation_and_validity() {
    let root = key(1);
    let signing = key(2);
    let cert = SignerCertificate::issue(&root, PublicKey::from(&signing.verifying_key()), 0, 2_000);
    let mut trust = TrustStore::new(vec![PublicKey::from(&root.verifying_key())]);
    let mut memo = CertMemo::default();

    let first = seal_bundle(&bundle(1), &signing, &cert);
    assert!(open_bundle_memo(&first, &trust, 1_000, &mut memo).is_ok());
    let second = seal_bundle(&bundle(2), &signing, &cert);
    assert!(open_bundle_memo(&second, &trust, 1_000, &mut memo).is_ok());

    // Same key, certificate with a forged signature: verified again, and refused.
    let mut forged = cert.to_bytes();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let forged = SignerCertificate::parse(&forged).unwrap();
    let raw = seal_bundle(&bundle(3), &signing, &forged);
    assert_eq!(
        open_bundle_memo(&raw, &trust, 1_000, &mut memo).unwrap_err(),
        Error::BadCertificateSignature
    );

    // The memo does not outlive the validity window or a revocation.
    assert!(matches!(
        open_bundle_memo(&second, &trust, 2_000, &mut memo),
        Err(Error::CertificateExpired { .. })
    ));
    trust.revoke(PublicKey::from(&signing.verifying_key()).id());
    assert!(matches!(
        open_bundle_memo(&second, &trust, 1_000, &mut memo),
        Err(Error::SignerRevoked(_))
    ));
}
