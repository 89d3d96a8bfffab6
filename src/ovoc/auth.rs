//! Optional shared-key authentication of the control protocol (`--key-file`), pure but for
//! reading the key. A signed datagram is the plain 1.0.6 datagram followed by one trailer:
//!
//! ```text
//! <datagram> tc1 <unix seconds> <nonce: 16 hex> <mac: 64 hex>
//! mac = HMAC-SHA256(key, "tc1 req\n<unix seconds>\n<nonce>\n<datagram>")   requests
//! mac = HMAC-SHA256(key, "tc1 resp\n<unix seconds>\n<nonce>\n<request's nonce>\n<datagram>")
//! ```
//!
//! (the second form for responses). The direction label keeps a response from being replayed
//! as a request; the request's nonce ties a response to the request it answers, so a signed
//! answer cannot be replayed as the answer to another request. A receiver takes a
//! datagram only if its time is within `WINDOW` of its own clock and its nonce was not seen in
//! that window (replays refused). Plain datagrams stay plain: an agent or a controller without a
//! key (the original 1.0.6 ones) never sees a trailer.

use std::collections::HashMap;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a datagram's time may be from the receiver's clock (either way).
pub const WINDOW: u64 = 30;
/// Nonces remembered at most (each for `2 * WINDOW`): past it, signed datagrams are refused
/// until old ones expire, rather than let the table grow.
const MAX_NONCES: usize = 262_144;
const MIN_KEY: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Request,
    Response,
}

impl Dir {
    fn label(self) -> &'static str {
        match self {
            Dir::Request => "tc1 req",
            Dir::Response => "tc1 resp",
        }
    }
}

/// The shared key. Never printed: Debug says only its length.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({} bytes)", self.0.len())
    }
}

impl Key {
    pub fn new(bytes: Vec<u8>) -> Result<Key, String> {
        if bytes.len() < MIN_KEY {
            return Err(format!(
                "the key has {} bytes: at least {MIN_KEY} needed",
                bytes.len()
            ));
        }
        Ok(Key(bytes))
    }

    /// The file's bytes without trailing line ends; it must not be readable by group or others.
    pub fn read(path: &Path) -> Result<Key, String> {
        use std::os::unix::fs::PermissionsExt;
        let what = |e: String| format!("key file {}: {e}", path.display());
        let meta = std::fs::metadata(path).map_err(|e| what(e.to_string()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(what(format!(
                "mode {:o} lets others read it (chmod 600)",
                meta.permissions().mode() & 0o777
            )));
        }
        let mut bytes = std::fs::read(path).map_err(|e| what(e.to_string()))?;
        while bytes.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
            bytes.pop();
        }
        Key::new(bytes).map_err(what)
    }

    /// `answers`: the nonce of the request a response answers (requests: unused).
    fn mac(&self, dir: Dir, ts: u64, nonce: &str, answers: &str, body: &[u8]) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256>>::new_from_slice(&self.0).expect("HMAC takes any key length");
        m.update(format!("{}\n{ts}\n{nonce}\n", dir.label()).as_bytes());
        if dir == Dir::Response {
            m.update(format!("{answers}\n").as_bytes());
        }
        m.update(body);
        m
    }

    /// A request with its trailer.
    pub fn seal(&self, body: &str, ts: u64, nonce: u64) -> String {
        self.seal_dir(Dir::Request, body, ts, nonce, "")
    }

    /// A response to the request whose nonce is `answers`, with its trailer.
    pub fn seal_answer(&self, body: &str, ts: u64, nonce: u64, answers: &str) -> String {
        self.seal_dir(Dir::Response, body, ts, nonce, answers)
    }

    fn seal_dir(&self, dir: Dir, body: &str, ts: u64, nonce: u64, answers: &str) -> String {
        let nonce = format!("{nonce:016x}");
        let tag = self
            .mac(dir, ts, &nonce, answers, body.as_bytes())
            .finalize();
        format!("{body} tc1 {ts} {nonce} {}", hex(&tag.into_bytes()))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// What a received datagram is.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened<'a> {
    /// No trailer: a plain 1.0.6 datagram.
    Plain(&'a [u8]),
    /// A valid trailer: the datagram it covers.
    Signed(&'a [u8]),
    /// A trailer that does not check out (wrong key, altered, stale, replayed): why.
    Forged(String),
}

/// The nonces seen in the window, with when each may be forgotten.
#[derive(Debug, Default)]
pub struct Replays {
    seen: HashMap<String, u64>,
}

impl Replays {
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    pub fn prune(&mut self, now: u64) {
        self.seen.retain(|_, until| *until > now);
    }
}

/// Splits off and checks the trailer of `data`, received at unix time `now`. A response must
/// answer one of the requests whose nonces are `answers`.
pub fn open<'a>(
    key: &Key,
    dir: Dir,
    data: &'a [u8],
    now: u64,
    replays: &mut Replays,
    answers: &[String],
) -> Opened<'a> {
    let Some((body, ts, nonce, mac)) = split(data) else {
        return Opened::Plain(data);
    };
    let forged = |why: &str| Opened::Forged(why.to_string());
    let (Some(ts), Some(tag)) = (
        std::str::from_utf8(ts)
            .ok()
            .and_then(|t| t.parse::<u64>().ok()),
        std::str::from_utf8(mac).ok().and_then(unhex),
    ) else {
        return forged("unreadable MAC trailer");
    };
    let nonce = String::from_utf8_lossy(nonce).into_owned();
    let none = [String::new()];
    let answers = if dir == Dir::Request {
        &none[..]
    } else {
        answers
    };
    if !answers
        .iter()
        .any(|a| key.mac(dir, ts, &nonce, a, body).verify_slice(&tag).is_ok())
    {
        return forged(if dir == Dir::Request {
            "wrong MAC (another key, or an altered datagram)"
        } else {
            "wrong MAC (another key, an altered datagram, or not an answer to our request)"
        });
    }
    if ts.abs_diff(now) > WINDOW {
        return Opened::Forged(format!(
            "time {ts} is {} s from ours (window {WINDOW} s)",
            ts.abs_diff(now)
        ));
    }
    if replays.seen.contains_key(&nonce) {
        return forged("replayed (nonce seen before)");
    }
    if replays.seen.len() >= MAX_NONCES {
        replays.prune(now);
        if replays.seen.len() >= MAX_NONCES {
            return forged("too many signed datagrams in the window");
        }
    }
    // Accepted up to `ts + WINDOW` inclusive (`abs_diff > WINDOW` is refused), and `prune`
    // forgets at `until <= now`: one second more, so the nonce outlives its acceptance.
    replays.seen.insert(nonce, ts.max(now) + WINDOW + 1);
    Opened::Signed(body)
}

/// A signed datagram's parts: body, time, nonce, MAC (as received).
type Parts<'a> = (&'a [u8], &'a [u8], &'a [u8], &'a [u8]);

/// `<body> tc1 <ts> <nonce> <mac>`, by the last four spaces; None when there is no trailer.
fn split(data: &[u8]) -> Option<Parts<'_>> {
    let mut parts = data.rsplitn(5, |&b| b == b' ');
    let (mac, nonce, ts, tag, body) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let nonce_ok = nonce.len() == 16 && nonce.iter().all(u8::is_ascii_hexdigit);
    (tag == b"tc1" && nonce_ok && mac.len() == 64).then_some((body, ts, nonce, mac))
}

/// The nonce of a signed datagram (as on the wire), if it has a trailer.
pub fn nonce_of(data: &[u8]) -> Option<String> {
    split(data).map(|(_, _, n, _)| String::from_utf8_lossy(n).into_owned())
}

/// A nonce no other datagram of this process or its peers uses: random.
pub fn nonce() -> u64 {
    let mut b = [0u8; 8];
    if !crate::sys::random(&mut b) {
        // The kernel's generator failing is not worth a refusal: time and pid are unique
        // enough against replays within a 30 s window.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        return t ^ u64::from(std::process::id()) << 48;
    }
    u64::from_le_bytes(b)
}

/// The one place a controller signs: `text` as sent to an agent with `key` (plain without).
pub fn seal_request(key: Option<&Key>, text: &str) -> String {
    match key {
        Some(k) => k.seal(text, unix_now(), nonce()),
        None => text.to_string(),
    }
}

/// The one place a controller checks an answer: its text when it may be taken (plain without
/// a key; with one, only signed, valid and answering the request `sent`), None otherwise.
pub fn open_response(
    key: Option<&Key>,
    data: &[u8],
    replays: &mut Replays,
    sent: &str,
) -> Option<String> {
    let body = match key {
        None => data,
        Some(k) => match open(
            k,
            Dir::Response,
            data,
            unix_now(),
            replays,
            &[nonce_of(sent.as_bytes()).unwrap_or_default()],
        ) {
            Opened::Signed(body) => body,
            Opened::Plain(_) | Opened::Forged(_) => return None,
        },
    };
    Some(String::from_utf8_lossy(body).into_owned())
}

/// A controller's keys, per agent (`tc session --agent-key AGENT=FILE`): requests to an agent
/// with a key are signed and only its signed answers taken; every other agent (an original
/// one) gets plain 1.0.6 datagrams, and other senders (OVOC's forwarded alarms) are not touched.
#[derive(Debug, Default)]
pub struct AgentKeys {
    keys: HashMap<std::net::SocketAddr, Key>,
    replays: Replays,
    /// The nonces of the last requests sent per agent, device and request (resends each have
    /// their own): an answer must answer one of them.
    sent: HashMap<Asked, std::collections::VecDeque<String>>,
}

/// An agent, a device (canonical) and a request verb.
type Asked = (std::net::SocketAddr, String, &'static str);

/// Requests remembered per agent, device and verb (the session resends; older answers are
/// late and harmless to drop).
const SENT_KEPT: usize = 8;

fn asked(to: std::net::SocketAddr, device: &str, verb: crate::proto::Verb) -> Asked {
    (to, crate::netaddr::canonical_device(device), verb.as_str())
}

impl AgentKeys {
    /// `HOST[:PORT]=FILE` each (port 20001 when none is given).
    pub fn parse(specs: &[String]) -> Result<AgentKeys, String> {
        let mut keys = HashMap::new();
        for spec in specs {
            let (agent, file) = spec.rsplit_once('=').ok_or_else(|| {
                format!("invalid --agent-key {spec:?}: expected AGENT=FILE (e.g. ovoc-1:20001=/etc/tc/agent.key)")
            })?;
            let addr = crate::netaddr::server_addr(agent, 20001)
                .map_err(|e| format!("--agent-key: {e}"))?;
            keys.insert(addr, Key::read(Path::new(file))?);
        }
        Ok(AgentKeys {
            keys,
            replays: Replays::default(),
            sent: HashMap::new(),
        })
    }

    /// `text` as sent to `to` (its nonce remembered, for the answers).
    pub fn seal(&mut self, to: std::net::SocketAddr, text: &str) -> String {
        let wire = seal_request(self.keys.get(&to), text);
        if let (Some(n), Ok(req)) = (
            nonce_of(wire.as_bytes()),
            crate::proto::parse_request(text.as_bytes()),
        ) {
            let kept = self
                .sent
                .entry(asked(to, &req.device, req.verb))
                .or_default();
            if kept.len() >= SENT_KEPT {
                kept.pop_front();
            }
            kept.push_back(n);
        }
        wire
    }

    /// What of a datagram from `from` may be read: all of it from a sender without a key, the
    /// signed part of a valid answer from an agent with one, nothing otherwise. The agent
    /// answers from its listen socket: an answer from a keyed agent's host on another port
    /// (anyone on that host, or a spoofer) is dropped signed or not, or the session's
    /// "same IP" check would take it; other datagrams from that host (OVOC's forwarded
    /// alarms) pass.
    pub fn open<'a>(&mut self, from: std::net::SocketAddr, data: &'a [u8]) -> Option<&'a [u8]> {
        let from = std::net::SocketAddr::new(crate::netaddr::canonical_ip(from.ip()), from.port());
        let Some(key) = self.keys.get(&from) else {
            if self
                .keys
                .keys()
                .any(|a| crate::netaddr::canonical_ip(a.ip()) == from.ip())
                && (split(data).is_some()
                    || crate::proto::looks_like_response(&String::from_utf8_lossy(data)))
            {
                log::info!("ignored an answer from {from}: not the keyed agent's own port");
                return None;
            }
            return Some(data);
        };
        // Which requests this answers: by the device and verb it names.
        let answers = split(data)
            .and_then(|(body, ..)| crate::proto::parse_response(&String::from_utf8_lossy(body)))
            .and_then(|r| Some(asked(from, &r.device, r.verb?)))
            .and_then(|k| self.sent.get(&k))
            .map(|v| v.iter().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        match open(
            key,
            Dir::Response,
            data,
            unix_now(),
            &mut self.replays,
            &answers,
        ) {
            Opened::Signed(body) => Some(body),
            Opened::Plain(_) => {
                log::info!("ignored an unsigned datagram from {from}, an agent with a key");
                None
            }
            Opened::Forged(why) => {
                log::info!("ignored a datagram from {from}: {why}");
                None
            }
        }
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::new(b"0123456789abcdef-shared".to_vec()).unwrap()
    }

    #[test]
    fn seal_then_open_and_every_way_to_fail() {
        let k = key();
        let t = 1_800_000_000;
        let mut r = Replays::default();
        let req = k.seal("CAPTURE 10.0.0.1", t, 0xabc);
        assert!(req.starts_with("CAPTURE 10.0.0.1 tc1 1800000000 0000000000000abc "));
        assert_eq!(
            open(&k, Dir::Request, req.as_bytes(), t + 3, &mut r, &[]),
            Opened::Signed(b"CAPTURE 10.0.0.1")
        );
        let forged = |o: Opened| match o {
            Opened::Forged(w) => w,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            forged(open(&k, Dir::Request, req.as_bytes(), t + 3, &mut r, &[])),
            "replayed (nonce seen before)"
        );
        let other = Key::new(b"another key of 16+ bytes".to_vec()).unwrap();
        let cases: Vec<(String, Key, Dir, u64, &str)> = vec![
            (
                k.seal("CAPTURE 10.0.0.1", t, 1),
                other,
                Dir::Request,
                t,
                "wrong MAC (another key, or an altered datagram)",
            ),
            (
                k.seal("CAPTURE 10.0.0.1", t, 2)
                    .replace("10.0.0.1", "10.0.0.2"),
                key(),
                Dir::Request,
                t,
                "wrong MAC (another key, or an altered datagram)",
            ),
            (
                k.seal_answer("200 OK 10.0.0.1 CAPTURE", t, 3, ""),
                key(),
                Dir::Request,
                t,
                "wrong MAC (another key, or an altered datagram)",
            ),
            (
                k.seal("CAPTURE 10.0.0.1", t, 4),
                key(),
                Dir::Request,
                t + 31,
                "time 1800000000 is 31 s from ours (window 30 s)",
            ),
            (
                k.seal("CAPTURE 10.0.0.1", t + 31, 5),
                key(),
                Dir::Request,
                t,
                "time 1800000031 is 31 s from ours (window 30 s)",
            ),
            (
                format!("CAPTURE 10.0.0.1 tc1 x 0000000000000006 {}", "0".repeat(64)),
                key(),
                Dir::Request,
                t,
                "unreadable MAC trailer",
            ),
        ];
        for (d, k, dir, now, want) in cases {
            assert_eq!(
                forged(open(&k, dir, d.as_bytes(), now, &mut r, &[])),
                want,
                "{d}"
            );
        }
        for plain in [&b"CAPTURE 10.0.0.1"[..], b"STOP 10.0.0.1 CPE_a.pcap", b""] {
            assert_eq!(
                open(&k, Dir::Request, plain, t, &mut r, &[]),
                Opened::Plain(plain)
            );
        }
        r.prune(t + 100);
        assert!(r.is_empty());
    }

    /// A datagram is accepted up to WINDOW seconds either way: its nonce must be remembered
    /// for as long, pruning included.
    #[test]
    fn a_nonce_outlives_the_window_edge() {
        let k = key();
        let t = 1_800_000_000;
        for (ts, first, again) in [(t, t, t + WINDOW), (t + WINDOW, t, t + 2 * WINDOW)] {
            let mut r = Replays::default();
            let d = k.seal("CAPTURE 10.0.0.1", ts, 7);
            assert_eq!(
                open(&k, Dir::Request, d.as_bytes(), first, &mut r, &[]),
                Opened::Signed(b"CAPTURE 10.0.0.1")
            );
            r.prune(again);
            assert_eq!(
                open(&k, Dir::Request, d.as_bytes(), again, &mut r, &[]),
                Opened::Forged("replayed (nonce seen before)".into()),
                "ts {ts}, first seen at {first}, replayed at {again}"
            );
            r.prune(again + 1);
            assert!(r.is_empty(), "forgotten once past the window");
        }
    }

    /// `tc ovoc send`'s check: the answer must be bound to the request it sent.
    #[test]
    fn an_answer_binds_to_its_request() {
        let k = key();
        let mut r = Replays::default();
        let sent = seal_request(Some(&k), "CAPTURE 10.0.0.1");
        let other = seal_request(Some(&k), "CAPTURE 10.0.0.1");
        let n = |w: &str| nonce_of(w.as_bytes()).unwrap();
        let to_other = k.seal_answer("200 OK 10.0.0.1 CAPTURE", unix_now(), 1, &n(&other));
        assert_eq!(
            open_response(Some(&k), to_other.as_bytes(), &mut r, &sent),
            None
        );
        let to_sent = k.seal_answer("200 OK 10.0.0.1 CAPTURE", unix_now(), 2, &n(&sent));
        assert_eq!(
            open_response(Some(&k), to_sent.as_bytes(), &mut r, &sent).as_deref(),
            Some("200 OK 10.0.0.1 CAPTURE")
        );
        assert_eq!(
            open_response(None, b"200 OK 10.0.0.1 CAPTURE", &mut r, "CAPTURE 10.0.0.1").as_deref(),
            Some("200 OK 10.0.0.1 CAPTURE")
        );
    }

    #[test]
    fn agent_keys_sign_for_keyed_agents_only() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        std::fs::write(&p, "0123456789abcdef").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let spec = format!("127.0.0.5={}", p.display());
        let mut k = AgentKeys::parse(&[spec]).unwrap();
        let keyed: std::net::SocketAddr = "127.0.0.5:20001".parse().unwrap();
        let plain: std::net::SocketAddr = "127.0.0.6:20001".parse().unwrap();
        assert_eq!(k.seal(plain, "REGISTER 10.0.0.1"), "REGISTER 10.0.0.1");
        assert!(k.seal(keyed, "REGISTER 10.0.0.1").contains(" tc1 "));
        assert_eq!(
            k.open(plain, b"200 OK x REGISTER"),
            Some(&b"200 OK x REGISTER"[..])
        );
        assert_eq!(k.open(keyed, b"200 OK x REGISTER"), None);
        let key = Key::read(&p).unwrap();
        let asked = nonce_of(k.seal(keyed, "REGISTER x").as_bytes()).unwrap();
        // An answer must answer a request we sent: this one, for this device and verb.
        for (text, to) in [
            ("200 OK x REGISTER", "0000000000000001"),
            ("200 OK x STOP", asked.as_str()),
            ("200 OK y REGISTER", asked.as_str()),
        ] {
            let d = key.seal_answer(text, unix_now(), 8, to);
            assert_eq!(k.open(keyed, d.as_bytes()), None, "{text} to {to}");
        }
        let answer = key.seal_answer("200 OK X REGISTER", unix_now(), 9, &asked);
        assert_eq!(
            k.open(keyed, answer.as_bytes()),
            Some(&b"200 OK X REGISTER"[..]),
            "answered as the agent spells the device"
        );
        assert_eq!(k.open(keyed, answer.as_bytes()), None, "a replay");
        // The keyed agent's host, another port: no answer taken, signed or not; an alarm is.
        let side: std::net::SocketAddr = "127.0.0.5:40000".parse().unwrap();
        let mapped: std::net::SocketAddr = "[::ffff:127.0.0.5]:40000".parse().unwrap();
        let stop = nonce_of(k.seal(keyed, "STOP x CPE_a.pcap").as_bytes()).unwrap();
        let fresh = key.seal_answer("200 OK x STOP", unix_now(), 10, &stop);
        for (from, d) in [
            (side, &b"200 OK x REGISTER"[..]),
            (side, b"503 Service Unavailable x CAPTURE"),
            (side, b"OK x STOP"),
            (mapped, b"200 OK x REGISTER"),
            (side, fresh.as_bytes()),
        ] {
            assert_eq!(
                k.open(from, d),
                None,
                "{from} {}",
                String::from_utf8_lossy(d)
            );
        }
        let alarm = &b"<134>Dec  2 02:00:00 ovoc Connection Lost 10.0.0.1"[..];
        assert_eq!(k.open(side, alarm), Some(alarm));
        assert_eq!(
            k.open(
                mapped
                    .to_string()
                    .replace("40000", "20001")
                    .parse()
                    .unwrap(),
                fresh.as_bytes()
            ),
            Some(&b"200 OK x STOP"[..]),
            "the agent's own address, IPv4-mapped"
        );
        assert!(AgentKeys::parse(&["nofile".into()])
            .unwrap_err()
            .contains("expected AGENT=FILE"));
    }

    #[test]
    fn keys() {
        assert!(Key::new(b"short".to_vec())
            .unwrap_err()
            .contains("at least 16"));
        assert_eq!(format!("{:?}", key()), "Key(23 bytes)");
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        std::fs::write(&p, "0123456789abcdef\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Key::read(&p)
            .unwrap_err()
            .contains("mode 644 lets others read it"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let k = Key::read(&p).unwrap();
        assert_eq!(k.0, b"0123456789abcdef");
    }
}
