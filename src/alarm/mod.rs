//! OVOC's forwarded alarms: syslog framing and OVOC body parsing (pure), and `tc alarm listen`.
//! `tc session` reads its datagrams with the same `read`.

pub mod listen;
pub mod ovoc;
pub mod syslog;

use crate::event::Event;
use std::borrow::Cow;

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

/// [`alarm_event`] into `ev`, keeping the strings an earlier alarm left there: a listener that
/// reuses one event allocates nothing for a line's fields once they have grown (musl's allocator
/// is slow at the many small allocations a fresh event takes).
pub fn fill_alarm_event(
    ev: &mut Event,
    frame: &syslog::Frame,
    a: &ovoc::Alarm,
    sender: &str,
    raw: &str,
) {
    let Event::Alarm {
        device,
        alarm,
        description,
        severity,
        syslog_severity,
        device_name,
        source,
        tenant,
        region,
        device_type,
        device_serial,
        device_description,
        extra,
        connection_lost,
        wording,
        framing,
        hostname,
        sender: from,
        raw: text,
    } = ev
    else {
        *ev = alarm_event(frame, a, sender, raw);
        return;
    };
    set_opt(device, a.device);
    set(alarm, a.name);
    set_opt(description, a.description);
    set_opt(severity, a.severity);
    set_opt(syslog_severity, frame.severity.map(syslog::severity_name));
    set_opt(device_name, a.device_name);
    set_opt(source, a.source);
    set_opt(tenant, a.tenant);
    set_opt(region, a.region);
    set_opt(device_type, a.device_type);
    set_opt(device_serial, a.device_serial);
    set_opt(device_description, a.device_description);
    extra.clear();
    extra.extend(a.extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    *connection_lost = a.is_connection_lost();
    set(wording, a.wording);
    set(framing, frame.framing);
    set_opt(hostname, frame.hostname);
    set(from, sender);
    set(text, &raw_text(raw));
}

fn set(s: &mut String, v: &str) {
    s.clear();
    s.push_str(v);
}

fn set_opt(s: &mut Option<String>, v: Option<&str>) {
    match (s.as_mut(), v) {
        (Some(s), Some(v)) => set(s, v),
        (_, v) => *s = v.map(str::to_string),
    }
}

/// The `alarm` event of one datagram: [`Event::Alarm`] is the one definition of the line.
pub fn alarm_event(frame: &syslog::Frame, a: &ovoc::Alarm, sender: &str, raw: &str) -> Event {
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
