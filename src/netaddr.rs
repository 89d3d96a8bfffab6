//! What may name a device: an IPv4/IPv6 literal or an RFC 1123 host name. Everything that reaches
//! a URL, a file name, a tcpdump filter or a datagram goes through `validate_device` first.

use std::net::IpAddr;

pub fn validate_device(s: &str) -> Result<(), String> {
    if s.parse::<IpAddr>().is_ok() || is_hostname(s) {
        Ok(())
    } else {
        Err(format!(
            "invalid device {:?}: expected an IP address or a host name (letters, digits, '-', '.')",
            s.escape_debug().to_string()
        ))
    }
}

pub fn is_hostname(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
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
        for ok in ["192.168.200.218", "::1", "fe80::1", "msbr-1.branch.example.com", "a", "host."] {
            assert!(validate_device(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(64);
        for bad in [
            "", "x$(id)", "a;b", "a b", "`id`", "-rf", "a..b", "a/b", "../x", "a\0b", "ä.com", long.as_str(),
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
