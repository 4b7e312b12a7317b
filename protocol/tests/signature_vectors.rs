//! Published Ed25519 test vectors run through `licd_protocol::keys::verify_strict`, the one
//! signature check both the envelope and the certificate paths use:
//!
//! - RFC 8032 section 7.1 (TEST 1, 2, 3, 1024, SHA(abc)): each verifies, and each single-bit
//!   flip of the key, the message or the signature is refused;
//! - Project Wycheproof's 151 Ed25519 cases, read at test time from
//!   `../shared/vectors/wycheproof-ed25519_test.json` (relative to the workspace root): every
//!   `invalid` case refused, every `valid` one accepted.

use std::path::PathBuf;

use ed25519_dalek::SigningKey;
use licd_protocol::keys::verify_strict;
use serde::Deserialize;

struct Rfc8032 {
    name: &'static str,
    secret: &'static str,
    public: &'static str,
    message: &'static str,
    signature: &'static str,
}

/// RFC 8032 section 7.1, copied from the RFC text (TEST 1024's message is 1023 bytes).
const RFC8032: &[Rfc8032] = &[
    Rfc8032 {
        name: "TEST 1",
        secret: "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        public: "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        message: "",
        signature: "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
                    5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    },
    Rfc8032 {
        name: "TEST 2",
        secret: "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        public: "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        message: "72",
        signature: "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
                    085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    },
    Rfc8032 {
        name: "TEST 3",
        secret: "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        public: "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        message: "af82",
        signature: "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac\
                    18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    },
    Rfc8032 {
        name: "TEST 1024",
        secret: "f5e5767cf153319517630f226876b86c8160cc583bc013744c6bf255f5cc0ee5",
        public: "278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e",
        message: "08b8b2b733424243760fe426a4b54908632110a66c2f6591eabd3345e3e4eb98\
                  fa6e264bf09efe12ee50f8f54e9f77b1e355f6c50544e23fb1433ddf73be84d8\
                  79de7c0046dc4996d9e773f4bc9efe5738829adb26c81b37c93a1b270b20329d\
                  658675fc6ea534e0810a4432826bf58c941efb65d57a338bbd2e26640f89ffbc\
                  1a858efcb8550ee3a5e1998bd177e93a7363c344fe6b199ee5d02e82d522c4fe\
                  ba15452f80288a821a579116ec6dad2b3b310da903401aa62100ab5d1a36553e\
                  06203b33890cc9b832f79ef80560ccb9a39ce767967ed628c6ad573cb116dbef\
                  efd75499da96bd68a8a97b928a8bbc103b6621fcde2beca1231d206be6cd9ec7\
                  aff6f6c94fcd7204ed3455c68c83f4a41da4af2b74ef5c53f1d8ac70bdcb7ed1\
                  85ce81bd84359d44254d95629e9855a94a7c1958d1f8ada5d0532ed8a5aa3fb2\
                  d17ba70eb6248e594e1a2297acbbb39d502f1a8c6eb6f1ce22b3de1a1f40cc24\
                  554119a831a9aad6079cad88425de6bde1a9187ebb6092cf67bf2b13fd65f270\
                  88d78b7e883c8759d2c4f5c65adb7553878ad575f9fad878e80a0c9ba63bcbcc\
                  2732e69485bbc9c90bfbd62481d9089beccf80cfe2df16a2cf65bd92dd597b07\
                  07e0917af48bbb75fed413d238f5555a7a569d80c3414a8d0859dc65a46128ba\
                  b27af87a71314f318c782b23ebfe808b82b0ce26401d2e22f04d83d1255dc51a\
                  ddd3b75a2b1ae0784504df543af8969be3ea7082ff7fc9888c144da2af58429e\
                  c96031dbcad3dad9af0dcbaaaf268cb8fcffead94f3c7ca495e056a9b47acdb7\
                  51fb73e666c6c655ade8297297d07ad1ba5e43f1bca32301651339e22904cc8c\
                  42f58c30c04aafdb038dda0847dd988dcda6f3bfd15c4b4c4525004aa06eeff8\
                  ca61783aacec57fb3d1f92b0fe2fd1a85f6724517b65e614ad6808d6f6ee34df\
                  f7310fdc82aebfd904b01e1dc54b2927094b2db68d6f903b68401adebf5a7e08\
                  d78ff4ef5d63653a65040cf9bfd4aca7984a74d37145986780fc0b16ac451649\
                  de6188a7dbdf191f64b5fc5e2ab47b57f7f7276cd419c17a3ca8e1b939ae49e4\
                  88acba6b965610b5480109c8b17b80e1b7b750dfc7598d5d5011fd2dcc5600a3\
                  2ef5b52a1ecc820e308aa342721aac0943bf6686b64b2579376504ccc493d97e\
                  6aed3fb0f9cd71a43dd497f01f17c0e2cb3797aa2a2f256656168e6c496afc5f\
                  b93246f6b1116398a346f1a641f3b041e989f7914f90cc2c7fff357876e506b5\
                  0d334ba77c225bc307ba537152f3f1610e4eafe595f6d9d90d11faa933a15ef1\
                  369546868a7f3a45a96768d40fd9d03412c091c6315cf4fde7cb68606937380d\
                  b2eaaa707b4c4185c32eddcdd306705e4dc1ffc872eeee475a64dfac86aba41c\
                  0618983f8741c5ef68d3a101e8a3b8cac60c905c15fc910840b94c00a0b9d0",
        signature: "0aab4c900501b3e24d7cdf4663326a3a87df5e4843b2cbdb67cbf6e460fec350\
                    aa5371b1508f9f4528ecea23c436d94b5e8fcd4f681e30a6ac00a9704a188a03",
    },
    Rfc8032 {
        name: "TEST SHA(abc)",
        secret: "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        public: "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        message: "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
                  2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        signature: "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589\
                    09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
    },
];

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("test vector is hex")
}

#[test]
fn rfc8032_section_7_1_vectors_verify_and_the_secret_keys_reproduce_them() {
    for v in RFC8032 {
        let (public, message, signature) = (unhex(v.public), unhex(v.message), unhex(v.signature));
        verify_strict(&public, &message, &signature)
            .unwrap_or_else(|e| panic!("{}: refused: {e}", v.name));
        // Signing is deterministic: the secret key gives exactly the RFC's key and signature.
        let secret: [u8; 32] = unhex(v.secret).try_into().expect("32 bytes");
        let key = SigningKey::from_bytes(&secret);
        assert_eq!(
            key.verifying_key().to_bytes().to_vec(),
            public,
            "{}",
            v.name
        );
        use ed25519_dalek::Signer;
        assert_eq!(
            key.sign(&message).to_bytes().to_vec(),
            signature,
            "{}",
            v.name
        );
    }
    assert_eq!(unhex(RFC8032[3].message).len(), 1023, "TEST 1024's message");
}

#[test]
fn rfc8032_vectors_are_refused_after_any_single_bit_flip() {
    for v in RFC8032 {
        let (public, message, signature) = (unhex(v.public), unhex(v.message), unhex(v.signature));
        // Debug-build verification costs milliseconds, so a deterministic sample of bits:
        // every 7th bit of the key and the signature (all 8 bytes covered at shifting bit
        // positions), plus the top bits of `s`; every bit of short messages, a stride of
        // TEST 1024's.
        let flip = |bytes: &[u8], bit: usize| {
            let mut b = bytes.to_vec();
            b[bit / 8] ^= 1 << (bit % 8);
            b
        };
        for bit in (0..256).step_by(7).chain([255]) {
            assert!(
                verify_strict(&flip(&public, bit), &message, &signature).is_err(),
                "{}: key bit {bit} flipped still verifies",
                v.name
            );
        }
        for bit in (0..512).step_by(7).chain(504..512) {
            assert_eq!(
                verify_strict(&public, &message, &flip(&signature, bit)),
                Err(licd_protocol::Error::BadSignature),
                "{}: signature bit {bit}",
                v.name
            );
        }
        let bits = message.len() * 8;
        for bit in (0..bits)
            .step_by(bits.div_ceil(24).max(1))
            .chain(bits.checked_sub(1))
        {
            assert_eq!(
                verify_strict(&public, &flip(&message, bit), &signature),
                Err(licd_protocol::Error::BadSignature),
                "{}: message bit {bit}",
                v.name
            );
        }
        // A message one byte longer or shorter is another message.
        let mut longer = message.clone();
        longer.push(0);
        assert!(verify_strict(&public, &longer, &signature).is_err());
        if !message.is_empty() {
            assert!(verify_strict(&public, &message[..message.len() - 1], &signature).is_err());
        }
        // Wrong lengths are refused, not truncated or padded.
        assert!(verify_strict(&public, &message, &signature[..63]).is_err());
        let mut padded = signature.clone();
        padded.push(0);
        assert!(verify_strict(&public, &message, &padded).is_err());
        assert!(verify_strict(&public[..31], &message, &signature).is_err());
    }
}

#[derive(Deserialize)]
struct Wycheproof {
    #[serde(rename = "numberOfTests")]
    number_of_tests: usize,
    #[serde(rename = "testGroups")]
    groups: Vec<Group>,
}

#[derive(Deserialize)]
struct Group {
    #[serde(rename = "publicKey")]
    public_key: GroupKey,
    tests: Vec<Case>,
}

#[derive(Deserialize)]
struct GroupKey {
    pk: String,
}

#[derive(Deserialize)]
struct Case {
    #[serde(rename = "tcId")]
    id: u32,
    comment: String,
    flags: Vec<String>,
    msg: String,
    sig: String,
    result: String,
}

fn wycheproof_path() -> PathBuf {
    // protocol/ → workspace root → its parent, where `shared/` lives.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/vectors/wycheproof-ed25519_test.json")
}

#[test]
fn wycheproof_ed25519_every_invalid_case_is_refused_and_every_valid_one_accepted() {
    let path = wycheproof_path();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!(
            "CI=true and the Wycheproof vectors are missing at {}: {e}",
            path.display()
        ),
        Err(e) => {
            eprintln!(
                "SKIPPED: Wycheproof Ed25519 vectors not found at {} ({e}); they are expected \
                 at ../shared/vectors/wycheproof-ed25519_test.json next to the workspace \
                 (see shared/vectors/README.md). With CI=true this is a failure.",
                path.display()
            );
            return;
        }
    };
    let file: Wycheproof = serde_json::from_str(&text).expect("Wycheproof JSON");
    let (mut valid, mut invalid, mut failures) = (0usize, 0usize, Vec::new());
    for group in &file.groups {
        let pk = unhex(&group.public_key.pk);
        for case in &group.tests {
            let outcome = verify_strict(&pk, &unhex(&case.msg), &unhex(&case.sig));
            let ok = match case.result.as_str() {
                "valid" => {
                    valid += 1;
                    outcome.is_ok()
                }
                "invalid" => {
                    invalid += 1;
                    outcome.is_err()
                }
                other => panic!("tcId {}: unexpected result {other:?}", case.id),
            };
            if !ok {
                failures.push(format!(
                    "tcId {} ({}; {:?}) expected {}, got {:?}",
                    case.id, case.comment, case.flags, case.result, outcome
                ));
            }
        }
    }
    println!("Wycheproof Ed25519: {valid} valid accepted / {invalid} invalid refused checked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(valid + invalid, file.number_of_tests);
    assert_eq!((valid, invalid), (88, 63), "(valid, invalid) case counts");
}
