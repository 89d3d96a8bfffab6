//! OVOC's forwarded alarms: syslog framing and OVOC body parsing (pure), and `tc alarm listen`.
//! `tc session` reads its datagrams with the same `read`.

pub mod listen;
pub mod ovoc;
pub mod syslog;

use std::borrow::Cow;
use std::net::SocketAddr;

use crate::event::Event;

/// Longest `raw` text carried in an event; the rest is cut with a marker.
const RAW_MAX: usize = 8192;

pub fn raw_text(t: &str) -> Cow<'_, str> {
    if t.len() <= RAW_MAX {
        return Cow::Borrowed(t);
    }
    let mut end = RAW_MAX;
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}...[{} bytes]", &t[..end], t.len()))
}

/// One datagram's [`syslog::text`], read: its framing, and the OVOC alarm in it if there is one.
pub fn read(text: &str) -> (syslog::Frame<'_>, Option<ovoc::Alarm<'_>>) {
    let mut alarm = ovoc::Alarm::default();
    let (frame, is_alarm) = read_into(text, &mut alarm);
    (frame, is_alarm.then_some(alarm))
}

/// [`read`], the alarm into `alarm`, an `Alarm::default()` (see [`ovoc::parse_into`]): the
/// framing, and whether there is an alarm.
pub fn read_into<'a>(text: &'a str, alarm: &mut ovoc::Alarm<'a>) -> (syslog::Frame<'a>, bool) {
    let frame = syslog::parse(text);
    let is_alarm = ovoc::parse_into(frame.msg, alarm);
    (frame, is_alarm)
}

/// The `alarm` event, borrowed from the datagram: `tc alarm listen` writes this for every alarm
/// without copying a field. [`Event::Alarm`] (see [`alarm_event`]) defines the line;
/// [`AlarmLine::write_json`] writes the same bytes faster (tests hold the two lines equal).
#[derive(Debug)]
pub struct AlarmLine<'a> {
    frame: &'a syslog::Frame<'a>,
    alarm: &'a ovoc::Alarm<'a>,
    connection_lost: bool,
    /// `ADDR:PORT`, as `SocketAddr`'s `Display`; the listener formats each sender once.
    sender: &'a str,
    raw: Cow<'a, str>,
}

impl<'a> AlarmLine<'a> {
    /// Refers to the frame and the alarm rather than copying their fields: without that copy
    /// (296 bytes, by musl's memcpy) and the alarm's move out of `read`'s result, the listener
    /// wrote 13 % more alarms per CPU-second.
    pub fn new(
        frame: &'a syslog::Frame<'a>,
        alarm: &'a ovoc::Alarm<'a>,
        sender: &'a str,
        raw: &'a str,
    ) -> AlarmLine<'a> {
        AlarmLine {
            frame,
            alarm,
            connection_lost: alarm.is_connection_lost(),
            sender,
            raw: raw_text(raw),
        }
    }

    /// Appends the JSON object serde_json would write for the [`Event::Alarm`] built from this,
    /// byte for byte, with [`crate::json`]'s quicker strings.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        use crate::json::{opt_string, string};
        let key = |out: &mut Vec<u8>, k: &[u8]| out.extend_from_slice(k);
        let a = self.alarm;
        key(out, b"{\"type\":\"alarm\",\"device\":");
        opt_string(out, a.device);
        key(out, b",\"alarm\":");
        string(out, a.name);
        key(out, b",\"description\":");
        opt_string(out, a.description);
        key(out, b",\"severity\":");
        opt_string(out, a.severity);
        key(out, b",\"syslog_severity\":");
        opt_string(out, self.frame.severity.map(syslog::severity_name));
        key(out, b",\"device_name\":");
        opt_string(out, a.device_name);
        key(out, b",\"source\":");
        opt_string(out, a.source);
        key(out, b",\"tenant\":");
        opt_string(out, a.tenant);
        key(out, b",\"region\":");
        opt_string(out, a.region);
        key(out, b",\"device_type\":");
        opt_string(out, a.device_type);
        key(out, b",\"device_serial\":");
        opt_string(out, a.device_serial);
        key(out, b",\"device_description\":");
        opt_string(out, a.device_description);
        key(out, b",\"extra\":{");
        for (i, (k, v)) in a.extra.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, k);
            out.push(b':');
            string(out, v);
        }
        key(out, b"},\"connection_lost\":");
        // Two calls: one of a length known only at run time went to musl's memcpy.
        if self.connection_lost {
            key(out, b"true");
        } else {
            key(out, b"false");
        }
        key(out, b",\"wording\":");
        string(out, a.wording);
        key(out, b",\"framing\":");
        string(out, self.frame.framing);
        key(out, b",\"hostname\":");
        opt_string(out, self.frame.hostname);
        key(out, b",\"sender\":");
        string(out, self.sender);
        key(out, b",\"raw\":");
        string(out, &self.raw);
        out.push(b'}');
    }
}

pub fn alarm_event(frame: &syslog::Frame, a: &ovoc::Alarm, sender: SocketAddr, raw: &str) -> Event {
    let own = |s: Option<&str>| s.map(str::to_string);
    let sender = sender.to_string();
    Event::Alarm {
        device: own(a.device),
        alarm: a.name.to_string(),
        description: own(a.description),
        severity: own(a.severity),
        syslog_severity: own(frame.severity.map(syslog::severity_name)),
        device_name: own(a.device_name),
        source: own(a.source),
        tenant: own(a.tenant),
        region: own(a.region),
        device_type: own(a.device_type),
        device_serial: own(a.device_serial),
        device_description: own(a.device_description),
        extra: a
            .extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        connection_lost: a.is_connection_lost(),
        wording: a.wording.to_string(),
        framing: frame.framing.to_string(),
        hostname: own(frame.hostname),
        sender,
        raw: raw_text(raw).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timefmt::Utc;

    #[test]
    fn borrowed_alarm_line_is_byte_for_byte_the_event_line() {
        let long = format!(
            "<130>Jun 22 16:16:05 ovoc : New Alarm - Connection Alarm, Major, Description:{}, IP Address:10.0.0.1",
            "x".repeat(9000)
        );
        let inputs: Vec<&[u8]> = vec![
            b"<130>Jun 22 16:16:05 ovoc : New Alarm - Connection Alarm, Major, Source:Board#1, Description:Connection Lost, Device Name:MSBR-1, Tenant:Default, Region:Default, IP Address:10.0.0.1, Device Type:M500L-MSBR, Device Serial:1, Device Description:Branch 1\0\0",
            b"<13>1 2026-11-27T07:35:06Z ovoc app - - - Title: Alarm Connection Alarm, received from MSBR-2, 10.0.0.2 with Severity Major. Description: Board#1, Connection Lost",
            b"New Alarm - Odd \"quoted\" \\ name\t, Minor, Site:HQ, Rack: 4, more, words, Zone:a,b",
            b"<12>Nov  7 07:35:06 h t: New Alarm - caf\xe9 \xff, Clear, IP Address:fe80::1",
            b"New Alarm - , , ,",
            long.as_bytes(),
        ];
        let now = Utc::from_unix_micros(1_700_000_000_123_456);
        for (i, data) in inputs.iter().enumerate() {
            for sender in ["10.9.9.9:514", "[fe80::1]:20001"] {
                let sender: SocketAddr = sender.parse().unwrap();
                let text = syslog::text(data);
                let (frame, alarm) = read(&text);
                let alarm = alarm.unwrap_or_else(|| panic!("input {i} is an alarm"));
                let sender_text = sender.to_string();
                let line = AlarmLine::new(&frame, &alarm, &sender_text, &text);
                let borrowed = crate::emit::line_with(now, |out| line.write_json(out));
                let owned = crate::emit::line(&alarm_event(&frame, &alarm, sender, &text), now);
                assert_eq!(borrowed, owned, "input {i}");
            }
        }
    }
}
