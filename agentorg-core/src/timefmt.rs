//! Timestamps written the way chrono's serde writes them (RFC 3339, UTC,
//! `Z`, 0, 3, 6 or 9 fraction digits as the nanoseconds need), into a stack
//! buffer instead of through `fmt` one character at a time.
//!
//! The runtime writes several timestamps per record and per envelope;
//! through chrono's `Serialize` each costs a formatter call per character,
//! which profiled as about a tenth of a delegation's CPU. The output is the
//! same string (a property test compares them), and reading is chrono's
//! own, so stored records and envelopes do not change. Years outside
//! 0..=9999 and leap seconds take chrono's path. (No well-kept crate writes
//! chrono's "AutoSi" precision: `humantime` and `httpdate` use fixed ones.)

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Serialize, Serializer};

/// The longest string written here: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
const MAX_LEN: usize = 30;

fn two(buf: &mut [u8], at: usize, v: u32) {
    buf[at] = b'0' + (v / 10 % 10) as u8;
    buf[at + 1] = b'0' + (v % 10) as u8;
}

/// Writes `t` into `buf`; `None` where chrono's own path is needed.
fn write(t: &DateTime<Utc>, buf: &mut [u8; MAX_LEN]) -> Option<usize> {
    // `DateTime`'s own accessors convert to local time on every call.
    let t = t.naive_utc();
    let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
    let nanos = t.nanosecond();
    if nanos >= 1_000_000_000 {
        return None;
    }
    two(buf, 0, year / 100);
    two(buf, 2, year % 100);
    buf[4] = b'-';
    two(buf, 5, t.month());
    buf[7] = b'-';
    two(buf, 8, t.day());
    buf[10] = b'T';
    two(buf, 11, t.hour());
    buf[13] = b':';
    two(buf, 14, t.minute());
    buf[16] = b':';
    two(buf, 17, t.second());
    let mut len = 19;
    let (digits, mut frac) = if nanos == 0 {
        (0, 0)
    } else if nanos.is_multiple_of(1_000_000) {
        (3, nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        (6, nanos / 1_000)
    } else {
        (9, nanos)
    };
    if digits > 0 {
        buf[len] = b'.';
        for i in (0..digits).rev() {
            buf[len + 1 + i] = b'0' + (frac % 10) as u8;
            frac /= 10;
        }
        len += 1 + digits;
    }
    buf[len] = b'Z';
    Some(len + 1)
}

/// `#[serde(serialize_with = "crate::timefmt::serialize")]` for a
/// `DateTime<Utc>`.
pub(crate) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; MAX_LEN];
    match write(t, &mut buf).and_then(|n| std::str::from_utf8(&buf[..n]).ok()) {
        Some(text) => s.serialize_str(text),
        None => t.serialize(s),
    }
}

/// `t` as the store's documents have it (RFC 3339, UTC).
pub(crate) fn text(t: &DateTime<Utc>) -> String {
    let mut buf = [0u8; MAX_LEN];
    match write(t, &mut buf).and_then(|n| std::str::from_utf8(&buf[..n]).ok()) {
        Some(text) => text.to_owned(),
        None => t.to_rfc3339(),
    }
}

/// `#[serde(serialize_with = "crate::timefmt::option")]` for an
/// `Option<DateTime<Utc>>`.
pub(crate) fn option<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(&With(t)),
        None => s.serialize_none(),
    }
}

/// A timestamp serialized through [`serialize`].
struct With<'a>(&'a DateTime<Utc>);

impl Serialize for With<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize(self.0, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ours(t: &DateTime<Utc>) -> String {
        let mut buf = Vec::new();
        let mut ser = serde_json::Serializer::new(&mut buf);
        serialize(t, &mut ser).unwrap();
        String::from_utf8(buf).unwrap()
    }

    fn check(t: DateTime<Utc>) {
        assert_eq!(ours(&t), serde_json::to_string(&t).unwrap(), "{t:?}");
        let value = serialize(&t, serde_json::value::Serializer).unwrap();
        assert_eq!(value, serde_json::to_value(t).unwrap());
    }

    #[test]
    fn edges_write_as_chrono_does() {
        for (secs, nanos) in [
            (0, 0),
            (0, 1),
            (0, 1_000),
            (0, 1_000_000),
            (0, 999_999_999),
            (0, 120_000_000),
            (0, 120_000),
            (1_796_000_000, 123_456_789),
            (-62_167_219_200, 0),   // 0000-01-01
            (253_402_300_799, 999), // 9999-12-31T23:59:59
            (253_402_300_800, 0),   // 10000-01-01: chrono's path
            (-62_167_219_201, 5),   // before year 0: chrono's path
            (59, 1_500_000_000),    // a leap second: chrono's path
        ] {
            if let Some(t) = DateTime::from_timestamp(secs, nanos) {
                check(t);
            }
        }
        check(DateTime::<Utc>::MIN_UTC);
        check(DateTime::<Utc>::MAX_UTC);
    }

    #[test]
    fn options_write_as_chrono_does() {
        let t = DateTime::from_timestamp(1_796_000_000, 5_000).unwrap();
        for v in [Some(t), None] {
            let value = option(&v, serde_json::value::Serializer).unwrap();
            assert_eq!(value, serde_json::to_value(v).unwrap());
        }
    }

    proptest! {
        #[test]
        fn any_time_writes_as_chrono_does(
            secs in -70_000_000_000i64..260_000_000_000,
            nanos in prop_oneof![
                Just(0u32),
                (0u32..1000).prop_map(|m| m * 1_000_000),
                (0u32..1_000_000).prop_map(|u| u * 1_000),
                0u32..1_000_000_000,
            ],
        ) {
            if let Some(t) = DateTime::from_timestamp(secs, nanos) {
                check(t);
            }
        }
    }
}
