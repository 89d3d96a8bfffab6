//! Time stamps: RFC 3339 UTC with microseconds for events, and the original tool's file-name
//! stamp (`YYYY-MM-DDTHH.MM.SS.ffffff`, `:` replaced by `.`). The calendar is jiff's; only the
//! two layouts are written here.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// The stamps of many lines a second (`tc alarm listen`): the date and time of day are
/// formatted once per second, the microseconds for each stamp.
#[derive(Default)]
pub struct Stamper {
    /// The second `prefix` shows (`YYYY-MM-DDTHH:MM:SS.`).
    second: Option<i64>,
    prefix: Vec<u8>,
}

impl Stamper {
    pub fn push_now(&mut self, out: &mut Vec<u8>) {
        self.push(Utc::now(), out);
    }

    pub fn push(&mut self, t: Utc, out: &mut Vec<u8>) {
        let second = t.0.as_second();
        if self.second != Some(second) {
            self.prefix.clear();
            t.push_rfc3339(&mut self.prefix);
            // Down to the '.': `.ffffffZ` is 8 bytes.
            self.prefix.truncate(self.prefix.len() - 8);
            self.second = Some(second);
        }
        out.extend_from_slice(&self.prefix);
        // Writing into a Vec cannot fail.
        let _ = write!(out, ".{:06}Z", t.0.subsec_microsecond());
    }
}

/// An instant, to be written in UTC with microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc(Timestamp);

impl Utc {
    /// A clock before 1970 gives the epoch: no `tc` record predates it, and a stamp that jumps
    /// back that far is a clock that is wrong, not a time to report.
    pub fn from_system(t: SystemTime) -> Utc {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        Utc::from_unix_micros(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
    }

    pub fn now() -> Utc {
        Utc::from_system(SystemTime::now())
    }

    /// Beyond jiff's range (years -9999 to 9999) the nearest end of it.
    pub fn from_unix_micros(us: i64) -> Utc {
        Utc(Timestamp::from_microsecond(us).unwrap_or(if us < 0 {
            Timestamp::MIN
        } else {
            Timestamp::MAX
        }))
    }

    fn civil(&self) -> DateTime {
        self.0.to_zoned_datetime(TimeZone::UTC).datetime()
    }

    /// [`Utc::rfc3339`] appended to `out`.
    pub fn push_rfc3339(&self, out: &mut Vec<u8>) {
        let t = self.civil();
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.subsec_nanosecond() / 1000
        );
    }

    /// `2022-06-22T16:16:07.565758Z`
    pub fn rfc3339(&self) -> String {
        let mut out = Vec::with_capacity(27);
        self.push_rfc3339(&mut out);
        String::from_utf8(out).expect("ASCII digits and separators")
    }

    /// `Jun 22 16:16:05`: the time stamp of an RFC 3164 syslog header (day padded with a space).
    pub fn rfc3164(&self) -> String {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let t = self.civil();
        format!(
            "{} {:>2} {:02}:{:02}:{:02}",
            MONTHS[(t.month() as usize).clamp(1, 12) - 1],
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    }

    /// `16:16:07.565`: the time of day to the millisecond, for sentences.
    pub fn time_of_day_millis(&self) -> String {
        let t = self.civil();
        format!(
            "{:02}:{:02}:{:02}.{:03}",
            t.hour(),
            t.minute(),
            t.second(),
            t.subsec_nanosecond() / 1_000_000
        )
    }

    /// `2022-06-22T16.16.07.565758`, as in the original tool's file names.
    pub fn file_stamp(&self) -> String {
        let t = self.civil();
        format!(
            "{:04}-{:02}-{:02}T{:02}.{:02}.{:02}.{:06}",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.subsec_nanosecond() / 1000
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        let table: &[(i64, &str, &str)] = &[
            (
                0,
                "1970-01-01T00:00:00.000000Z",
                "1970-01-01T00.00.00.000000",
            ),
            (
                1_655_914_567_565_758,
                "2022-06-22T16:16:07.565758Z",
                "2022-06-22T16.16.07.565758",
            ),
            (
                951_782_400_000_001,
                "2000-02-29T00:00:00.000001Z",
                "2000-02-29T00.00.00.000001",
            ),
            (
                4_102_444_799_999_999,
                "2099-12-31T23:59:59.999999Z",
                "2099-12-31T23.59.59.999999",
            ),
            (
                -1,
                "1969-12-31T23:59:59.999999Z",
                "1969-12-31T23.59.59.999999",
            ),
            (
                253_402_207_199_999_999,
                "9999-12-30T21:59:59.999999Z",
                "9999-12-30T21.59.59.999999",
            ),
            // Past jiff's last instant (which leaves room for any offset in 9999): that one.
            (
                i64::MAX,
                "9999-12-30T22:00:00.999999Z",
                "9999-12-30T22.00.00.999999",
            ),
        ];
        for &(us, rfc, stamp) in table {
            let t = Utc::from_unix_micros(us);
            assert_eq!(t.rfc3339(), rfc, "{us}");
            let mut pushed = b"x".to_vec();
            t.push_rfc3339(&mut pushed);
            assert_eq!(&pushed[1..], rfc.as_bytes(), "{us}");
            assert_eq!(t.file_stamp(), stamp, "{us}");
        }
        assert_eq!(
            Utc::from_unix_micros(1_655_914_565_000_000).rfc3164(),
            "Jun 22 16:16:05"
        );
        assert_eq!(Utc::from_unix_micros(0).rfc3164(), "Jan  1 00:00:00");
        assert_eq!(
            Utc::from_unix_micros(1_655_914_567_565_758).time_of_day_millis(),
            "16:16:07.565"
        );
    }

    #[test]
    fn the_stamper_writes_what_utc_writes() {
        let mut s = Stamper::default();
        // Within a second, across second, day and year ends, a clock stepped back, the epoch.
        let mut times = vec![
            1_655_914_567_565_758,
            1_655_914_567_999_999,
            1_655_914_568_000_000,
            1_655_914_559_000_001,
            1_704_067_199_999_999,
            1_704_067_200_000_000,
            0,
        ];
        let mut t = 1_700_000_000_000_000i64;
        for _ in 0..5_000 {
            t += 137_731;
            times.push(t);
        }
        for us in times {
            let mut got = Vec::new();
            s.push(Utc::from_unix_micros(us), &mut got);
            assert_eq!(
                String::from_utf8(got).unwrap(),
                Utc::from_unix_micros(us).rfc3339(),
                "{us}"
            );
        }
    }

    #[test]
    fn a_clock_before_1970_stamps_the_epoch() {
        let before = UNIX_EPOCH - std::time::Duration::from_secs(1);
        assert_eq!(
            Utc::from_system(before).rfc3339(),
            "1970-01-01T00:00:00.000000Z"
        );
    }
}
