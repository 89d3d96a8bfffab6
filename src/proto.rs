//! The UDP control protocol between a controller and an OVOC agent, wire-compatible with the
//! original trafficCapture 1.0.6 (spec/protocol.md). Pure: text in, values out; table-tested and
//! fuzzed. Requests are `VERB <device>` or `STOP <device> <filename>`; responses
//! `<code> <reason> <device> <VERB>` (1.0.6), without the verb (1.0.2-1.0.5), or
//! `TRYING|OK|FAIL <device>` (1.0.1).

use std::fmt;

use crate::netaddr::validate_device;

/// Longest request accepted: a 253-byte host name and a 255-byte file name fit.
pub const MAX_REQUEST: usize = 600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    Register,
    Capture,
    Verify,
    Stop,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Register => "REGISTER",
            Verb::Capture => "CAPTURE",
            Verb::Verify => "VERIFY",
            Verb::Stop => "STOP",
        }
    }

    pub fn parse(s: &str) -> Option<Verb> {
        match s {
            "REGISTER" => Some(Verb::Register),
            "CAPTURE" => Some(Verb::Capture),
            "VERIFY" => Some(Verb::Verify),
            "STOP" => Some(Verb::Stop),
            _ => None,
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub verb: Verb,
    pub device: String,
    pub filename: Option<String>,
}

impl Request {
    pub fn to_wire(&self) -> String {
        match &self.filename {
            Some(f) => format!("{} {} {f}", self.verb, self.device),
            None => format!("{} {}", self.verb, self.device),
        }
    }
}

/// Why a datagram is not a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// Not worth an answer (oversized, binary, unknown verb): dropped with a log line.
    Drop(String),
    /// A well-formed request with an invalid field: answered `400 Bad Request <device> <VERB>`.
    BadRequest {
        verb: Verb,
        device: String,
        why: String,
    },
}

/// A STOP file name: a plain basename of safe characters, nothing a path could be made of.
pub fn validate_filename(f: &str) -> Result<(), String> {
    let safe = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'+');
    if f.is_empty() || f.len() > 255 {
        return Err(format!(
            "invalid file name: {} bytes (1-255 allowed)",
            f.len()
        ));
    }
    if f == "." || f == ".." || f.contains("..") || f.starts_with('.') {
        return Err(format!(
            "invalid file name {f:?}: no '..' and no leading '.'"
        ));
    }
    if let Some(b) = f.bytes().find(|&b| !safe(b)) {
        return Err(format!(
            "invalid file name {:?}: character {:?} not allowed",
            f, b as char
        ));
    }
    Ok(())
}

pub fn parse_request(datagram: &[u8]) -> Result<Request, Reject> {
    if datagram.len() > MAX_REQUEST {
        return Err(Reject::Drop(format!(
            "oversized datagram ({} bytes)",
            datagram.len()
        )));
    }
    // Trailing NULs and line ends are common from hand-made senders (nc, echo).
    let mut end = datagram.len();
    while end > 0 && matches!(datagram[end - 1], 0 | b'\n' | b'\r') {
        end -= 1;
    }
    let d = &datagram[..end];
    if let Some(b) = d.iter().find(|&&b| !(0x20..0x7f).contains(&b)) {
        return Err(Reject::Drop(format!("non-ASCII or control byte 0x{b:02x}")));
    }
    let text = std::str::from_utf8(d).map_err(|_| Reject::Drop("not text".into()))?;
    let mut words = text.split(' ');
    let verb_word = words.next().unwrap_or("");
    let Some(verb) = Verb::parse(verb_word) else {
        return Err(Reject::Drop(format!(
            "unknown request {:?}",
            truncate(verb_word, 32)
        )));
    };
    let rest: Vec<&str> = words.collect();
    let device = rest.first().copied().unwrap_or("").to_string();
    if device.is_empty() {
        return Err(Reject::Drop(format!("{verb} without a device")));
    }
    let bad = |why: String| Reject::BadRequest {
        verb,
        device: device.clone(),
        why,
    };
    validate_device(&device).map_err(bad)?;
    let filename = match (verb, rest.len()) {
        (Verb::Stop, 2) => {
            validate_filename(rest[1]).map_err(bad)?;
            Some(rest[1].to_string())
        }
        (Verb::Stop, n) => {
            return Err(bad(format!(
                "STOP takes a device and a file name, got {} words",
                n
            )))
        }
        (_, 1) => None,
        (_, n) => return Err(bad(format!("{verb} takes one device, got {n} words"))),
    };
    Ok(Request {
        verb,
        device,
        filename,
    })
}

fn truncate(s: &str, n: usize) -> &str {
    let mut end = s.len().min(n);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The reason phrase for each code the agent sends.
pub fn reason(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        430 => "Flow Failed",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// `101 tc Agent <device> <REQUEST>`: a `tc` agent's first answer to REGISTER and CAPTURE. It
/// works on requests at once and answers a repeated request as the first, so a `tc` session
/// may resend to it sooner than to the original, single-threaded agent, which a duplicate
/// costs dearly. Provisional: the original controller changes state on `200 OK` only.
pub const TC_AGENT: u16 = 101;

pub fn tc_agent(device: &str, verb: Verb) -> Response {
    Response {
        code: TC_AGENT,
        reason: "tc Agent".into(),
        device: device.into(),
        verb: Some(verb),
    }
}

/// Sent just before the `200 OK` to a STOP whose capture is incomplete:
/// `199 Dropped <n> Packets <device> STOP`, or `199 Drops Unknown <device> STOP` when tcpdump
/// could not say (it was killed). A provisional answer, like `100 Trying`: the original
/// controller changes state on `200 OK` only, so it passes over it.
pub const INCOMPLETE: u16 = 199;

/// The `199` answer for a capture that lost `dropped` packets (None: unknown).
pub fn incomplete(device: &str, dropped: Option<u64>) -> Response {
    Response {
        code: INCOMPLETE,
        reason: match dropped {
            Some(n) => format!("Dropped {n} Packets"),
            None => "Drops Unknown".into(),
        },
        device: device.into(),
        verb: Some(Verb::Stop),
    }
}

/// What a `199` says: Some(Some(n)) n packets dropped, Some(None) unknown, None not a `199`.
pub fn parse_incomplete(r: &Response) -> Option<Option<u64>> {
    if r.code != INCOMPLETE {
        return None;
    }
    let w: Vec<&str> = r.reason.split(' ').collect();
    match w.as_slice() {
        ["Dropped", n, "Packets"] => Some(Some(n.parse().ok()?)),
        ["Drops", "Unknown"] => Some(None),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    pub reason: String,
    pub device: String,
    /// Absent in the replies of agents before 1.0.6.
    pub verb: Option<Verb>,
}

impl Response {
    pub fn new(code: u16, device: &str, verb: Verb) -> Response {
        Response {
            code,
            reason: reason(code).into(),
            device: device.into(),
            verb: Some(verb),
        }
    }

    pub fn to_wire(&self) -> String {
        match self.verb {
            Some(v) => format!("{} {} {} {v}", self.code, self.reason, self.device),
            None => format!("{} {} {}", self.code, self.reason, self.device),
        }
    }

    /// Final (not `100 Trying`).
    pub fn is_final(&self) -> bool {
        self.code >= 200
    }
}

/// Does this datagram look like an agent response (as opposed to a forwarded alarm)?
pub fn looks_like_response(text: &str) -> bool {
    let t = text.trim_start();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 {
        let rest = &t[digits..];
        return rest.starts_with(|c: char| c.is_whitespace())
            && rest
                .trim_start()
                .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
    }
    ["TRYING ", "OK ", "FAIL "].iter().any(|p| t.starts_with(p))
}

/// Parse a response in any of the three generations' forms. FQDN devices work (the original
/// controller's regex only matched IP literals).
pub fn parse_response(text: &str) -> Option<Response> {
    let t = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    let words: Vec<&str> = t.split_whitespace().collect();
    if words.len() == 2 {
        let code = match words[0] {
            "TRYING" => 100,
            "OK" => 200,
            "FAIL" => 503,
            _ => return None,
        };
        validate_device(words[1]).ok()?;
        return Some(Response {
            code,
            reason: words[0].into(),
            device: words[1].into(),
            verb: None,
        });
    }
    let code: u16 = words.first()?.parse().ok()?;
    if !(100..=699).contains(&code) || words.len() < 3 {
        return None;
    }
    let (verb, device_idx) = match Verb::parse(words[words.len() - 1]) {
        Some(v) if words.len() >= 4 => (Some(v), words.len() - 2),
        _ => (None, words.len() - 1),
    };
    let device = words[device_idx];
    validate_device(device).ok()?;
    let reason = words[1..device_idx].join(" ");
    if reason.is_empty() {
        return None;
    }
    Some(Response {
        code,
        reason,
        device: device.into(),
        verb,
    })
}

/// The OVOC capture file names for a CPE file name: `CPE_<x>.pcap` -> `OVOC_<x>-<n>.pcap`,
/// stripping the exact prefix and suffix (the original stripped character sets).
pub fn ovoc_base(cpe_filename: &str) -> String {
    let s = cpe_filename.strip_prefix("CPE_").unwrap_or(cpe_filename);
    let s = s.strip_suffix(".pcap").unwrap_or(s);
    s.to_string()
}

pub fn ovoc_name(base: &str, n: u32) -> String {
    format!("OVOC_{base}-{n}.pcap")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        let ok: &[(&[u8], Verb, &str, Option<&str>)] = &[
            (
                b"REGISTER 192.168.200.218",
                Verb::Register,
                "192.168.200.218",
                None,
            ),
            (
                b"CAPTURE msbr-1.example.com",
                Verb::Capture,
                "msbr-1.example.com",
                None,
            ),
            (b"VERIFY fe80::1", Verb::Verify, "fe80::1", None),
            (
                b"STOP 192.168.200.218 CPE_device_192.168.200.218_2022-06-22T16.16.07.565758.pcap",
                Verb::Stop,
                "192.168.200.218",
                Some("CPE_device_192.168.200.218_2022-06-22T16.16.07.565758.pcap"),
            ),
            (b"CAPTURE 10.0.0.1\n", Verb::Capture, "10.0.0.1", None),
            (b"CAPTURE 10.0.0.1\0\0", Verb::Capture, "10.0.0.1", None),
        ];
        for (d, verb, dev, file) in ok {
            let r = parse_request(d).unwrap_or_else(|e| panic!("{d:?}: {e:?}"));
            assert_eq!(
                (r.verb, r.device.as_str(), r.filename.as_deref()),
                (*verb, *dev, *file)
            );
            assert_eq!(parse_request(r.to_wire().as_bytes()).unwrap(), r);
        }
    }

    #[test]
    fn rejected_requests() {
        let big = vec![b'A'; 65_536];
        let drops: &[&[u8]] = &[
            &big,
            b"",
            b"capture 10.0.0.1",
            b"HELLO 10.0.0.1",
            b"CAPTURE",
            b"CAPTURE ",
            b"CAPTURE 10.0.0.1\x07",
            "CAPTURE h\u{e9}te".as_bytes(),
            b"CAPTURE \xff\xfe",
            b"STOP 10.0.0.1 a\0b",
        ];
        for d in drops {
            assert!(
                matches!(parse_request(d), Err(Reject::Drop(_))),
                "{:?}",
                String::from_utf8_lossy(d)
            );
        }
        let bad: &[(&[u8], Verb, &str, &str)] = &[
            (b"CAPTURE x$(id)", Verb::Capture, "x$(id)", "invalid device"),
            (
                b"CAPTURE a;reboot",
                Verb::Capture,
                "a;reboot",
                "invalid device",
            ),
            (b"CAPTURE `id`", Verb::Capture, "`id`", "invalid device"),
            (
                b"CAPTURE 10.0.0.1 extra",
                Verb::Capture,
                "10.0.0.1",
                "one device",
            ),
            (
                b"REGISTER 10.0.0.1  ",
                Verb::Register,
                "10.0.0.1",
                "one device",
            ),
            (
                b"STOP 10.0.0.1",
                Verb::Stop,
                "10.0.0.1",
                "device and a file name",
            ),
            (
                b"STOP 10.0.0.1 ../etc/passwd",
                Verb::Stop,
                "10.0.0.1",
                "'..'",
            ),
            (b"STOP 10.0.0.1 /etc/passwd", Verb::Stop, "10.0.0.1", "'/'"),
            (b"STOP 10.0.0.1 a/b.pcap", Verb::Stop, "10.0.0.1", "'/'"),
            (
                b"STOP 10.0.0.1 .hidden",
                Verb::Stop,
                "10.0.0.1",
                "leading '.'",
            ),
            (b"STOP 10.0.0.1 a$(id).pcap", Verb::Stop, "10.0.0.1", "'$'"),
        ];
        for (d, verb, dev, why) in bad {
            match parse_request(d) {
                Err(Reject::BadRequest {
                    verb: v,
                    device,
                    why: w,
                }) => {
                    assert_eq!((v, device.as_str()), (*verb, *dev), "{d:?}");
                    assert!(w.contains(why), "{d:?}: {w}");
                }
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(d)),
            }
        }
    }

    #[test]
    fn responses_of_every_generation() {
        let t: &[(&str, u16, &str, &str, Option<Verb>)] = &[
            (
                "200 OK 192.168.200.218 CAPTURE",
                200,
                "OK",
                "192.168.200.218",
                Some(Verb::Capture),
            ),
            (
                "100 Trying msbr-1.example.com STOP",
                100,
                "Trying",
                "msbr-1.example.com",
                Some(Verb::Stop),
            ),
            (
                "503 Service Unavailable 10.0.0.1 REGISTER",
                503,
                "Service Unavailable",
                "10.0.0.1",
                Some(Verb::Register),
            ),
            (
                "430 Flow Failed fe80::1 VERIFY",
                430,
                "Flow Failed",
                "fe80::1",
                Some(Verb::Verify),
            ),
            ("404 Not Found 10.0.0.1", 404, "Not Found", "10.0.0.1", None),
            ("200 OK 10.0.0.1", 200, "OK", "10.0.0.1", None),
            ("TRYING 10.0.0.1", 100, "TRYING", "10.0.0.1", None),
            ("OK host-1", 200, "OK", "host-1", None),
            ("FAIL 10.0.0.1", 503, "FAIL", "10.0.0.1", None),
            (
                "200 OK 10.0.0.1 CAPTURE\0\0",
                200,
                "OK",
                "10.0.0.1",
                Some(Verb::Capture),
            ),
        ];
        for (text, code, reason, device, verb) in t {
            assert!(looks_like_response(text), "{text}");
            let r = parse_response(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(
                (r.code, r.reason.as_str(), r.device.as_str(), r.verb),
                (*code, *reason, *device, *verb),
                "{text}"
            );
        }
        for bad in [
            "",
            "OK",
            "200",
            "200 OK",
            "hello world",
            "<129>Jun 22 New Alarm - x",
            "200 OK x$(id) CAPTURE",
            "99 OK 10.0.0.1",
        ] {
            assert!(parse_response(bad).is_none(), "{bad}");
        }
        assert!(!looks_like_response(
            "<129>Jun 22 16:16:05 ovoc : New Alarm - Connection Alarm"
        ));
        assert_eq!(
            Response::new(100, "10.0.0.1", Verb::Stop).to_wire(),
            "100 Trying 10.0.0.1 STOP"
        );
        assert_eq!(
            Response::new(400, "x$(id)", Verb::Capture).to_wire(),
            "400 Bad Request x$(id) CAPTURE"
        );
    }

    #[test]
    fn file_names_strip_exact_prefix_and_suffix() {
        let t: &[(&str, &str)] = &[
            (
                "CPE_device_192.168.200.218_2022-06-22T16.16.07.565758.pcap",
                "OVOC_device_192.168.200.218_2022-06-22T16.16.07.565758-0.pcap",
            ),
            ("CPE_a.pcap", "OVOC_a-0.pcap"),
            ("CPE_pcap.pcap", "OVOC_pcap-0.pcap"),
            ("capture.pcap", "OVOC_capture-0.pcap"),
            ("CPE_x", "OVOC_x-0.pcap"),
        ];
        for (cpe, ovoc) in t {
            assert_eq!(ovoc_name(&ovoc_base(cpe), 0), *ovoc);
        }
    }

    #[test]
    fn random_datagrams_never_panic() {
        let mut next = crate::util::xorshift(0x2545_f491_4f6c_dd1du64);
        let words: &[&[u8]] = &[
            b"REGISTER",
            b"CAPTURE",
            b"VERIFY",
            b"STOP",
            b" ",
            b"10.0.0.1",
            b"..",
            b"/",
            b"\0",
            b"$(id)",
            b"CPE_a.pcap",
            b"::",
            b"200",
            b"OK",
        ];
        for _ in 0..100_000 {
            let mut d = Vec::new();
            for _ in 0..(next() % 8) {
                if next() % 4 == 0 {
                    d.push(next() as u8);
                } else {
                    d.extend_from_slice(words[(next() % words.len() as u64) as usize]);
                }
            }
            if let Ok(r) = parse_request(&d) {
                assert!(validate_device(&r.device).is_ok());
                if let Some(f) = &r.filename {
                    assert!(!f.contains('/') && !f.contains(".."));
                }
            }
            let _ = parse_response(&String::from_utf8_lossy(&d));
        }
    }
}
