//! The client against a scripted fake agent (a std `UnixListener` on a thread): the cases a
//! real agent does not produce on demand: a newer protocol version, a connection closed
//! between requests, silence, a refusal, and a watch stream ending.

// Test files may unwrap (a panic is a failure with a message), helpers included.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use licd_client::{Client, ClientError, Event, Reason, State, Watch};

/// Serves one connection per script; each answers one line per request line read, then is
/// closed (`None` in a script: read the request, answer nothing, wait for the client to go).
fn fake_agent(
    scripts: Vec<Vec<Option<&'static str>>>,
) -> (tempfile::TempDir, PathBuf, JoinHandle<()>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("licd.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let handle = std::thread::spawn(move || {
        for script in scripts {
            let (stream, _) = listener.accept().unwrap();
            serve(stream, script);
        }
    });
    (dir, path, handle)
}

fn serve(stream: UnixStream, script: Vec<Option<&'static str>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    for answer in script {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        match answer {
            Some(a) => writeln!(writer, "{a}").unwrap(),
            None => {
                let _ = reader.read_line(&mut line);
                return;
            }
        }
    }
}

const LICENSED: &str =
    r#"{"v":1,"ok":true,"service":"wifi","state":"licensed","until":99,"may_run":true}"#;

#[test]
fn a_newer_major_version_is_refused_with_a_clear_error() {
    let (_dir, path, agent) = fake_agent(vec![vec![Some(
        r#"{"v":2,"ok":true,"service":"wifi","state":"licensed","until":99}"#,
    )]]);
    let err = Client::connect(&path).unwrap().check("wifi").unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::UnsupportedVersion {
                agent: 2,
                supported: 1
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade licd-client"), "{err}");
    agent.join().unwrap();
}

#[test]
fn a_connection_the_agent_closed_between_requests_is_reopened_once() {
    let (dir, path, agent) = fake_agent(vec![vec![Some(LICENSED)], vec![Some(LICENSED)]]);
    let mut client = Client::connect(&path).unwrap();
    assert_eq!(client.check("wifi").unwrap(), State::Licensed { until: 99 });
    // The first connection is closed now; the client notices and reconnects.
    assert_eq!(client.check("wifi").unwrap(), State::Licensed { until: 99 });
    agent.join().unwrap();
    // Nobody listens any more: "not running", not a hang.
    drop(dir);
    assert!(client.check("wifi").unwrap_err().is_not_running());
}

#[test]
fn a_silent_agent_times_out_after_the_configured_time() {
    let (_dir, path, agent) = fake_agent(vec![vec![None]]);
    let mut client = Client::with_timeout(&path, Duration::from_millis(200)).unwrap();
    let started = Instant::now();
    let err = client.check("wifi").unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(client);
    agent.join().unwrap();
}

#[test]
fn a_refusal_carries_the_agents_message() {
    let (_dir, path, agent) = fake_agent(vec![vec![Some(
        r#"{"v":1,"ok":false,"error":"unknown op \"x\""}"#,
    )]]);
    match Client::connect(&path).unwrap().check("wifi") {
        Err(ClientError::Refused(m)) => assert!(m.contains("unknown op"), "{m}"),
        other => panic!("{other:?}"),
    }
    agent.join().unwrap();
}

#[test]
fn a_watch_yields_changes_and_lag_then_closed_when_the_agent_goes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("licd.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let agent = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.contains(r#""op":"watch""#), "{line}");
        let mut w = stream;
        writeln!(w, r#"{{"v":1,"ok":true,"watching":true}}"#).unwrap();
        writeln!(
            w,
            r#"{{"v":1,"event":"changed","service":"wifi","state":"grace","until":7,"reason":"lease_expired"}}"#
        )
        .unwrap();
        writeln!(w, r#"{{"v":1,"event":"lagged","missed":3}}"#).unwrap();
    });
    let watch = Watch::open(&path, Duration::from_secs(2)).unwrap();
    let items: Vec<_> = watch.collect();
    agent.join().unwrap();
    assert_eq!(items.len(), 3, "{items:?}");
    assert_eq!(
        items[0].as_ref().unwrap(),
        &Event::Changed {
            service: "wifi".into(),
            state: State::Grace {
                until: 7,
                reason: Reason::LeaseExpired
            }
        }
    );
    assert_eq!(items[1].as_ref().unwrap(), &Event::Lagged { missed: 3 });
    assert!(
        matches!(items[2], Err(ClientError::Closed { .. })),
        "{items:?}"
    );
}
