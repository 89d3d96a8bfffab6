//! `tc ovoc send`: one request to an agent, its responses as `ovoc.reply` lines. Works with
//! `tc ovoc serve` and with the original agents (all three response forms).

use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;

use crate::cli::SendArgs;
use crate::emit::emit;
use crate::error::{Error, ExitCode, Result};
use crate::event::Event;
use crate::proto::{self, Request, Verb};

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
    let server = crate::netaddr::server_addr(&a.server, 20001).map_err(Error::usage)?;
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
