//! Time stamps: RFC 3339 UTC with microseconds for events, and the original tool's file-name
//! stamp (`YYYY-MM-DDTHH.MM.SS.ffffff`, `:` replaced by `.`). Pure: callers pass the time.

use std::time::{SystemTime, UNIX_EPOCH};

/// Broken-down UTC time with microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub min: u32,
    pub sec: u32,
    pub micros: u32,
}

impl Utc {
    pub fn from_system(t: SystemTime) -> Utc {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        Utc::from_unix_micros(d.as_micros() as i64)
    }

    pub fn now() -> Utc {
        Utc::from_system(SystemTime::now())
    }

    pub fn from_unix_micros(us: i64) -> Utc {
        let secs = us.div_euclid(1_000_000);
        let micros = us.rem_euclid(1_000_000) as u32;
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        Utc {
            year,
            month,
            day,
            hour: (sod / 3600) as u32,
            min: (sod % 3600 / 60) as u32,
            sec: (sod % 60) as u32,
            micros,
        }
    }

    /// [`Utc::rfc3339`] appended to `out`, without a String of its own (once per output line,
    /// hundreds of thousands a second in `tc alarm listen`, so the digits are placed by hand:
    /// `write!` was a twentieth of its time).
    pub fn push_rfc3339(&self, out: &mut Vec<u8>) {
        if !(0..=9999).contains(&self.year) {
            use std::io::Write;
            // Writing into a Vec cannot fail.
            let _ = write!(
                out,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
                self.year, self.month, self.day, self.hour, self.min, self.sec, self.micros
            );
            return;
        }
        let mut b = *b"0000-00-00T00:00:00.000000Z";
        digits(&mut b[0..4], self.year as u32);
        digits(&mut b[5..7], self.month);
        digits(&mut b[8..10], self.day);
        digits(&mut b[11..13], self.hour);
        digits(&mut b[14..16], self.min);
        digits(&mut b[17..19], self.sec);
        digits(&mut b[20..26], self.micros);
        out.extend_from_slice(&b);
    }

    /// `2022-06-22T16:16:07.565758Z`
    pub fn rfc3339(&self) -> String {
        let mut out = Vec::with_capacity(27);
        self.push_rfc3339(&mut out);
        String::from_utf8(out).expect("ASCII digits and separators")
    }

    /// `2022-06-22T16.16.07.565758`, as in the original tool's file names.
    pub fn file_stamp(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}.{:02}.{:02}.{:06}",
            self.year, self.month, self.day, self.hour, self.min, self.sec, self.micros
        )
    }
}

/// The RFC 3339 stamp of the present for a writer of many lines a second (`tc alarm listen`):
/// the clock is read for every stamp, but the date and time of day are formatted once per second.
#[derive(Default)]
pub struct Clock {
    /// The second `prefix` shows (`YYYY-MM-DDTHH:MM:SS.`).
    second: Option<i64>,
    prefix: [u8; 20],
}

impl Clock {
    pub fn push_now(&mut self, out: &mut Vec<u8>) {
        // clock_gettime itself, not SystemTime: without its duration_since and u128 micros and
        // the division back into seconds, `tc alarm listen` wrote 1.3 % more lines per CPU-second
        // (6 of 7 rounds).
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the timespec we own; CLOCK_REALTIME always exists.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
        // time_t and c_long are i64 on the targets built here, i32 on some 32-bit ones.
        #[allow(clippy::useless_conversion)]
        self.push_timespec(i64::from(ts.tv_sec), i64::from(ts.tv_nsec), out);
    }

    /// A clock before 1970 stamps the epoch, as [`Utc::now`] does.
    fn push_timespec(&mut self, second: i64, nanos: i64, out: &mut Vec<u8>) {
        match second < 0 {
            true => self.push(0, 0, out),
            false => self.push(second, (nanos / 1000) as u32, out),
        }
    }

    /// `micros` below 1,000,000.
    fn push(&mut self, second: i64, micros: u32, out: &mut Vec<u8>) {
        if self.second != Some(second) {
            let us = second
                .saturating_mul(1_000_000)
                .saturating_add(i64::from(micros));
            let t = Utc::from_unix_micros(us);
            if !(0..=9999).contains(&t.year) {
                self.second = None;
                return t.push_rfc3339(out);
            }
            let mut stamp = Vec::with_capacity(27);
            t.push_rfc3339(&mut stamp);
            self.prefix.copy_from_slice(&stamp[..20]);
            self.second = Some(second);
        }
        out.extend_from_slice(&self.prefix);
        let mut rest = *b"000000Z";
        digits(&mut rest[..6], micros);
        out.extend_from_slice(&rest);
    }
}

/// `v` in decimal, right-aligned and zero-padded to fill `dst` (higher digits are dropped).
fn digits(dst: &mut [u8], mut v: u32) {
    for d in dst.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// True when `s` looks like what `rfc3339` produces.
#[cfg(test)]
pub fn is_rfc3339_micros(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 27
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            26 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
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
                253_402_300_799_999_999,
                "9999-12-31T23:59:59.999999Z",
                "9999-12-31T23.59.59.999999",
            ),
            (
                253_402_300_800_000_000,
                "10000-01-01T00:00:00.000000Z",
                "10000-01-01T00.00.00.000000",
            ),
            (
                -62_167_219_200_000_001,
                "-001-12-31T23:59:59.999999Z",
                "-001-12-31T23.59.59.999999",
            ),
        ];
        for &(us, rfc, stamp) in table {
            let t = Utc::from_unix_micros(us);
            assert_eq!(t.rfc3339(), rfc, "{us}");
            let mut pushed = b"x".to_vec();
            t.push_rfc3339(&mut pushed);
            assert_eq!(&pushed[1..], rfc.as_bytes(), "{us}");
            assert_eq!(t.file_stamp(), stamp, "{us}");
            assert_eq!(
                is_rfc3339_micros(&t.rfc3339()),
                (0..=9999).contains(&t.year),
                "{us}"
            );
        }
    }

    #[test]
    fn clock_stamps_as_utc_does() {
        let mut c = Clock::default();
        // Within a second, across second, minute, day and year ends, backwards (a stepped
        // clock), before 1970 and past 9999.
        let mut times = vec![
            1_655_914_567_565_758,
            1_655_914_567_999_999,
            1_655_914_568_000_000,
            1_655_914_559_000_001,
            1_704_067_199_999_999,
            1_704_067_200_000_000,
            0,
            -1,
            253_402_300_800_000_000,
            1_655_914_568_000_001,
        ];
        let mut t = 1_700_000_000_000_000i64;
        for _ in 0..10_000 {
            t += 137_731;
            times.push(t);
        }
        for us in times {
            let mut got = Vec::new();
            c.push(
                us.div_euclid(1_000_000),
                us.rem_euclid(1_000_000) as u32,
                &mut got,
            );
            assert_eq!(
                String::from_utf8(got).unwrap(),
                Utc::from_unix_micros(us).rfc3339(),
                "{us}"
            );
        }
    }

    #[test]
    fn clock_before_1970_stamps_the_epoch_as_utc_now_does() {
        let mut c = Clock::default();
        for (second, nanos, want) in [
            (-1, 500_000_000, "1970-01-01T00:00:00.000000Z"),
            (0, 999_999_999, "1970-01-01T00:00:00.999999Z"),
            (1_655_914_567, 565_758_123, "2022-06-22T16:16:07.565758Z"),
        ] {
            let mut got = Vec::new();
            c.push_timespec(second, nanos, &mut got);
            assert_eq!(String::from_utf8(got).unwrap(), want);
        }
        let before = UNIX_EPOCH - std::time::Duration::from_secs(1);
        assert_eq!(
            Utc::from_system(before).rfc3339(),
            "1970-01-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn rfc3339_checker_rejects_near_misses() {
        for bad in [
            "2022-06-22T16:16:07Z",
            "2022-06-22 16:16:07.565758Z",
            "2022-06-22T16:16:07.565758",
        ] {
            assert!(!is_rfc3339_micros(bad), "{bad}");
        }
    }
}
