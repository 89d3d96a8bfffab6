//! From a captured frame to what `tc analyze` compares: the endpoints (to pick the device's
//! traffic), the traffic class, the request/response role, and the matching key.
//!
//! The key is built only from what the path between OVOC and the CPE leaves alone, so that the
//! same packet has the same key in both captures even through NAT: never addresses, ports,
//! TTL/hop limit or checksums; the IPv4 id when the sender set one (NAT keeps it); TCP's
//! SYN/FIN/RST bits; ICMP echo sequence numbers (not the echo id: NAT rewrites it as it rewrites
//! ports); the payload length and a hash of the transport payload. TCP sequence numbers,
//! relative to the flow's initial number where the handshake was captured, break ties between
//! equal keys in the matcher rather than joining the key: firewalls that randomise initial
//! sequence numbers would otherwise make every segment of a flow unmatched.
//!
//! IP fragments are reassembled (etherparse's pool) and compared as the datagram they make; a
//! TCP segment larger than an Ethernet MTU (a sender's TSO or a receiver's GRO made it) is cut
//! back into the MSS-sized segments that crossed the wire, so both sides count the same ones.

use std::net::IpAddr;

use etherparse::defrag::IpDefragPool;
use etherparse::{EtherType, IpNumber, NetSlice, SlicedPacket, TransportSlice};

use super::read::Frame;

/// Traffic classes of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    Snmp,
    SnmpTrap,
    Icmp,
    Tcp(u16),
    Syslog,
    Other,
}

impl Class {
    pub fn name(self) -> String {
        match self {
            Class::Snmp => "snmp".into(),
            Class::SnmpTrap => "snmp_trap".into(),
            Class::Icmp => "icmp".into(),
            Class::Tcp(p) => format!("tcp:{p}"),
            Class::Syslog => "syslog".into(),
            Class::Other => "other".into(),
        }
    }

    /// For the verdict's sentence.
    pub fn words(self) -> String {
        match self {
            Class::Snmp => "SNMP".into(),
            Class::SnmpTrap => "SNMP traps".into(),
            Class::Icmp => "ICMP".into(),
            Class::Tcp(p) => format!("TCP {p}"),
            Class::Syslog => "syslog".into(),
            Class::Other => "other traffic".into(),
        }
    }
}

/// A packet's part in a request/response exchange, with an id that its answer carries too
/// (hashed with what kind of exchange it is, so SNMP and ICMP ids never meet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    None,
    Request(Exchange, u64),
    Response(Exchange, u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Exchange {
    Snmp,
    IcmpEcho,
    TcpHandshake,
}

impl Exchange {
    pub fn name(self) -> &'static str {
        match self {
            Exchange::Snmp => "snmp",
            Exchange::IcmpEcho => "icmp_echo",
            Exchange::TcpHandshake => "tcp_handshake",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pkt {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub class: Class,
    pub key: u64,
    /// TCP: sequence number, relative to the flow's first if its SYN was seen; else 0.
    pub seq: u32,
    pub role: Role,
    /// The key covers a payload: unlikely to be shared by two packets of the same time
    /// (a pure ACK's 16-bit IP id is).
    pub strong: bool,
}

const TCP_FIN: u8 = 1;
const TCP_SYN: u8 = 2;
const TCP_RST: u8 = 4;
/// Largest IP packet taken as one wire packet: beyond it, offload made it on the host.
const WIRE_MTU: usize = 1500;
/// Fragments wait this long for the rest of their datagram (Linux's ipfrag_time).
const FRAG_TIMEOUT_NS: i64 = 30_000_000_000;
/// Flows whose initial sequence numbers are remembered; past this the table starts over
/// (sequence numbers only break ties, so forgetting costs little).
const MAX_FLOWS: usize = 1 << 20;
/// A flow without packets for this long is forgotten (swept every 65,536 TCP packets), so
/// the table holds the flows of the last minutes, not of the whole capture.
const FLOW_IDLE_NS: i64 = 300_000_000_000;

type FlowId = (IpAddr, IpAddr, u16, u16);

/// Per-capture state: fragments being reassembled, initial sequence numbers, MSS per flow.
#[derive(Default)]
pub struct Dissector {
    defrag: IpDefragPool<i64, ()>,
    fragments: u64,
    flows: super::core::FastMap<FlowId, Flow>,
    tcp_packets: u64,
    /// The current frame's time.
    now: i64,
    /// Frames that are not IP, or whose headers do not parse.
    pub skipped: u64,
}

#[derive(Clone, Copy, Default)]
struct Flow {
    last: i64,
    isn: Option<u32>,
    /// Largest payload of a wire-sized segment seen, the best guess of the MSS.
    mss: u16,
}

/// The IP packet in a frame, by link type (Ethernet with VLAN tags, Linux cooked v1/v2, raw,
/// BSD loopback); None for other link types and other protocols.
pub fn slice(linktype: u32, data: &[u8]) -> Option<SlicedPacket<'_>> {
    let sliced = match linktype {
        1 => SlicedPacket::from_ethernet(data),
        113 => SlicedPacket::from_linux_sll(data),
        276 => {
            let proto = u16::from_be_bytes([*data.first()?, *data.get(1)?]);
            SlicedPacket::from_ether_type(EtherType(proto), data.get(20..)?)
        }
        101 | 228 | 229 => SlicedPacket::from_ip(data),
        0 | 108 => SlicedPacket::from_ip(data.get(4..)?),
        _ => return None,
    };
    sliced
        .ok()
        .filter(|s| s.net.as_ref().is_some_and(|n| n.is_ip()))
}

impl Dissector {
    /// The packets a frame carries for the matcher: none (not IP, a fragment still waiting),
    /// one, or several (an offloaded TCP segment cut back to wire size).
    pub fn dissect(&mut self, frame: &Frame<'_>, out: &mut Vec<Pkt>) {
        out.clear();
        self.now = frame.ts_ns;
        let Some(s) = slice(frame.linktype, frame.data) else {
            self.skipped += 1;
            return;
        };
        let (src, dst, ip_id, ip_len, payload) = match &s.net {
            Some(NetSlice::Ipv4(v4)) => {
                let h = v4.header();
                (
                    IpAddr::V4(h.source_addr()),
                    IpAddr::V4(h.destination_addr()),
                    h.identification(),
                    usize::from(h.total_len()),
                    v4.payload(),
                )
            }
            Some(NetSlice::Ipv6(v6)) => {
                let h = v6.header();
                let p = v6.payload();
                (
                    IpAddr::V6(h.source_addr()),
                    IpAddr::V6(h.destination_addr()),
                    0,
                    40 + p.payload.len(),
                    p,
                )
            }
            _ => return,
        };
        let ip = IpInfo {
            src,
            dst,
            id: ip_id,
            len: ip_len,
            proto: payload.ip_number,
        };
        if payload.fragmented {
            self.fragment(&s, frame.ts_ns, ip, out);
            return;
        }
        match &s.transport {
            Some(t) => self.transport_slice(t, ip, out),
            None => self.transport_bytes(ip, payload.payload, out),
        }
    }

    fn fragment(&mut self, s: &SlicedPacket<'_>, ts: i64, ip: IpInfo, out: &mut Vec<Pkt>) {
        self.fragments += 1;
        if self.fragments % 4096 == 0 {
            self.defrag.retain(|t| *t > ts - FRAG_TIMEOUT_NS);
        }
        if let Ok(Some(whole)) = self.defrag.process_sliced_packet(s, ts, ()) {
            let ip = IpInfo {
                proto: whole.ip_number,
                ..ip
            };
            self.transport_bytes(ip, &whole.payload, out);
            self.defrag.return_buf(whole);
        }
    }

    /// A transport payload that etherparse did not slice (a reassembled datagram, or a
    /// protocol it does not know).
    fn transport_bytes(&mut self, ip: IpInfo, bytes: &[u8], out: &mut Vec<Pkt>) {
        use etherparse::{Icmpv4Slice, Icmpv6Slice, TcpSlice, UdpSlice};
        let t = match ip.proto {
            IpNumber::UDP => UdpSlice::from_slice(bytes).ok().map(TransportSlice::Udp),
            IpNumber::TCP => TcpSlice::from_slice(bytes).ok().map(TransportSlice::Tcp),
            IpNumber::ICMP => Icmpv4Slice::from_slice(bytes)
                .ok()
                .map(TransportSlice::Icmpv4),
            IpNumber::IPV6_ICMP => Icmpv6Slice::from_slice(bytes)
                .ok()
                .map(TransportSlice::Icmpv6),
            _ => None,
        };
        match t {
            Some(t) => self.transport_slice(&t, ip, out),
            None => out.push(ip.pkt(
                Class::Other,
                hash(&[u64::from(ip.proto.0), ip.id_or_zero()], bytes),
                0,
                Role::None,
                !bytes.is_empty(),
            )),
        }
    }

    fn transport_slice(&mut self, t: &TransportSlice<'_>, ip: IpInfo, out: &mut Vec<Pkt>) {
        match t {
            TransportSlice::Udp(u) => {
                let (sport, dport) = (u.source_port(), u.destination_port());
                let p = u.payload();
                let class = udp_class(sport, dport);
                let role = match (class, snmp_id(p)) {
                    (Class::Snmp, Some(id)) if dport == 161 => Role::Request(Exchange::Snmp, id),
                    (Class::Snmp, Some(id)) if sport == 161 => Role::Response(Exchange::Snmp, id),
                    _ => Role::None,
                };
                let key = hash(&[17, ip.id_or_zero(), p.len() as u64], p);
                out.push(ip.pkt(class, key, 0, role, !p.is_empty()));
            }
            TransportSlice::Tcp(t) => self.tcp(t, ip, out),
            TransportSlice::Icmpv4(i) => {
                let (ty, code) = (i.type_u8(), i.code_u8());
                out.push(icmp(ip, ty, code, i.bytes5to8(), i.payload(), (8, 0)));
            }
            TransportSlice::Icmpv6(i) => {
                let (ty, code) = (i.type_u8(), i.code_u8());
                out.push(icmp(ip, ty, code, i.bytes5to8(), i.payload(), (128, 129)));
            }
            _ => out.push(ip.pkt(
                Class::Other,
                hash(&[ip.id_or_zero()], &[]),
                0,
                Role::None,
                false,
            )),
        }
    }

    fn tcp(&mut self, t: &etherparse::TcpSlice<'_>, ip: IpInfo, out: &mut Vec<Pkt>) {
        let (sport, dport) = (t.source_port(), t.destination_port());
        let (seq, ack) = (t.sequence_number(), t.acknowledgment_number());
        let flags =
            (t.fin() as u8 * TCP_FIN) | (t.syn() as u8 * TCP_SYN) | (t.rst() as u8 * TCP_RST);
        let class = Class::Tcp(sport.min(dport));
        self.tcp_packets += 1;
        if self.tcp_packets % 65_536 == 0 {
            let idle = self.now - FLOW_IDLE_NS;
            self.flows.retain(|_, f| f.last > idle);
        }
        if self.flows.len() >= MAX_FLOWS {
            self.flows.clear();
        }
        let id: FlowId = (ip.src, ip.dst, sport, dport);
        let flow = self.flows.entry(id).or_default();
        flow.last = self.now;
        if t.syn() {
            flow.isn = Some(seq);
        }
        let rel = flow.isn.map_or(seq, |isn| seq.wrapping_sub(isn));
        let role = match (t.syn(), t.ack(), t.rst()) {
            (true, false, _) => Role::Request(
                Exchange::TcpHandshake,
                handshake_id(ip.src, sport, ip.dst, dport, seq.wrapping_add(1)),
            ),
            (true, true, _) | (false, true, true) => Role::Response(
                Exchange::TcpHandshake,
                handshake_id(ip.dst, dport, ip.src, sport, ack),
            ),
            _ => Role::None,
        };
        let payload = t.payload();
        let headers = ip.len.saturating_sub(payload.len());
        if ip.len <= WIRE_MTU || payload.is_empty() {
            if ip.len == WIRE_MTU {
                flow.mss = flow.mss.max(payload.len() as u16);
            }
            let key = hash(
                &[6, ip.id_or_zero(), u64::from(flags), payload.len() as u64],
                payload,
            );
            out.push(ip.pkt(class, key, rel, role, !payload.is_empty()));
            return;
        }
        // Offloaded: the segments of the flow's MSS (else the most an Ethernet MTU carries)
        // that the wire carried, with the ids the sender's stack gave them in turn.
        let mss = match flow.mss {
            0 => WIRE_MTU - headers,
            m => usize::from(m),
        }
        .max(1);
        let chunks = payload.len().div_ceil(mss);
        for (i, chunk) in payload.chunks(mss).enumerate() {
            let last = i + 1 == chunks;
            let f = if last { flags } else { flags & !TCP_FIN };
            let id = if ip.id == 0 {
                0
            } else {
                u64::from(ip.id.wrapping_add(i as u16))
            };
            let key = hash(&[6, id, u64::from(f), chunk.len() as u64], chunk);
            let r = rel.wrapping_add((i * mss) as u32);
            let role = if i == 0 { role } else { Role::None };
            out.push(ip.pkt(class, key, r, role, true));
        }
    }
}

#[derive(Clone, Copy)]
struct IpInfo {
    src: IpAddr,
    dst: IpAddr,
    id: u16,
    len: usize,
    proto: IpNumber,
}

impl IpInfo {
    fn id_or_zero(&self) -> u64 {
        u64::from(self.id)
    }

    fn pkt(&self, class: Class, key: u64, seq: u32, role: Role, strong: bool) -> Pkt {
        Pkt {
            src: self.src,
            dst: self.dst,
            class,
            key,
            seq,
            role,
            strong,
        }
    }
}

fn icmp(
    ip: IpInfo,
    ty: u8,
    code: u8,
    rest: [u8; 4],
    payload: &[u8],
    (request, reply): (u8, u8),
) -> Pkt {
    let echo_id = u16::from_be_bytes([rest[0], rest[1]]);
    let echo_seq = u16::from_be_bytes([rest[2], rest[3]]);
    let v6 = u64::from(request == 128);
    let pair = |what: u64| {
        hash(
            &[what, v6, u64::from(echo_id), u64::from(echo_seq)],
            payload,
        )
    };
    if ty == request || ty == reply {
        let role = if ty == request {
            Role::Request(Exchange::IcmpEcho, pair(0))
        } else {
            Role::Response(Exchange::IcmpEcho, pair(0))
        };
        let key = hash(
            &[1, v6, u64::from(ty), u64::from(echo_seq), ip.id_or_zero()],
            payload,
        );
        return ip.pkt(Class::Icmp, key, 0, role, !payload.is_empty());
    }
    // Errors quote the packet they are about, as NAT rewrote it on each side: only the type,
    // code, id and length are the same on both.
    let key = hash(
        &[
            2,
            v6,
            u64::from(ty),
            u64::from(code),
            ip.id_or_zero(),
            payload.len() as u64,
        ],
        &[],
    );
    ip.pkt(Class::Icmp, key, 0, Role::None, false)
}

fn udp_class(sport: u16, dport: u16) -> Class {
    let has = |p: u16| sport == p || dport == p;
    if has(161) {
        Class::Snmp
    } else if has(162) {
        Class::SnmpTrap
    } else if has(514) {
        Class::Syslog
    } else {
        Class::Other
    }
}

fn handshake_id(client: IpAddr, cport: u16, server: IpAddr, sport: u16, isn1: u32) -> u64 {
    let mut b = [0u8; 40];
    let put = |b: &mut [u8], a: IpAddr| match a {
        IpAddr::V4(a) => b[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => b[..16].copy_from_slice(&a.octets()),
    };
    put(&mut b[0..16], client);
    put(&mut b[16..32], server);
    b[32..34].copy_from_slice(&cport.to_be_bytes());
    b[34..36].copy_from_slice(&sport.to_be_bytes());
    b[36..40].copy_from_slice(&isn1.to_be_bytes());
    hash(&[3], &b)
}

/// The payload hash, seeded with the header fields that belong to the key.
pub fn hash(fields: &[u64], payload: &[u8]) -> u64 {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for f in fields {
        seed = (seed ^ f).wrapping_mul(0x0100_0000_01b3).rotate_left(29);
    }
    xxhash_rust::xxh3::xxh3_64_with_seed(payload, seed)
}

/// An SNMP message's request id (v1, v2c) or message id (v3, whose PDU may be encrypted): the
/// number its response carries back. None if the payload is not SNMP as BER.
pub fn snmp_id(p: &[u8]) -> Option<u64> {
    let (tag, body, _) = ber(p)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, version, rest) = ber(body)?;
    if tag != 0x02 || version.len() != 1 {
        return None;
    }
    match version[0] {
        0 | 1 => {
            let (tag, _community, rest) = ber(rest)?;
            let (pdu, body, _) = ber(rest).filter(|_| tag == 0x04)?;
            if !(0xa0..=0xa8).contains(&pdu) {
                return None;
            }
            let (tag, id, _) = ber(body)?;
            (tag == 0x02).then(|| integer(id))?
        }
        3 => {
            let (tag, global, _) = ber(rest)?;
            let (t2, id, _) = ber(global).filter(|_| tag == 0x30)?;
            (t2 == 0x02).then(|| integer(id))?
        }
        _ => None,
    }
}

/// One BER element: tag, contents, what follows.
fn ber(p: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *p.first()?;
    let first = *p.get(1)?;
    let (len, head) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = p
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |a, b| (a << 8) | usize::from(*b));
        (len, 2 + n)
    };
    let body = p.get(head..head.checked_add(len)?)?;
    Some((tag, body, &p[head + len..]))
}

fn integer(b: &[u8]) -> Option<u64> {
    (!b.is_empty() && b.len() <= 8).then(|| b.iter().fold(0u64, |a, x| (a << 8) | u64::from(*x)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snmp_ids_of_each_version() {
        // v2c GetRequest, community "public", request-id 0x1234
        let v2c = [
            0x30, 0x19, 0x02, 0x01, 0x01, 0x04, 0x06, b'p', b'u', b'b', b'l', b'i', b'c', 0xa0,
            0x0c, 0x02, 0x02, 0x12, 0x34, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x30, 0x00,
        ];
        // v3 with msgID 77 and an encrypted PDU
        let v3 = [
            0x30, 0x16, 0x02, 0x01, 0x03, 0x30, 0x0d, 0x02, 0x01, 77, 0x02, 0x02, 0x05, 0xdc, 0x04,
            0x01, 0x07, 0x02, 0x01, 0x03, 0x04, 0x00, 0x04, 0x00,
        ];
        let long_len = {
            let mut v = vec![0x30, 0x81, 0x19];
            v.extend_from_slice(&v2c[2..]);
            v
        };
        let cases: &[(&[u8], Option<u64>)] = &[
            (&v2c, Some(0x1234)),
            (&v3, Some(77)),
            (&long_len, Some(0x1234)),
            (b"<13>syslog text", None),
            (&v2c[..10], None),
            (&[0x30, 0x03, 0x02, 0x01, 0x02], None),
        ];
        for (p, want) in cases {
            assert_eq!(snmp_id(p), *want, "{p:02x?}");
        }
    }

    #[test]
    fn classes_by_port() {
        let cases = [
            ((40000, 161), Class::Snmp),
            ((161, 40000), Class::Snmp),
            ((40000, 162), Class::SnmpTrap),
            ((514, 514), Class::Syslog),
            ((5000, 9), Class::Other),
        ];
        for ((s, d), want) in cases {
            assert_eq!(udp_class(s, d), want);
        }
        assert_eq!(Class::Tcp(443).name(), "tcp:443");
    }

    #[test]
    fn keys_depend_on_the_payload_and_its_fields_only() {
        assert_eq!(hash(&[17, 5], b"abc"), hash(&[17, 5], b"abc"));
        assert_ne!(hash(&[17, 5], b"abc"), hash(&[17, 6], b"abc"));
        assert_ne!(hash(&[17, 5], b"abc"), hash(&[17, 5], b"abd"));
        assert_ne!(hash(&[1, 2], b""), hash(&[2, 1], b""));
    }
}
