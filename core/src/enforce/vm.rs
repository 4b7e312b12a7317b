//! What the enforcer remembers of the VM probe: the last count it read, since when the probe
//! fails, and since when each service is over its VM allowance — and the small text record
//! that carries all of it across restarts (`vm.v1` in the state directory, see
//! [`crate::store`]).
//!
//! Why it is persisted: an unknown reading (a failing or garbled probe) keeps the last known
//! count in force, and the over-allowance grace clock keeps running from when the host first
//! went over. Without the record, a restart would forget both and start the grace period
//! again. The disk is no more trusted than elsewhere: a record that does not parse is set
//! aside and the agent starts from the probe's next reading.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use licd_protocol::limits::MAX_SERVICES;
use licd_protocol::{ServiceName, UnixTime};
use serde::Serialize;

/// The last count the probe read and when (trusted time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmReading {
    /// The count.
    pub count: u32,
    /// When it was read.
    pub read_at: UnixTime,
}

/// Since when a service is over its VM allowance, and which allowance that was (a bundle that
/// changes the allowance starts a fresh grace period; one that keeps it does not — also when
/// it arrives after a restart with a damaged cache, or after the held bundle was distrusted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverUse {
    /// When the host first went over.
    pub since: UnixTime,
    /// The allowance it went over.
    pub allowance: u32,
}

/// The persisted VM state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmRecord {
    /// The last known reading (`None`: the probe never counted).
    pub reading: Option<VmReading>,
    /// Since when the probe fails (`None`: its last reading counted).
    pub unknown_since: Option<UnixTime>,
    /// Since when each service is over its VM allowance.
    pub over_since: BTreeMap<ServiceName, OverUse>,
}

/// Largest record file read: a few numbers and one line per service.
pub const MAX_RECORD_LEN: usize = 256 + MAX_SERVICES * 96;

/// First line of the record file.
const HEADER: &str = "licd vm v1";

impl VmRecord {
    /// The file contents: a header line, then `key value` lines.
    pub fn encode(&self) -> String {
        let mut out = format!("{HEADER}\n");
        if let Some(r) = self.reading {
            let _ = writeln!(out, "count {}", r.count);
            let _ = writeln!(out, "read_at {}", r.read_at);
        }
        if let Some(t) = self.unknown_since {
            let _ = writeln!(out, "unknown_since {t}");
        }
        for (service, o) in &self.over_since {
            let _ = writeln!(out, "over {service} {} {}", o.since, o.allowance);
        }
        out
    }

    /// Parses [`VmRecord::encode`]'s output; anything else is an error saying what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        if bytes.len() > MAX_RECORD_LEN {
            return Err("larger than any VM record");
        }
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8")?;
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err("not a licd VM record (bad header)");
        }
        let time = |v: Option<&str>| v.and_then(|v| v.parse::<UnixTime>().ok());
        let (mut count, mut read_at) = (None, None);
        let mut record = VmRecord::default();
        for line in lines {
            let words: Vec<&str> = line.splitn(5, ' ').collect();
            match words.as_slice() {
                ["count", n] => count = Some(n.parse::<u32>().map_err(|_| "bad count")?),
                ["read_at", t] => read_at = Some(time(Some(t)).ok_or("bad read_at")?),
                ["unknown_since", t] => {
                    record.unknown_since = Some(time(Some(t)).ok_or("bad unknown_since")?)
                }
                ["over", service, since, allowance] => {
                    let service = ServiceName::new(*service).map_err(|_| "bad service name")?;
                    let over = OverUse {
                        since: time(Some(since)).ok_or("bad over time")?,
                        allowance: allowance.parse().map_err(|_| "bad allowance")?,
                    };
                    if record.over_since.len() >= MAX_SERVICES
                        || record.over_since.insert(service, over).is_some()
                    {
                        return Err("too many or repeated services");
                    }
                }
                _ => return Err("unknown line"),
            }
        }
        record.reading = match (count, read_at) {
            (Some(count), Some(read_at)) => Some(VmReading { count, read_at }),
            (None, None) => None,
            _ => return Err("count without read_at or the reverse"),
        };
        Ok(record)
    }
}

/// The VM facts in status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VmStatus {
    /// The count in force: the last the probe read (`null`: it never counted).
    pub count: Option<u32>,
    /// When that count was read (trusted time).
    pub read_at: Option<UnixTime>,
    /// Its age in seconds at the evaluation time.
    pub age_secs: Option<u64>,
    /// The probe fails since `unknown_since`: `count` is the last known one and stays in force.
    pub stale: bool,
    /// Since when the probe fails.
    pub unknown_since: Option<UnixTime>,
}

impl VmStatus {
    /// The status of `record` at `now` (`None` when the probe never gave any reading).
    pub fn of(record: &VmRecord, now: UnixTime) -> Option<Self> {
        if record.reading.is_none() && record.unknown_since.is_none() {
            return None;
        }
        Some(Self {
            count: record.reading.map(|r| r.count),
            read_at: record.reading.map(|r| r.read_at),
            age_secs: record.reading.map(|r| now.saturating_sub(r.read_at)),
            stale: record.unknown_since.is_some(),
            unknown_since: record.unknown_since,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_junk_is_refused() {
        let mut r = VmRecord {
            reading: Some(VmReading {
                count: 6,
                read_at: 1_800_000_000,
            }),
            unknown_since: Some(1_800_000_100),
            over_since: BTreeMap::new(),
        };
        r.over_since.insert(
            ServiceName::new("hv").unwrap(),
            OverUse {
                since: 1_799_999_000,
                allowance: 4,
            },
        );
        assert_eq!(VmRecord::decode(r.encode().as_bytes()), Ok(r));
        assert_eq!(
            VmRecord::decode(VmRecord::default().encode().as_bytes()),
            Ok(VmRecord::default())
        );
        for junk in [
            &b""[..],
            b"licd vm v2\n",
            b"licd vm v1\ncount 6\n",
            b"licd vm v1\ncount -1\nread_at 5\n",
            b"licd vm v1\nover hv\n",
            b"licd vm v1\nover hv 5\n",
            b"licd vm v1\nover a/b 5 4\n",
            b"licd vm v1\nover hv 5 4\nover hv 6 4\n",
            b"licd vm v1\nover hv 5 4 3\n",
            b"licd vm v1\nextra 1\n",
            b"licd vm v1\ncount 6 7\nread_at 5\n",
            b"\xff\xfe",
        ] {
            assert!(VmRecord::decode(junk).is_err(), "{junk:?}");
        }
        assert!(VmRecord::decode(&vec![b'x'; MAX_RECORD_LEN + 1]).is_err());
    }
}
