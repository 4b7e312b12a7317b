//! liblicd refuses a service name licd does not accept (`""`, 10,000 characters, `a/b`, `..`)
//! with `LICD_ERR_INVALID_ARGUMENT` and the same message on both paths: `licd_check` (which
//! used to send `""` and pass on "unlicensed") and `licd_check_with_fallback` (whose cache
//! path used to answer any name). A valid name still reaches the agent.

// The C API is `unsafe extern "C"`; each call below passes NUL-terminated strings that
// outlive it and a valid `licd_state` to write.
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used)]

use std::ffi::{c_char, CString};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;

use licd::{
    licd_check, licd_check_with_fallback, licd_error, licd_last_error_message,
    licd_set_socket_path, licd_state,
};

const UNLICENSED: &str = r#"{"v":1,"ok":true,"service":"wifi","state":"unlicensed","reason":"never_granted","may_run":false,"source":"daemon"}"#;

/// An agent that answers every request line "unlicensed", whatever it asks.
fn lenient_agent(path: &Path) {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                let _ = writeln!(writer, "{UNLICENSED}");
                line.clear();
            }
        }
    });
}

fn last_error() -> String {
    let mut buf = vec![0u8; 512];
    // SAFETY: `buf` is writable for its length.
    unsafe { licd_last_error_message(buf.as_mut_ptr().cast::<c_char>(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn check(name: &CString) -> (licd_error, String) {
    let mut out = std::mem::MaybeUninit::<licd_state>::uninit();
    // SAFETY: `name` is NUL-terminated; `out` is writable memory for a licd_state.
    let rc = unsafe { licd_check(name.as_ptr(), out.as_mut_ptr()) };
    (rc, last_error())
}

fn check_with_fallback(config: &CString, name: &CString) -> (licd_error, String) {
    let mut out = std::mem::MaybeUninit::<licd_state>::uninit();
    // SAFETY: both strings are NUL-terminated; `out` is writable memory for a licd_state.
    let rc = unsafe { licd_check_with_fallback(config.as_ptr(), name.as_ptr(), out.as_mut_ptr()) };
    (rc, last_error())
}

#[test]
fn invalid_names_are_refused_alike_by_the_agent_path_and_the_fallback_path() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("licd.sock");
    lenient_agent(&socket);
    let socket_c = CString::new(socket.to_str().unwrap()).unwrap();
    // SAFETY: NUL-terminated; the library copies it.
    let rc = unsafe { licd_set_socket_path(socket_c.as_ptr()) };
    assert_eq!(rc, licd_error::LICD_OK);
    // The fallback path reads a config whose socket nobody serves: the cache answers.
    let config = dir.path().join("licd.toml");
    std::fs::write(
        &config,
        format!(
            "tenant = \"acme\"\nservices = [\"wifi\"]\nstate_dir = {:?}\n\
             roots = [\"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a\"]\n\
             [broker]\nurl = \"mqtts://broker.invalid\"\n[api]\nsocket = {:?}\n\
             [identity]\ndevice_id = \"ap-1\"\n",
            dir.path().join("state").display().to_string(),
            dir.path().join("nobody.sock").display().to_string(),
        ),
    )
    .unwrap();
    let config = CString::new(config.to_str().unwrap()).unwrap();

    // A valid name reaches the agent (and, when built in, the cache).
    let wifi = CString::new("wifi").unwrap();
    assert_eq!(check(&wifi).0, licd_error::LICD_OK);
    let fallback = check_with_fallback(&config, &wifi).0;
    if cfg!(feature = "cache-fallback") {
        assert_eq!(fallback, licd_error::LICD_OK, "{}", last_error());
    } else {
        assert_eq!(fallback, licd_error::LICD_ERR_UNSUPPORTED);
    }

    for name in ["", &"x".repeat(10_000), "a/b", "..", "wifi ap"] {
        let name = CString::new(name).unwrap();
        let (rc, message) = check(&name);
        assert_eq!(rc, licd_error::LICD_ERR_INVALID_ARGUMENT, "{message}");
        assert!(message.starts_with("invalid service name"), "{message}");
        let (rc_fb, message_fb) = check_with_fallback(&config, &name);
        assert_eq!(
            (rc_fb, message_fb.as_str()),
            (rc, message.as_str()),
            "both paths refuse {:?} the same way",
            name.to_str().unwrap().get(..20)
        );
    }
}
