//! `tc ovoc send`: one request to an agent, its responses as `ovoc.reply` lines. Works with
//! `tc ovoc serve` and with the original agents (all three response forms).

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::Instant;

use crate::cli::SendArgs;
use crate::emit::emit;
use crate::error::{Error, ExitCode, Result};
use crate::event::Event;
use crate::proto::{self, Request, Verb};

/// `host`, `host:port`, `[v6]:port` or a bare IPv6 address; `default_port` when none is given.
pub fn server_addr(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    server_addrs(s, default_port, "--server").map(|v| v[0])
}

/// Every address `s` (as [`server_addr`] takes it) resolves to, at least one; the host is
/// checked first, so a malformed value never reaches DNS. Errors name `flag`.
pub fn server_addrs(s: &str, default_port: u16, flag: &str) -> Result<Vec<SocketAddr>, String> {
    let (host, port) = split_host_port(s, default_port);
    crate::netaddr::validate_host(host, flag)?;
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
fn split_host_port(s: &str, default_port: u16) -> (&str, u16) {
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

pub fn run(a: SendArgs) -> Result<ExitCode> {
    let verb = Verb::parse(&a.request.to_ascii_uppercase())
        .ok_or_else(|| Error::usage("unknown request"))?;
    crate::netaddr::validate_device(&a.device).map_err(Error::usage)?;
    match (verb, &a.filename) {
        (Verb::Stop, Some(f)) => proto::validate_filename(f).map_err(Error::usage)?,
        (Verb::Stop, None) => return Err(Error::usage("STOP needs the CPE capture's FILENAME")),
        (_, Some(_)) => return Err(Error::usage(format!("{verb} takes no FILENAME"))),
        (_, None) => {}
    }
    let key = a
        .key_file
        .as_deref()
        .map(super::auth::Key::read)
        .transpose()
        .map_err(Error::usage)?;
    let server = server_addr(&a.server, 20001).map_err(Error::usage)?;
    let sock =
        UdpSocket::bind(a.bind).map_err(|e| Error::usage(format!("binding {}: {e}", a.bind)))?;
    let req = Request {
        verb,
        device: a.device.clone(),
        filename: a.filename.clone(),
    };
    let wire = super::auth::seal_request(key.as_ref(), &req.to_wire());
    sock.send_to(wire.as_bytes(), server)
        .map_err(|e| Error::failed(format!("sending to {server}: {e}")))?;
    await_final(&sock, server, &a, verb, key.as_ref(), &wire)
}

/// The agent's answers to the request, as `ovoc.reply` lines, until the final one (or
/// `--timeout`).
fn await_final(
    sock: &UdpSocket,
    server: SocketAddr,
    a: &SendArgs,
    verb: Verb,
    key: Option<&super::auth::Key>,
    sent: &str,
) -> Result<ExitCode> {
    let deadline = Instant::now() + a.timeout;
    let mut buf = [0u8; 2048];
    let mut replays = super::auth::Replays::default();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            eprintln!("tc: no final response from {server} within {:?}", a.timeout);
            return Ok(ExitCode::Failed);
        }
        sock.set_read_timeout(Some(left))
            .map_err(|e| Error::failed(e.to_string()))?;
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // An ICMP port unreachable from an earlier send: nobody listens there.
            Err(e) => return Err(Error::failed(format!("receiving from {server}: {e}"))),
        };
        // The agent answers from the socket it was asked on: anything else is not its answer
        // (another program on that host, or a spoofer of any allowed address).
        if crate::netaddr::canonical_ip(from.ip()) != crate::netaddr::canonical_ip(server.ip())
            || from.port() != server.port()
        {
            log::info!("ignored a datagram from {from}: not from the server {server}");
            continue;
        }
        let Some(text) = super::auth::open_response(key, &buf[..n], &mut replays, sent) else {
            log::info!("ignored an unsigned or forged datagram from {from}");
            continue;
        };
        let Some(r) = proto::parse_response(&text).filter(|r| r.device == a.device) else {
            log::info!("ignored a datagram from {from}: {text:?}");
            continue;
        };
        if r.verb.is_some_and(|v| v != verb) {
            continue;
        }
        let is_final = r.is_final();
        emit(&Event::OvocReply {
            server: from.to_string(),
            device: r.device,
            request: r.verb.map(|v| v.as_str().to_string()),
            code: r.code,
            reason: r.reason,
            is_final,
        });
        if is_final {
            return Ok(if r.code == 200 {
                ExitCode::Ok
            } else {
                ExitCode::Failed
            });
        }
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
}
