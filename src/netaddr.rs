//! What may name a device: an IPv4/IPv6 literal or an RFC 1123 host name. Everything that reaches
//! a URL, a file name, a tcpdump filter or a datagram goes through `validate_device` first.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

pub fn validate_device(s: &str) -> Result<(), String> {
    validate_host(s, "device")
}

/// As [`validate_device`], the error naming `what` (a flag, say `--ovoc`) as the bad value's.
pub fn validate_host(s: &str, what: &str) -> Result<(), String> {
    if s.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if looks_numeric(s) {
        // `999.1.1.1` is a typo of an address, not a name: resolving it would only ask DNS.
        return Err(format!(
            "invalid {what} {:?}: not an IPv4 address (four numbers 0-255, no leading zeros) \
             and not a host name (its last label is all digits)",
            s.escape_debug().to_string()
        ));
    }
    if is_hostname(s) {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} {:?}: expected an IP address or a host name (letters, digits, '-', '.')",
            s.escape_debug().to_string()
        ))
    }
}

/// The last label is all digits (`1.2.3.400`, `10.1`, `12`): never a host name (RFC 1123
/// section 2.1: a top-level domain is alphabetic), so an IPv4 address meant and mistyped.
fn looks_numeric(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    s.rsplit('.')
        .next()
        .is_some_and(|last| !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()))
}

pub fn is_hostname(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && !looks_numeric(s)
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `host` or `[v6]` for use in URLs and `host:port` strings.
pub fn url_host(device: &str) -> String {
    match device.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => device.to_string(),
    }
}

/// The one name the agent keys a device by: an address in its canonical form, whatever way the
/// requester spelled it (inet_aton forms `127.1`, `2130706433`, `0x7f.1` as tcpdump's libpcap
/// reads them; IPv6 compressed; IPv4-mapped IPv6 as IPv4), `localhost` and `*.localhost` as
/// 127.0.0.1 (RFC 6761: they never leave the host), other names case-folded without the final
/// dot. A name is not resolved: that would block the request loop; two names of one host stay
/// two devices. Call after `validate_device`.
pub fn canonical_device(s: &str) -> String {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return canonical_ip(ip).to_string();
    }
    // `127.1.` is inet_aton's `127.1` with a final dot, not a name (validate_device refuses
    // both: this keeps the table sound should that ever change).
    if let Some(v4) = inet_aton(s.strip_suffix('.').unwrap_or(s)) {
        return v4.to_string();
    }
    let name = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return std::net::Ipv4Addr::LOCALHOST.to_string();
    }
    name
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is the IPv4 host.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The forms inet_aton(3) accepts: 1-4 parts of decimal, `0x` hex or `0` octal, the last one
/// filling the remaining bytes (`127.1` is 127.0.0.1, `2130706433` is 127.0.0.1).
fn inet_aton(s: &str) -> Option<std::net::Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let nums: Vec<u64> = parts
        .iter()
        .map(|p| {
            let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or(p.strip_prefix("0X")) {
                (h, 16)
            } else if p.len() > 1 && p.starts_with('0') {
                (&p[1..], 8)
            } else {
                (*p, 10)
            };
            if digits.is_empty() && radix != 16 || digits.len() > 12 {
                return None;
            }
            u64::from_str_radix(digits, radix).ok()
        })
        .collect::<Option<_>>()?;
    let (last, head) = nums.split_last()?;
    if head.iter().any(|&n| n > 255) || *last >= 1u64 << (8 * (4 - head.len())) {
        return None;
    }
    let mut v: u64 = 0;
    for (i, n) in head.iter().enumerate() {
        v |= n << (24 - 8 * i);
    }
    Some(std::net::Ipv4Addr::from((v | last) as u32))
}

/// This host's addresses (not loopback) and its subnets' broadcast addresses, from
/// /proc/net/fib_trie and /proc/net/if_inet6: what VERIFY must never probe. Empty when /proc
/// cannot say (the listen address is still refused).
pub fn host_addresses() -> (Vec<IpAddr>, Vec<IpAddr>) {
    let v4 = std::fs::read_to_string("/proc/net/fib_trie").unwrap_or_default();
    let v6 = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
    let (mut own, broadcast) = parse_fib_trie(&v4);
    own.extend(parse_if_inet6(&v6));
    own.retain(|ip| !ip.is_loopback());
    own.sort();
    own.dedup();
    (own, broadcast)
}

/// (LOCAL, BROADCAST) addresses: an address line `|-- a.b.c.d` is followed by its kinds.
fn parse_fib_trie(text: &str) -> (Vec<IpAddr>, Vec<IpAddr>) {
    let (mut local, mut bcast) = (Vec::new(), Vec::new());
    let mut addr: Option<IpAddr> = None;
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(a) = t.strip_prefix("|-- ") {
            addr = a.trim().parse().ok();
        } else if let (Some(a), Some(kind)) = (addr, t.strip_prefix('/')) {
            if kind.ends_with(" host LOCAL") {
                local.push(a);
            } else if kind.ends_with(" BROADCAST") {
                bcast.push(a);
            }
        }
    }
    bcast.sort();
    bcast.dedup();
    (local, bcast)
}

fn parse_if_inet6(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|h| u128::from_str_radix(h, 16).ok().filter(|_| h.len() == 32))
        .map(|n| IpAddr::V6(std::net::Ipv6Addr::from(n)))
        .collect()
}

/// `host`, `host:port`, `[v6]:port` or a bare IPv6 address; `default_port` when none is given.
pub fn server_addr(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    server_addrs(s, default_port, "--server").map(|v| v[0])
}

/// Every address `s` (as [`server_addr`] takes it) resolves to, at least one; the host is
/// checked first, so a malformed value never reaches DNS. Errors name `flag`.
pub fn server_addrs(s: &str, default_port: u16, flag: &str) -> Result<Vec<SocketAddr>, String> {
    let (host, port) = split_host_port(s, default_port);
    validate_host(host, flag)?;
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("invalid {flag} {s:?}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("invalid {flag} {s:?}: no address"));
    }
    Ok(addrs)
}

/// The host and the port of `s`: a bare IPv6 address is all host; `[v6]:port` and `host:port`
/// give theirs; anything else is a host with `default_port`.
pub fn split_host_port(s: &str, default_port: u16) -> (&str, u16) {
    if s.parse::<std::net::Ipv6Addr>().is_ok() {
        return (s, default_port);
    }
    if let Some(v6) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return (v6, default_port);
    }
    let bracketed = s.strip_prefix('[').and_then(|r| r.split_once("]:"));
    if let Some((host, port)) = bracketed.and_then(|(h, p)| Some((h, p.parse().ok()?))) {
        return (host, port);
    }
    match s
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse().ok()?)))
    {
        Some((host, port)) => (host, port),
        None => (s, default_port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers() {
        assert_eq!(
            server_addr("127.0.0.1", 20001).unwrap(),
            "127.0.0.1:20001".parse().unwrap()
        );
        assert_eq!(
            server_addr("127.0.0.1:9", 20001).unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        assert_eq!(
            server_addr("::1", 20001).unwrap(),
            "[::1]:20001".parse().unwrap()
        );
        assert_eq!(
            server_addr("[::1]:7", 20001).unwrap(),
            "[::1]:7".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            server_addr("[::1]", 20001).unwrap(),
            "[::1]:20001".parse::<SocketAddr>().unwrap()
        );
        // Checked before DNS is asked, and the flag named.
        assert_eq!(
            server_addrs("999.1.1.1", 20001, "--ovoc").unwrap_err(),
            "invalid --ovoc \"999.1.1.1\": not an IPv4 address (four numbers 0-255, no leading \
             zeros) and not a host name (its last label is all digits)"
        );
        assert_eq!(
            server_addrs("bad host:9", 20001, "--ovoc").unwrap_err(),
            "invalid --ovoc \"bad host\": expected an IP address or a host name (letters, digits, '-', '.')"
        );
        assert_eq!(
            server_addr("[::1]:7", 20001).unwrap(),
            "[::1]:7".parse().unwrap()
        );
        assert!(server_addr("no such host.invalid", 20001).is_err());
    }

    #[test]
    fn devices() {
        for ok in [
            "192.168.200.218",
            "::1",
            "fe80::1",
            "msbr-1.branch.example.com",
            "a",
            "host.",
            "3com.example",
            "10.0.0.1.example.com",
            "x1",
        ] {
            assert!(validate_device(ok).is_ok(), "{ok}");
        }
        for lookalike in [
            "999.1.1.1",
            "127.81.280.178",
            "10.0.0.01",
            "1.2.3",
            "1.2.3.4.5",
            "example.123",
            "12",
            "10.0.0.256.",
            "127.1.",
            "2130706433.",
            "127.0.0.1.",
        ] {
            let e = validate_device(lookalike).unwrap_err();
            assert!(e.contains("not an IPv4 address"), "{lookalike}: {e}");
        }
        let long = "a".repeat(64);
        for bad in [
            "",
            "x$(id)",
            "a;b",
            "a b",
            "`id`",
            "-rf",
            "a..b",
            "a/b",
            "../x",
            "a\0b",
            "ä.com",
            long.as_str(),
        ] {
            assert!(validate_device(bad).is_err(), "{bad:?}");
        }
        assert!(validate_device("x$(id)").unwrap_err().contains("x$(id)"));
    }

    #[test]
    fn canonical_devices() {
        let t: &[(&str, &str)] = &[
            ("localhost", "127.0.0.1"),
            ("LOCALHOST", "127.0.0.1"),
            ("localhost.", "127.0.0.1"),
            ("a.LocalHost", "127.0.0.1"),
            ("127.1", "127.0.0.1"),
            ("127.1.", "127.0.0.1"),
            ("2130706433", "127.0.0.1"),
            ("2130706433.", "127.0.0.1"),
            ("0x7f.1", "127.0.0.1"),
            ("0177.0.0.1", "127.0.0.1"),
            ("127.0.0.1", "127.0.0.1"),
            ("10.1.258", "10.1.1.2"),
            ("::FFFF:127.0.0.1", "127.0.0.1"),
            ("0:0:0:0:0:0:0:1", "::1"),
            ("FE80::0001", "fe80::1"),
            ("MSBR-1.Example.COM.", "msbr-1.example.com"),
            // Not inet_aton forms: names, kept (case-folded).
            ("4294967296", "4294967296"),
            ("1.256.1", "1.256.1"),
            ("08.1", "08.1"),
            ("1.2.3.4.5", "1.2.3.4.5"),
        ];
        for (given, want) in t {
            assert_eq!(canonical_device(given), *want, "{given}");
        }
    }

    #[test]
    fn host_address_tables() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
                    |-- 127.0.0.1\n              /32 host LOCAL\n\
                    |-- 192.0.2.0\n              /24 link UNICAST\n\
                    |-- 192.0.2.2\n              /32 host LOCAL\n\
                    |-- 192.0.2.255\n           /32 link BROADCAST\n\
                    Local:\n           |-- 192.0.2.2\n              /32 host LOCAL\n";
        let ips = |v: &[&str]| {
            v.iter()
                .map(|s| s.parse().unwrap())
                .collect::<Vec<IpAddr>>()
        };
        let (local, bcast) = parse_fib_trie(trie);
        assert_eq!(local, ips(&["127.0.0.1", "192.0.2.2", "192.0.2.2"]));
        assert_eq!(bcast, ips(&["192.0.2.255"]));
        let v6 = "00000000000000000000000000000001 01 80 10 80       lo\n\
                  fd000000000000000000000000000002 04 40 00 82     eth0\n";
        assert_eq!(parse_if_inet6(v6), ips(&["::1", "fd00::2"]));
    }

    #[test]
    fn url_hosts() {
        assert_eq!(url_host("::1"), "[::1]");
        assert_eq!(url_host("10.0.0.1"), "10.0.0.1");
        assert_eq!(url_host("msbr"), "msbr");
    }
}

/// An address block such as `10.0.0.0/8`, `192.0.2.7` (a /32) or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The block of exactly this address.
    pub fn host(addr: IpAddr) -> Cidr {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
            v4 => v4,
        };
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Cidr { addr, prefix }
    }

    pub fn parse(s: &str) -> Result<Cidr, String> {
        let err = || format!("invalid CIDR {s:?}: expected e.g. 10.0.0.0/8, 192.0.2.7 or ::1/128");
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(err)?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 sender on a dual-stack socket arrives as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        Cidr::parse(s)
    }
}

#[cfg(test)]
mod cidr_tests {
    use super::*;

    #[test]
    fn cidrs() {
        let t: &[(&str, &str, bool)] = &[
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("192.0.2.7", "192.0.2.7", true),
            ("192.0.2.7", "192.0.2.8", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("127.0.0.0/8", "::ffff:127.0.0.1", true),
            ("::1/128", "::1", true),
            ("fe80::/10", "fe80::1", true),
            ("fe80::/10", "10.0.0.1", false),
        ];
        for (c, ip, want) in t {
            assert_eq!(
                Cidr::parse(c).unwrap().contains(ip.parse().unwrap()),
                *want,
                "{c} {ip}"
            );
        }
        for bad in ["10.0.0.0/33", "x/8", "", "::1/129", "10.0.0.0/-1"] {
            assert!(
                Cidr::parse(bad).unwrap_err().contains("invalid CIDR"),
                "{bad}"
            );
        }
    }
}

/// A network interface name as the kernel allows it (1-15 bytes, no '/', no whitespace).
pub fn validate_interface(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b':'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid interface {:?}: see /proc/net/dev for the names",
            s.escape_debug().to_string()
        ))
    }
}
