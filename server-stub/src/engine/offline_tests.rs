//! Licensing by file in the engine: requests answered with the offline lease, receipts that
//! free seats once, replays and forgeries refused, the history kept.

use ed25519_dalek::SigningKey;
use licd_protocol::offline::seal_release_receipt;
use licd_protocol::{ActivationRequest, PublicKey, ReleaseReceipt};

use super::offline::OfflineRefused;
use super::tests::{add_sub, fixture, report, svc, t, T0};
use super::*;

fn device_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn request(device: &str, seed: u8, nonce: u8) -> ActivationRequest {
    let mut r = report("a", device, "ap", &["wifi"]);
    r.device_key = PublicKey::from(&device_key(seed).verifying_key());
    ActivationRequest {
        report: r,
        nonce: [nonce; 16],
    }
}

fn receipt(device: &str, seed: u8, seq: u64, nonce: u8) -> Vec<u8> {
    let r = ReleaseReceipt {
        device: device.parse().unwrap(),
        tenant: t("a"),
        bundle_seq: seq,
        services: vec![svc("wifi")],
        released_at: T0,
        nonce: [nonce; 16],
    };
    seal_release_receipt(&r, &device_key(seed))
}

/// One seat of wifi, auto-licensing on for every customer.
fn one_seat() -> Engine {
    let mut e = fixture();
    let _ = add_sub(&mut e, "S1", "msp", "LIC-AP", 1);
    let _ = e
        .enable_auto_licensing(&Selection::all(), &[svc("wifi")], false, T0)
        .unwrap();
    e
}

#[test]
fn a_request_is_answered_with_the_offline_lease_and_the_device_is_marked_offline() {
    let mut e = one_seat();
    let (b, fx) = e.handle_offline_request(&request("ap1", 1, 1), T0).unwrap();
    assert_eq!(b.seq, 1);
    assert_eq!(b.grants[0].lease_until, T0 + 90 * DAY);
    assert!(fx.publish.iter().any(|x| x.seq == 1));
    let d = &e.state().devices[&(t("a"), "ap1".parse().unwrap())];
    assert!(d.offline.offline);
    assert!(d.offline.history[0]
        .event
        .starts_with("granted by file: seq 1, wifi (S1/LIC-AP)"));
    // Renewal: a new request carrying seq 1 gets seq 2 even though nothing changed.
    let mut renew = request("ap1", 1, 2);
    renew.report.bundle_seq = 1;
    let (b2, _) = e.handle_offline_request(&renew, T0 + 60).unwrap();
    assert_eq!(b2.seq, 2);
}

#[test]
fn a_replayed_request_or_one_signed_by_another_key_is_refused() {
    let mut e = one_seat();
    let _ = e.handle_offline_request(&request("ap1", 1, 1), T0).unwrap();
    assert_eq!(
        e.handle_offline_request(&request("ap1", 1, 1), T0 + 1)
            .unwrap_err(),
        OfflineRefused::ReplayedRequest
    );
    assert!(matches!(
        e.handle_offline_request(&request("ap1", 9, 3), T0 + 1)
            .unwrap_err(),
        OfflineRefused::Report(ReportRefused::KeyMismatch { .. })
    ));
}

#[test]
fn a_receipt_frees_the_seat_once_and_the_seat_licenses_another_device() {
    let mut e = one_seat();
    let (b, _) = e.handle_offline_request(&request("ap1", 1, 1), T0).unwrap();
    // ap2 wants the only seat: auto-licensing pauses.
    let mut r2 = report("a", "ap2", "ap", &["wifi"]);
    r2.device_key = PublicKey::from(&device_key(2).verifying_key());
    let fx = e.handle_report(&r2, T0 + 10).unwrap();
    assert!(fx.publish.iter().all(|x| x.grants.is_empty()), "{fx:?}");

    // A tenant-scoped caller of another tenant finds the device as missing as a made-up one.
    for device in ["ap1", "ap9"] {
        let err = e
            .handle_release_of(&receipt(device, 1, b.seq, 7), Some(&t("b")), T0 + 15)
            .unwrap_err();
        assert!(
            matches!(&err, OfflineRefused::UnknownDevice { tenant, .. } if tenant == "any"),
            "{device}: {err:?}"
        );
    }
    let (ret, fx) = e
        .handle_release_of(&receipt("ap1", 1, b.seq, 7), Some(&t("a")), T0 + 20)
        .unwrap();
    assert_eq!(ret.freed, vec![svc("wifi")]);
    let ap2 = fx
        .publish
        .iter()
        .find(|x| x.device.as_str() == "ap2")
        .expect("ap2 gets a bundle");
    assert_eq!(
        ap2.grants[0].service,
        svc("wifi"),
        "the released seat went to ap2"
    );
    let d1 = &e.state().devices[&(t("a"), "ap1".parse().unwrap())];
    assert!(d1.seats.is_empty());
    assert!(d1.offline.history.iter().any(|h| h
        .event
        .contains("released by receipt: wifi seat of S1/LIC-AP")));

    assert_eq!(
        e.handle_release(&receipt("ap1", 1, b.seq, 7), T0 + 30)
            .unwrap_err(),
        OfflineRefused::ReplayedReceipt
    );
}

#[test]
fn forged_unknown_and_never_issued_receipts_are_refused() {
    let mut e = one_seat();
    let (b, _) = e.handle_offline_request(&request("ap1", 1, 1), T0).unwrap();
    assert!(matches!(
        e.handle_release(&receipt("ap1", 9, b.seq, 7), T0)
            .unwrap_err(),
        OfflineRefused::Receipt(licd_protocol::Error::NotDeviceKey { .. })
    ));
    assert!(matches!(
        e.handle_release(&receipt("ap9", 1, b.seq, 7), T0)
            .unwrap_err(),
        OfflineRefused::UnknownDevice { .. }
    ));
    assert_eq!(
        e.handle_release(&receipt("ap1", 1, b.seq + 5, 7), T0)
            .unwrap_err(),
        OfflineRefused::NeverIssued {
            seq: b.seq + 5,
            issued: b.seq
        }
    );
    assert!(matches!(
        e.handle_release(b"garbage", T0).unwrap_err(),
        OfflineRefused::Receipt(_)
    ));
    assert_eq!(
        e.assigned_seats(&"S1".parse().unwrap(), &"LIC-AP".parse().unwrap()),
        1,
        "nothing was freed"
    );
}

#[test]
fn a_device_licensed_by_file_that_reports_over_mqtt_continues_with_the_next_seq() {
    let mut e = one_seat();
    let (b, _) = e.handle_offline_request(&request("ap1", 1, 1), T0).unwrap();
    let mut r = request("ap1", 1, 2).report;
    r.bundle_seq = b.seq;
    let fx = e.handle_report(&r, T0 + 60).unwrap();
    let next = fx
        .publish
        .iter()
        .find(|x| x.device.as_str() == "ap1")
        .expect("a bundle");
    assert_eq!(next.seq, b.seq + 1);
    assert_eq!(
        next.grants[0].lease_until,
        T0 + 60 + 7 * DAY,
        "the regular lease"
    );
    let d = &e.state().devices[&(t("a"), "ap1".parse().unwrap())];
    assert!(!d.offline.offline);
}
