//! OVOC's forwarded alarms: syslog framing and OVOC body parsing (pure), and `tc alarm listen`.
//! `tc session` reads its datagrams with the same `read`.

pub mod listen;
pub mod ovoc;
pub mod syslog;

use std::net::SocketAddr;

use crate::event::Event;

/// Longest `raw` text carried in an event; the rest is cut with a marker.
const RAW_MAX: usize = 8192;

pub fn raw_text(t: &str) -> String {
    if t.len() <= RAW_MAX {
        return t.to_string();
    }
    let mut end = RAW_MAX;
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...[{} bytes]", &t[..end], t.len())
}

/// One datagram, read: its framing, and the OVOC alarm in it if there is one.
pub fn read(datagram: &[u8]) -> (syslog::Frame, Option<ovoc::Alarm>) {
    let frame = syslog::parse(datagram);
    let alarm = ovoc::parse(&frame.msg);
    (frame, alarm)
}

pub fn alarm_event(frame: &syslog::Frame, a: ovoc::Alarm, sender: SocketAddr, raw: &str) -> Event {
    Event::Alarm {
        connection_lost: a.is_connection_lost(),
        device: a.device,
        alarm: a.name,
        description: a.description,
        severity: a.severity,
        syslog_severity: frame.severity.map(|s| syslog::severity_name(s).to_string()),
        device_name: a.device_name,
        source: a.source,
        tenant: a.tenant,
        region: a.region,
        device_type: a.device_type,
        device_serial: a.device_serial,
        device_description: a.device_description,
        extra: a.extra,
        wording: a.wording.to_string(),
        framing: frame.framing.to_string(),
        hostname: frame.hostname.clone(),
        sender: sender.to_string(),
        raw: raw_text(raw),
    }
}
