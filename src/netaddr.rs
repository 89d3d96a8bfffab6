//! What may name a device: an IPv4/IPv6 literal or an RFC 1123 host name. Everything that reaches
//! a URL, a file name, a tcpdump filter or a datagram goes through `validate_device` first.

use std::net::IpAddr;

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

#[cfg(test)]
mod tests {
    use super::*;

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
