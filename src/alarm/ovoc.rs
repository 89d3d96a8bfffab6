//! OVOC's forwarded alarm bodies, pure. Two wordings (ovoc.md):
//! - what real servers sent: `New Alarm - <name>, <severity>, Key:Value, Key:Value, ...`
//! - the manual's template: `Title: <Alarm|Event> <name>, received from <node name>, <node ip>
//!   with Severity <severity>. Description: <source>, <description>`
//!
//! Fields may come in any order; unknown ones are kept; a value may itself contain commas.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Alarm {
    /// `new-alarm` or `template`.
    pub wording: &'static str,
    pub name: String,
    pub severity: Option<String>,
    pub source: Option<String>,
    pub description: Option<String>,
    pub device: Option<String>,
    pub device_name: Option<String>,
    pub tenant: Option<String>,
    pub region: Option<String>,
    pub device_type: Option<String>,
    pub device_serial: Option<String>,
    pub device_description: Option<String>,
    /// Fields of no known name, as sent.
    pub extra: BTreeMap<String, String>,
}

const SEVERITY_WORDS: &[&str] = &[
    "critical",
    "major",
    "minor",
    "warning",
    "indeterminate",
    "clear",
    "cleared",
    "info",
];

fn opt(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// A `Key:` prefix: letters, digits and spaces before the first colon.
fn key_of(token: &str) -> Option<(&str, &str)> {
    let (k, v) = token.split_once(':')?;
    let k = k.trim();
    let ok = !k.is_empty()
        && k.len() <= 40
        && k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '_' || c == '-');
    ok.then_some((k, v))
}

impl Alarm {
    fn set(&mut self, key: &str, value: &str) {
        let norm: String = key
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        let v = opt(value);
        let slot = match norm.as_str() {
            "source" => &mut self.source,
            "description" => &mut self.description,
            "ipaddress" | "ip" | "nodeip" => &mut self.device,
            "devicename" | "nodename" => &mut self.device_name,
            "tenant" => &mut self.tenant,
            "region" => &mut self.region,
            "devicetype" => &mut self.device_type,
            "deviceserial" => &mut self.device_serial,
            "devicedescription" => &mut self.device_description,
            "severity" => &mut self.severity,
            _ => {
                self.extra
                    .insert(key.trim().to_string(), value.trim().to_string());
                return;
            }
        };
        *slot = v;
    }

    /// The original's trigger: alarm `Connection Alarm` with description `Connection Lost`,
    /// case-insensitive, spaces trimmed.
    pub fn is_connection_lost(&self) -> bool {
        self.name.trim().eq_ignore_ascii_case("Connection Alarm")
            && self
                .description
                .as_deref()
                .is_some_and(|d| d.trim().eq_ignore_ascii_case("Connection Lost"))
    }
}

pub fn parse(msg: &str) -> Option<Alarm> {
    if let Some(i) = find_ci(msg, "new alarm -") {
        return Some(new_alarm(&msg[i + "new alarm -".len()..]));
    }
    if let Some(i) = find_ci(msg, "title:") {
        return template(&msg[i + "title:".len()..]);
    }
    None
}

fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    hay.to_ascii_lowercase().find(needle)
}

fn new_alarm(body: &str) -> Alarm {
    let mut a = Alarm {
        wording: "new-alarm",
        ..Alarm::default()
    };
    let mut tokens = body.split(',');
    a.name = tokens.next().unwrap_or("").trim().to_string();
    // (key, value) in arrival order; tokens without a key continue the previous value.
    let mut fields: Vec<(String, String)> = Vec::new();
    for tok in tokens {
        match key_of(tok) {
            Some((k, v)) => fields.push((k.to_string(), v.to_string())),
            None if a.severity.is_none()
                && fields.is_empty()
                && SEVERITY_WORDS.contains(&tok.trim().to_ascii_lowercase().as_str()) =>
            {
                a.severity = opt(tok)
            }
            None => match fields.last_mut() {
                Some((_, v)) => {
                    v.push(',');
                    v.push_str(tok);
                }
                None if a.severity.is_none() => a.severity = opt(tok),
                None => {
                    a.extra.insert(
                        format!("field{}", a.extra.len() + 1),
                        tok.trim().to_string(),
                    );
                }
            },
        }
    }
    for (k, v) in fields {
        a.set(&k, &v);
    }
    a
}

fn template(body: &str) -> Option<Alarm> {
    let mut a = Alarm {
        wording: "template",
        ..Alarm::default()
    };
    let lower = body.to_ascii_lowercase();
    let rf = lower.find(", received from ")?;
    let title = body[..rf].trim();
    a.name = ["Alarm ", "Event "]
        .iter()
        .find_map(|p| title.strip_prefix(p))
        .unwrap_or(title)
        .trim()
        .to_string();
    let after = &body[rf + ", received from ".len()..];
    let lower_after = &lower[rf + ", received from ".len()..];
    let ws = lower_after.find(" with severity ")?;
    let node = after[..ws].trim();
    match node.rsplit_once(',') {
        Some((name, ip)) => {
            a.device_name = opt(name);
            a.device = opt(ip);
        }
        None if node.parse::<std::net::IpAddr>().is_ok() => a.device = opt(node),
        None => a.device_name = opt(node),
    }
    let sev_rest = &after[ws + " with severity ".len()..];
    let lower_sev = sev_rest.to_ascii_lowercase();
    match lower_sev.find(". description:") {
        Some(d) => {
            a.severity = opt(&sev_rest[..d]);
            let desc = &sev_rest[d + ". description:".len()..];
            match desc.split_once(',') {
                Some((src, d)) => {
                    a.source = opt(src);
                    a.description = opt(d);
                }
                None => a.description = opt(desc),
            }
        }
        None => a.severity = opt(sev_rest.trim_end_matches('.')),
    }
    Some(a)
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;

    const REAL: &str = "New Alarm - Connection Alarm, Major, Source:Board#1, Description:Connection Lost, Device Name:MSBR-1, Tenant:Default, Region:Default, IP Address:192.168.200.218, Device Type:M500L-MSBR, Device Serial:123456, Device Description:Branch 1";

    #[test]
    fn real_wording() {
        let a = parse(REAL).unwrap();
        assert_eq!(a.wording, "new-alarm");
        assert_eq!(a.name, "Connection Alarm");
        assert_eq!(a.severity.as_deref(), Some("Major"));
        assert_eq!(a.source.as_deref(), Some("Board#1"));
        assert_eq!(a.description.as_deref(), Some("Connection Lost"));
        assert_eq!(a.device.as_deref(), Some("192.168.200.218"));
        assert_eq!(a.device_name.as_deref(), Some("MSBR-1"));
        assert_eq!(a.tenant.as_deref(), Some("Default"));
        assert_eq!(a.region.as_deref(), Some("Default"));
        assert_eq!(a.device_type.as_deref(), Some("M500L-MSBR"));
        assert_eq!(a.device_serial.as_deref(), Some("123456"));
        assert_eq!(a.device_description.as_deref(), Some("Branch 1"));
        assert!(a.extra.is_empty());
        assert!(a.is_connection_lost());
    }

    #[test]
    fn table() {
        // (message, name, severity, description, device, connection lost?)
        let t: &[(&str, &str, Option<&str>, Option<&str>, Option<&str>, bool)] = &[
            (
                "New Alarm - Connection Alarm, Major, IP Address:10.0.0.1, Description:Connection Lost",
                "Connection Alarm", Some("Major"), Some("Connection Lost"), Some("10.0.0.1"), true,
            ),
            (
                "new alarm -  connection alarm , Critical, Description: connection lost , IP Address:fe80::1",
                "connection alarm", Some("Critical"), Some("connection lost"), Some("fe80::1"), true,
            ),
            (
                "New Alarm - Connection Alarm, Clear, Description:Connection established, IP Address:10.0.0.1",
                "Connection Alarm", Some("Clear"), Some("Connection established"), Some("10.0.0.1"), false,
            ),
            ("New Alarm - Connection Alarm", "Connection Alarm", None, None, None, false),
            (
                "New Alarm - Power Supply Alarm, Minor, Description:PSU 2 failed, IP Address:10.0.0.2",
                "Power Supply Alarm", Some("Minor"), Some("PSU 2 failed"), Some("10.0.0.2"), false,
            ),
            (
                "Title: Alarm Connection Alarm, received from MSBR-1, 192.168.200.218 with Severity Major. Description: Board#1, Connection Lost",
                "Connection Alarm", Some("Major"), Some("Connection Lost"), Some("192.168.200.218"), true,
            ),
            (
                "Title: Event Connection Alarm, received from 10.1.1.1 with Severity Clear.",
                "Connection Alarm", Some("Clear"), None, Some("10.1.1.1"), false,
            ),
        ];
        for (msg, name, sev, desc, dev, lost) in t {
            let a = parse(msg).unwrap_or_else(|| panic!("{msg}"));
            assert_eq!(a.name, *name, "{msg}");
            assert_eq!(a.severity.as_deref(), *sev, "{msg}");
            assert_eq!(a.description.as_deref(), *desc, "{msg}");
            assert_eq!(a.device.as_deref(), *dev, "{msg}");
            assert_eq!(a.is_connection_lost(), *lost, "{msg}");
        }
    }

    #[test]
    fn reordered_extra_and_comma_values() {
        let a = parse("New Alarm - Connection Alarm, Major, IP Address:10.0.0.1, Site:HQ, Device Description:Branch 1, floor 2, Description:Connection Lost").unwrap();
        assert_eq!(a.device_description.as_deref(), Some("Branch 1, floor 2"));
        assert_eq!(a.extra.get("Site").map(String::as_str), Some("HQ"));
        assert!(a.is_connection_lost());
    }

    #[test]
    fn not_an_alarm() {
        for m in [
            "",
            "hello",
            "200 OK 10.0.0.1 CAPTURE",
            "Title: no structure here",
        ] {
            assert_eq!(parse(m), None, "{m}");
        }
    }
}
