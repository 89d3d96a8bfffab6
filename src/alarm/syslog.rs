//! Syslog framing, pure: RFC 3164 and RFC 5424, a missing PRI or header tolerated, trailing
//! NULs and line ends stripped, bytes that are not UTF-8 replaced rather than refused.

/// One datagram's framing, with the message text it carries; borrowed from the datagram's text
/// (nothing is copied: `tc alarm listen` reads hundreds of thousands a second).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    /// `rfc5424`, `rfc3164` or `none` (no recognisable header).
    pub framing: &'static str,
    pub facility: Option<u8>,
    pub severity: Option<u8>,
    pub timestamp: Option<&'a str>,
    pub hostname: Option<&'a str>,
    pub app: Option<&'a str>,
    pub msg: &'a str,
}

pub const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

pub fn severity_name(s: u8) -> &'static str {
    SEVERITIES.get(s as usize).copied().unwrap_or("unknown")
}

const MONTHS: [[u8; 3]; 12] = [
    *b"Jan", *b"Feb", *b"Mar", *b"Apr", *b"May", *b"Jun", *b"Jul", *b"Aug", *b"Sep", *b"Oct",
    *b"Nov", *b"Dec",
];

/// The text of a datagram: trailing NULs and line ends dropped, invalid UTF-8 replaced (only
/// then is it copied).
pub fn text(datagram: &[u8]) -> std::borrow::Cow<'_, str> {
    let mut end = datagram.len();
    while end > 0 && matches!(datagram[end - 1], 0 | b'\n' | b'\r') {
        end -= 1;
    }
    // from_utf8 checks ASCII a word at a time; the lossy decoder is the slow path, for the rare
    // datagram that needs it.
    match std::str::from_utf8(&datagram[..end]) {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        Err(_) => String::from_utf8_lossy(&datagram[..end]),
    }
}

fn take_pri(s: &str) -> (Option<u8>, &str) {
    let b = s.as_bytes();
    if b.first() != Some(&b'<') {
        return (None, s);
    }
    // `<`, one to three digits, `>`.
    let digits = b[1..]
        .iter()
        .take(4)
        .take_while(|c| c.is_ascii_digit())
        .count();
    if !(1..=3).contains(&digits) || b.get(1 + digits) != Some(&b'>') {
        return (None, s);
    }
    let p = b[1..1 + digits]
        .iter()
        .fold(0u16, |p, &d| p * 10 + u16::from(d - b'0'));
    match p {
        0..=191 => (Some(p as u8), &s[2 + digits..]),
        _ => (None, s),
    }
}

/// Header tokens are a few bytes long: a byte loop finds their end sooner than `str::find`'s
/// searcher, which is built for long haystacks.
fn split_token(s: &str) -> (&str, &str) {
    match s.bytes().position(|c| c == b' ') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    }
}

/// `s.split_once(": ")`, by memchr like the rest of the hot path.
fn split_colon_space(s: &str) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    memchr::memchr_iter(b':', b)
        .find(|&i| b.get(i + 1) == Some(&b' '))
        .map(|i| (&s[..i], &s[i + 2..]))
}

fn nil(s: &str) -> Option<&str> {
    (s != "-" && !s.is_empty()).then_some(s)
}

/// Skip RFC 5424 structured data: `-` or one or more `[...]` with `\]` escapes.
fn skip_sd(s: &str) -> Option<&str> {
    if let Some(rest) = s.strip_prefix('-') {
        return Some(rest.strip_prefix(' ').unwrap_or(rest));
    }
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && b[i] == b'[' {
        i += 1;
        let mut escaped = false;
        loop {
            let c = *b.get(i)?;
            i += 1;
            match (escaped, c) {
                (false, b'\\') => escaped = true,
                (false, b']') => break,
                _ => escaped = false,
            }
        }
    }
    if i == 0 {
        return None;
    }
    let rest = &s[i..];
    Some(rest.strip_prefix(' ').unwrap_or(rest))
}

fn rfc5424(rest: &str) -> Option<(&str, &str, &str, &str)> {
    let rest = rest.strip_prefix("1 ")?;
    let (ts, rest) = split_token(rest);
    let (host, rest) = split_token(rest);
    let (app, rest) = split_token(rest);
    let (_procid, rest) = split_token(rest);
    let (_msgid, rest) = split_token(rest);
    let msg = skip_sd(rest)?;
    let msg = msg.strip_prefix('\u{feff}').unwrap_or(msg);
    Some((ts, host, app, msg))
}

/// `Mmm dd hh:mm:ss` (day space-padded) at the start.
fn rfc3164_timestamp(s: &str) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    if b.len() < 15 || !MONTHS.contains(&[b[0], b[1], b[2]]) || b[3] != b' ' {
        return None;
    }
    let day_ok = (b[4] == b' ' || b[4].is_ascii_digit()) && b[5].is_ascii_digit();
    let time_ok = b[6] == b' '
        && b[7..9].iter().all(u8::is_ascii_digit)
        && b[9] == b':'
        && b[10..12].iter().all(u8::is_ascii_digit)
        && b[12] == b':'
        && b[13..15].iter().all(u8::is_ascii_digit);
    if !(day_ok && time_ok) {
        return None;
    }
    let rest = &s[15..];
    Some((&s[..15], rest.strip_prefix(' ').unwrap_or(rest)))
}

/// Reads the framing of a datagram's [`text`].
pub fn parse(t: &str) -> Frame<'_> {
    let (pri, rest) = take_pri(t);
    let (facility, severity) = (pri.map(|p| p / 8), pri.map(|p| p % 8));
    if let Some((ts, host, app, msg)) = rfc5424(rest) {
        return Frame {
            framing: "rfc5424",
            facility,
            severity,
            timestamp: nil(ts),
            hostname: nil(host),
            app: nil(app),
            msg,
        };
    }
    if let Some((ts, rest)) = rfc3164_timestamp(rest) {
        let (host, after) = split_token(rest);
        // `host tag: msg`, `host tag[pid]: msg`, `host : msg` (OVOC), or `host msg`.
        let (app, msg) = match split_colon_space(after) {
            Some((tag, msg)) if !tag.contains(' ') => {
                let tag = tag.split('[').next().unwrap_or(tag);
                (nil(tag), msg)
            }
            _ => match after.strip_prefix(": ").or_else(|| after.strip_prefix(':')) {
                Some(m) => (None, m),
                None => (None, after),
            },
        };
        return Frame {
            framing: "rfc3164",
            facility,
            severity,
            timestamp: Some(ts),
            hostname: nil(host),
            app,
            msg: msg.trim_start(),
        };
    }
    Frame {
        framing: if pri.is_some() { "pri-only" } else { "none" },
        facility,
        severity,
        timestamp: None,
        hostname: None,
        app: None,
        msg: rest.trim_start(),
    }
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;

    #[test]
    fn framings() {
        // (input, framing, severity, hostname, app, msg)
        let t: &[(&[u8], &str, Option<u8>, Option<&str>, Option<&str>, &str)] = &[
            (b"<129>Jun 22 16:16:05 ovoc-srv : New Alarm - X", "rfc3164", Some(1), Some("ovoc-srv"), None, "New Alarm - X"),
            (b"<13>Nov  7 07:35:06 host tc-test: hello world", "rfc3164", Some(5), Some("host"), Some("tc-test"), "hello world"),
            (b"<13>Nov 27 07:35:06 host tag[123]: hi: there", "rfc3164", Some(5), Some("host"), Some("tag"), "hi: there"),
            (b"<13>Nov 27 07:35:06 host just text", "rfc3164", Some(5), Some("host"), None, "just text"),
            (
                b"<13>1 2026-11-27T07:35:06.123456+00:00 host app 42 - [timeQuality tzKnown=\"1\" x=\"a\\]b\"] msg here",
                "rfc5424",
                Some(5),
                Some("host"),
                Some("app"),
                "msg here",
            ),
            (b"<14>1 - - - - - - bare", "rfc5424", Some(6), None, None, "bare"),
            (b"<14>1 2026-11-27T00:00:00Z h a - - - \xef\xbb\xbfwith bom", "rfc5424", Some(6), Some("h"), Some("a"), "with bom"),
            (b"New Alarm - X\0\0\0", "none", None, None, None, "New Alarm - X"),
            (b"<999>text", "none", None, None, None, "<999>text"),
            (b"<12>text\r\n", "pri-only", Some(4), None, None, "text"),
            (b"", "none", None, None, None, ""),
            (b"<>", "none", None, None, None, "<>"),
            (b"<0>a", "pri-only", Some(0), None, None, "a"),
            (b"<191>a", "pri-only", Some(7), None, None, "a"),
            (b"<192>a", "none", None, None, None, "<192>a"),
            (b"<0013>a", "none", None, None, None, "<0013>a"),
            (b"<013>a", "pri-only", Some(5), None, None, "a"),
            (b"<1a>b", "none", None, None, None, "<1a>b"),
            (b"<13", "none", None, None, None, "<13"),
            (b"<13>Nov 27 07:35:06 host a:b c", "rfc3164", Some(5), Some("host"), None, "a:b c"),
            (b"<13>Nov 27 07:35:06 host a:b: c", "rfc3164", Some(5), Some("host"), Some("a:b"), "c"),
            (b"<13>Nox 27 07:35:06 host x", "pri-only", Some(5), None, None, "Nox 27 07:35:06 host x"),
        ];
        for (input, framing, sev, host, app, msg) in t {
            let text = text(input);
            let f = parse(&text);
            assert_eq!(f.framing, *framing, "{input:?}");
            assert_eq!(f.severity, *sev, "{input:?}");
            assert_eq!(f.hostname, *host, "{input:?}");
            assert_eq!(f.app, *app, "{input:?}");
            assert_eq!(f.msg, *msg, "{input:?}");
        }
    }

    #[test]
    fn invalid_utf8_is_replaced_not_refused() {
        let text = text(b"<13>Nov 27 07:35:06 h t: caf\xe9 \xff");
        let f = parse(&text);
        assert_eq!(f.framing, "rfc3164");
        assert!(f.msg.starts_with("caf\u{fffd}"));
    }

    #[test]
    fn severity_names() {
        assert_eq!(severity_name(1), "alert");
        assert_eq!(severity_name(2), "crit");
        assert_eq!(severity_name(9), "unknown");
    }
}
