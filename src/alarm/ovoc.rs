//! OVOC's forwarded alarm bodies, pure. Two wordings (ovoc.md):
//! - what real servers sent: `New Alarm - <name>, <severity>, Key:Value, Key:Value, ...`
//! - the manual's template: `Title: <Alarm|Event> <name>, received from <node name>, <node ip>
//!   with Severity <severity>. Description: <source>, <description>`
//!
//! Fields may come in any order; unknown ones are kept; a value may itself contain commas.

use std::borrow::Cow;
use std::collections::BTreeMap;

/// An alarm, borrowed from the message text: reading one copies nothing unless it has fields of
/// no known name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Alarm<'a> {
    /// `new-alarm` or `template`.
    pub wording: &'static str,
    pub name: &'a str,
    pub severity: Option<&'a str>,
    pub source: Option<&'a str>,
    pub description: Option<&'a str>,
    pub device: Option<&'a str>,
    pub device_name: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub region: Option<&'a str>,
    pub device_type: Option<&'a str>,
    pub device_serial: Option<&'a str>,
    pub device_description: Option<&'a str>,
    /// Fields of no known name, as sent (keys `field<n>` for values without a key).
    pub extra: BTreeMap<Cow<'a, str>, &'a str>,
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

fn opt(s: &str) -> Option<&str> {
    let t = trim(s);
    (!t.is_empty()).then_some(t)
}

/// `str::trim`, quicker for what OVOC sends: ASCII spaces are stripped here, and `trim`'s
/// Unicode rules are asked only when an end still holds something other than printable ASCII.
fn trim(s: &str) -> &str {
    let b = s.as_bytes();
    let (mut i, mut j) = (0, b.len());
    while i < j && b[i] == b' ' {
        i += 1;
    }
    while j > i && b[j - 1] == b' ' {
        j -= 1;
    }
    let t = &s[i..j];
    match (t.as_bytes().first(), t.as_bytes().last()) {
        (Some(f), Some(l)) if !f.is_ascii_graphic() || !l.is_ascii_graphic() => t.trim(),
        _ => t,
    }
}

/// A `Key:` prefix: letters, digits, spaces, `_` and `-` before the first colon, starting with a
/// letter, at most 40 bytes once trimmed.
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

/// What a byte can be in a key: 1 plain (letter, digit, space, `_`, `-`), 2 the colon ending
/// it, 0 anything else.
const KEY_BYTES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = match b {
            b':' => 2,
            b' ' | b'_' | b'-' => 1,
            _ if b.is_ascii_alphanumeric() => 1,
            _ => 0,
        };
        c += 1;
    }
    t
};

/// [`key_of`] for the token `body[start..end]`, whose bytes from `start` are plain (letters,
/// digits, space, `_`, `-`) up to `stop` (see [`plain_run`]). Every field OVOC sends has a plain
/// key up to the colon; any other byte before the colon hands the token to `key_of`, which
/// defines the rule.
fn key_at(body: &str, start: usize, stop: usize, end: usize) -> Option<(&str, &str)> {
    if stop >= end {
        return None;
    }
    if body.as_bytes()[stop] != b':' {
        return key_of(&body[start..end]);
    }
    let k = trim(&body[start..stop]);
    let ok = !k.is_empty() && k.len() <= 40 && k.as_bytes()[0].is_ascii_alphabetic();
    ok.then(|| (k, &body[stop + 1..end]))
}

/// The first comma at or after `i`, else `b.len()`.
fn next_comma(b: &[u8], i: usize) -> usize {
    memchr::memchr(b',', &b[i..]).map_or(b.len(), |p| i + p)
}

/// Where the run of plain key bytes that starts at `i` ends. The run may go past a token's end
/// only through plain bytes; the comma that ends a token is not one.
fn plain_run(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && KEY_BYTES[b[i] as usize] == 1 {
        i += 1;
    }
    i
}

impl<'a> Alarm<'a> {
    fn set(&mut self, key: &'a str, value: &'a str) {
        let slot = match key {
            // OVOC's own spellings, found without the normalizing below.
            "IP Address" => &mut self.device,
            "Description" => &mut self.description,
            "Source" => &mut self.source,
            "Device Name" => &mut self.device_name,
            "Tenant" => &mut self.tenant,
            "Region" => &mut self.region,
            "Device Type" => &mut self.device_type,
            "Device Serial" => &mut self.device_serial,
            "Device Description" => &mut self.device_description,
            _ => return self.set_normalized(key, value),
        };
        *slot = opt(value);
    }

    fn set_normalized(&mut self, key: &'a str, value: &'a str) {
        // Letters and digits of the key, lower-cased; key_of caps keys at 40 bytes.
        let mut norm = [0u8; 40];
        let mut n = 0;
        for &b in key.as_bytes() {
            if b.is_ascii_alphanumeric() {
                if n == norm.len() {
                    break;
                }
                norm[n] = b.to_ascii_lowercase();
                n += 1;
            }
        }
        let v = opt(value);
        let slot = match &norm[..n] {
            b"source" => &mut self.source,
            b"description" => &mut self.description,
            b"ipaddress" | b"ip" | b"nodeip" => &mut self.device,
            b"devicename" | b"nodename" => &mut self.device_name,
            b"tenant" => &mut self.tenant,
            b"region" => &mut self.region,
            b"devicetype" => &mut self.device_type,
            b"deviceserial" => &mut self.device_serial,
            b"devicedescription" => &mut self.device_description,
            b"severity" => &mut self.severity,
            _ => {
                self.extra.insert(Cow::Borrowed(key.trim()), value.trim());
                return;
            }
        };
        *slot = v;
    }

    /// The original's trigger: alarm `Connection Alarm` with description `Connection Lost`,
    /// case-insensitive, spaces trimmed.
    pub fn is_connection_lost(&self) -> bool {
        trim(self.name).eq_ignore_ascii_case("Connection Alarm")
            && self
                .description
                .is_some_and(|d| trim(d).eq_ignore_ascii_case("Connection Lost"))
    }
}

/// Reads the OVOC alarm in a syslog message's text into `a`, an `Alarm::default()`, filled in
/// place. False (and `a` unspecified) when `msg` holds no alarm.
pub fn parse_into<'a>(msg: &'a str, a: &mut Alarm<'a>) -> bool {
    if let Some(i) = find_ci(msg, "new alarm -") {
        new_alarm(&msg[i + "new alarm -".len()..], a);
        return true;
    }
    if let Some(i) = find_ci(msg, "title:") {
        return template(&msg[i + "title:".len()..], a).is_some();
    }
    false
}

/// Where the lower-case ASCII `needle` starts in `hay`, ignoring ASCII case. The index is a char
/// boundary: the needle starts with an ASCII byte.
fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    let first = *n.first()?;
    (0..h.len().checked_sub(n.len())? + 1)
        .find(|&i| h[i].to_ascii_lowercase() == first && h[i..i + n.len()].eq_ignore_ascii_case(n))
}

fn new_alarm<'a>(body: &'a str, a: &mut Alarm<'a>) {
    a.wording = "new-alarm";
    // Tokens are the text between commas. A token's key is read first, and its comma looked
    // for from where the key's plain bytes end (they hold no comma).
    let b = body.as_bytes();
    let first = next_comma(b, 0);
    a.name = trim(&body[..first]);
    // The field being read: its key and its value's start and end in `body`. A token without a
    // key continues the value, which then reaches to the token's end, commas included.
    let mut field: Option<(&str, usize, usize)> = None;
    let mut start = first + 1;
    while start <= body.len() {
        let stop = plain_run(b, start);
        let end = next_comma(b, stop);
        let tok = &body[start..end];
        match key_at(body, start, stop, end) {
            Some((k, v)) => {
                let from = v.as_ptr() as usize - body.as_ptr() as usize;
                if let Some((k, s, e)) = field.replace((k, from, end)) {
                    a.set(k, &body[s..e]);
                }
            }
            None if a.severity.is_none() && field.is_none() && is_severity_word(tok) => {
                a.severity = opt(tok)
            }
            None => match &mut field {
                Some((_, _, e)) => *e = end,
                None if a.severity.is_none() => a.severity = opt(tok),
                None => {
                    let key = format!("field{}", a.extra.len() + 1);
                    a.extra.insert(Cow::Owned(key), tok.trim());
                }
            },
        }
        start = end + 1;
    }
    if let Some((k, s, e)) = field {
        a.set(k, &body[s..e]);
    }
}

fn is_severity_word(tok: &str) -> bool {
    let t = trim(tok);
    SEVERITY_WORDS.iter().any(|w| t.eq_ignore_ascii_case(w))
}

fn template<'a>(body: &'a str, a: &mut Alarm<'a>) -> Option<()> {
    a.wording = "template";
    let rf = find_ci(body, ", received from ")?;
    let title = body[..rf].trim();
    a.name = ["Alarm ", "Event "]
        .iter()
        .find_map(|p| title.strip_prefix(p))
        .unwrap_or(title)
        .trim();
    let after = &body[rf + ", received from ".len()..];
    let ws = find_ci(after, " with severity ")?;
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
    match find_ci(sev_rest, ". description:") {
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
    Some(())
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
        assert_eq!(a.severity, Some("Major"));
        assert_eq!(a.source, Some("Board#1"));
        assert_eq!(a.description, Some("Connection Lost"));
        assert_eq!(a.device, Some("192.168.200.218"));
        assert_eq!(a.device_name, Some("MSBR-1"));
        assert_eq!(a.tenant, Some("Default"));
        assert_eq!(a.region, Some("Default"));
        assert_eq!(a.device_type, Some("M500L-MSBR"));
        assert_eq!(a.device_serial, Some("123456"));
        assert_eq!(a.device_description, Some("Branch 1"));
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
            assert_eq!(a.severity, *sev, "{msg}");
            assert_eq!(a.description, *desc, "{msg}");
            assert_eq!(a.device, *dev, "{msg}");
            assert_eq!(a.is_connection_lost(), *lost, "{msg}");
        }
    }

    #[test]
    fn reordered_extra_and_comma_values() {
        let a = parse("New Alarm - Connection Alarm, Major, IP Address:10.0.0.1, Site:HQ, Device Description:Branch 1, floor 2, Description:Connection Lost").unwrap();
        assert_eq!(a.device_description, Some("Branch 1, floor 2"));
        assert_eq!(a.extra.get("Site").copied(), Some("HQ"));
        assert!(a.is_connection_lost());
    }

    fn parse(msg: &str) -> Option<Alarm<'_>> {
        let mut a = Alarm::default();
        parse_into(msg, &mut a).then_some(a)
    }

    fn new_alarm_of(body: &str) -> Alarm<'_> {
        let mut a = Alarm::default();
        new_alarm(body, &mut a);
        a
    }

    /// The parser as it was before its single-pass rewrite (split, collect, then set), kept to
    /// hold the rewrite to the same answers.
    fn reference(body: &str) -> Alarm<'_> {
        fn set<'a>(a: &mut Alarm<'a>, key: &'a str, value: &'a str) {
            let norm: String = key
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(40)
                .map(|c| c.to_ascii_lowercase())
                .collect();
            let v = opt(value);
            let slot = match norm.as_str() {
                "source" => &mut a.source,
                "description" => &mut a.description,
                "ipaddress" | "ip" | "nodeip" => &mut a.device,
                "devicename" | "nodename" => &mut a.device_name,
                "tenant" => &mut a.tenant,
                "region" => &mut a.region,
                "devicetype" => &mut a.device_type,
                "deviceserial" => &mut a.device_serial,
                "devicedescription" => &mut a.device_description,
                "severity" => &mut a.severity,
                _ => {
                    a.extra.insert(Cow::Borrowed(key.trim()), value.trim());
                    return;
                }
            };
            *slot = v;
        }
        let mut a = Alarm {
            wording: "new-alarm",
            ..Alarm::default()
        };
        let mut tokens = body.split(',');
        a.name = tokens.next().unwrap_or("").trim();
        let offset = |part: &str| part.as_ptr() as usize - body.as_ptr() as usize;
        let mut fields: Vec<(&str, &str)> = Vec::new();
        for tok in tokens {
            match key_of(tok) {
                Some((k, v)) => fields.push((k, v)),
                None if a.severity.is_none()
                    && fields.is_empty()
                    && SEVERITY_WORDS
                        .iter()
                        .any(|w| tok.trim().eq_ignore_ascii_case(w)) =>
                {
                    a.severity = opt(tok)
                }
                None => match fields.last_mut() {
                    Some((_, v)) => *v = &body[offset(v)..offset(tok) + tok.len()],
                    None if a.severity.is_none() => a.severity = opt(tok),
                    None => {
                        let key = format!("field{}", a.extra.len() + 1);
                        a.extra.insert(Cow::Owned(key), tok.trim());
                    }
                },
            }
        }
        for (k, v) in fields {
            set(&mut a, k, v);
        }
        a
    }

    #[test]
    fn single_pass_reads_as_the_reference_does() {
        let pieces: &[&str] = &[
            ",",
            ",",
            ",",
            ":",
            ":",
            " ",
            "  ",
            "\t",
            "\u{a0}",
            "IP Address",
            "ip",
            "Node IP",
            "Major",
            " clear ",
            "CRITICAL",
            "Severity",
            "Description",
            "Device Name",
            "device_type",
            "Device-Serial",
            "Tenant",
            "Region",
            "Source",
            "Site",
            "x",
            "é",
            "Board#1",
            "10.0.0.1",
            "fe80::1",
            "Connection Lost",
            "_a",
            "-",
            "1abc",
            &"k".repeat(41),
            &"K".repeat(40),
        ];
        let mut next = crate::util::xorshift(0x2545_f491_4f6c_dd1du64);
        let mut tested = 0;
        for _ in 0..200_000 {
            let mut body = String::new();
            for _ in 0..(next() % 24) {
                body.push_str(pieces[(next() % pieces.len() as u64) as usize]);
            }
            assert_eq!(new_alarm_of(&body), reference(&body), "{body:?}");
            tested += 1;
        }
        assert_eq!(tested, 200_000);
        for body in [
            REAL.trim_start_matches("New Alarm -"),
            "",
            ",",
            "a,",
            ",b:",
            "x:1,,y:2,",
        ] {
            assert_eq!(new_alarm_of(body), reference(body), "{body:?}");
        }
    }

    #[test]
    fn plain_run_follows_the_key_byte_table() {
        for c in 0..=255u8 {
            for at in 0..20 {
                let mut b = vec![b'a'; 20];
                b[at] = c;
                let want = if KEY_BYTES[c as usize] == 1 { 20 } else { at };
                assert_eq!(plain_run(&b, 0), want, "{c:#x} at {at}");
            }
        }
        assert_eq!(plain_run(b"Device Name:x", 0), 11);
        assert_eq!(plain_run(b"ab", 2), 2);
    }

    #[test]
    fn next_comma_finds_the_first() {
        for len in 0..40 {
            for at in 0..=len {
                let mut b = vec![b'x'; len];
                if at < len {
                    b[at] = b',';
                    // A second comma after it must not be the one found.
                    if at + 1 < len {
                        b[len - 1] = b',';
                    }
                }
                for from in 0..=at {
                    assert_eq!(
                        next_comma(&b, from),
                        at,
                        "len {len}, comma at {at}, from {from}"
                    );
                }
            }
        }
    }

    #[test]
    fn trim_is_str_trim() {
        for s in [
            "",
            " ",
            "   ",
            "a",
            " a ",
            "a b",
            "\ta\t",
            " \u{a0}a\u{a0} ",
            "\u{0b}a",
            "a\r\n",
            " \u{3000}",
            "é ",
            " é",
            "\u{2028}x\u{2028}",
            "  x\u{85}",
            "\u{1680}",
        ] {
            assert_eq!(trim(s), s.trim(), "{s:?}");
        }
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
