//! The agent's error types say each reason once: a message that prints its cause must not
//! also return it from `source()`, or `{:#}` (how `licd` prints errors) repeats it, as it did
//! for a missing config file ("No such file or directory (os error 2): No such file or
//! directory (os error 2)").

use std::error::Error;
use std::io;
use std::path::PathBuf;

use crate::api::ApiError;
use crate::config::ConfigError;
use crate::daemon::RunError;
use crate::diag::record::RecordError;
use crate::enforce::Refusal;
use crate::identity::KeyError;
use crate::store::StoreError;
use crate::tls::TlsError;

fn os_error() -> io::Error {
    io::Error::from_raw_os_error(2)
}

/// `{:#}` of `e` through anyhow, as `licd` prints it.
fn printed(e: impl Error + Send + Sync + 'static) -> String {
    format!("{:#}", anyhow::Error::new(e))
}

#[test]
fn every_reason_is_printed_once() {
    let path = || PathBuf::from("/x");
    let os = os_error().to_string();
    let cases: Vec<(String, &str)> = vec![
        (
            printed(ConfigError::Read {
                path: path(),
                error: os_error(),
            }),
            &os,
        ),
        (
            printed(KeyError::Read {
                path: path(),
                error: os_error(),
            }),
            &os,
        ),
        (
            printed(RunError::Key(KeyError::Write {
                path: path(),
                error: os_error(),
            })),
            &os,
        ),
        (
            printed(RunError::Store(StoreError::Io {
                op: "read",
                path: path(),
                error: os_error(),
            })),
            &os,
        ),
        (
            printed(RunError::Tls(TlsError::CaFileUnreadable {
                path: path(),
                error: os_error(),
            })),
            &os,
        ),
        (
            printed(RunError::Api(ApiError::Io {
                op: "bind",
                path: path(),
                error: os_error(),
            })),
            &os,
        ),
        (
            printed(RecordError::Io {
                path: path(),
                error: os_error(),
            }),
            &os,
        ),
        (
            printed(crate::command::RunError::Spawn {
                program: "probe".into(),
                error: os_error(),
            }),
            &os,
        ),
        (
            printed(Refusal::Protocol(licd_protocol::Error::BadSignature)),
            "signature",
        ),
    ];
    for (text, reason) in cases {
        assert_eq!(text.matches(reason).count(), 1, "{text}");
    }
}
