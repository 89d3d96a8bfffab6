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

use std::collections::VecDeque;

use etherparse::{EtherType, IpNumber, Ipv6ExtensionSlice, LaxNetSlice, LaxSlicedPacket};
use rustc_hash::FxHashMap;

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
    /// Cut by the capture's snap length below the bytes its key covers: it cannot be matched.
    pub cut: bool,
}

impl Pkt {
    fn cut_if(mut self, cut: bool) -> Pkt {
        self.cut = cut;
        self.strong &= !cut;
        self
    }
}

const TCP_FIN: u8 = 1;
const TCP_SYN: u8 = 2;
const TCP_RST: u8 = 4;
/// Largest IP packet taken as one wire packet: beyond it, offload made it on the host.
const WIRE_MTU: usize = 1500;
/// Flows whose initial sequence numbers are remembered; past this the table starts over
/// (sequence numbers only break ties, so forgetting costs little).
const MAX_FLOWS: usize = 1 << 16;
/// A flow without packets for this long is forgotten (swept every 65,536 TCP packets), so
/// the table holds the flows of the last minutes, not of the whole capture.
const FLOW_IDLE_NS: i64 = 300_000_000_000;

type FlowId = (IpAddr, IpAddr, u16, u16);

/// Per-capture state: fragments being reassembled, initial sequence numbers, MSS per flow.
pub struct Dissector {
    defrag: Defrag,
    flows: FxHashMap<FlowId, Flow>,
    tcp_packets: u64,
    /// The current frame's time.
    now: i64,
    /// Only packets from or to one of these (all when empty): fragments and flows of other
    /// traffic are never held.
    pub filter: Vec<IpAddr>,
    /// Transport payload bytes a key covers: both captures' snap lengths allow them (see
    /// [`hash_limit`]), so a packet's two copies hash the same bytes.
    pub hash_limit: usize,
    /// Frames that are not IP, or whose headers do not parse.
    pub skipped: u64,
    /// Packets cut by the snap length below what the key covers: unmatchable.
    pub cut: u64,
}

impl Default for Dissector {
    fn default() -> Dissector {
        Dissector {
            defrag: Defrag::default(),
            flows: FxHashMap::default(),
            tcp_packets: 0,
            now: 0,
            filter: Vec::new(),
            hash_limit: usize::MAX,
            skipped: 0,
            cut: 0,
        }
    }
}

/// Most bytes of headers below the transport payload in any frame (Linux cooked v2 or two VLAN
/// tags, IPv4 with options or IPv6 with a fragment header, TCP with options).
const MAX_HEADERS: usize = 160;

/// The payload bytes both captures hold of every packet, from their snap lengths (0 when a
/// file declares none): the keys hash that much, the same on both sides.
pub fn hash_limit(snaplens: &[u32]) -> usize {
    match snaplens.iter().filter(|s| **s > 0).min() {
        Some(&s) if (s as usize) < 65_535 + MAX_HEADERS => (s as usize).saturating_sub(MAX_HEADERS),
        _ => usize::MAX,
    }
}

#[derive(Clone, Copy, Default)]
struct Flow {
    last: i64,
    isn: Option<u32>,
    /// Largest payload of a wire-sized segment seen, the best guess of the MSS.
    mss: u16,
}

/// The IP layer of a frame: what the dissector reads of it.
struct Net<'a> {
    ip: IpInfo,
    /// The IP payload, up to the length the header gives (Ethernet padding left out) or as
    /// much as was captured.
    payload: &'a [u8],
    /// A fragment's place in its datagram (offset, more fragments, datagram's identity).
    piece: Option<(u16, bool, FragKey)>,
}

/// The IP packet in a frame, by link type (Ethernet with VLAN tags, Linux cooked v1/v2, raw,
/// BSD loopback), sliced leniently: a frame cut by the snap length keeps what it has. None for
/// other link types and other protocols.
///
/// Layer by layer with etherparse's own slices: its whole-packet `LaxSlicedPacket` carries
/// every layer's slice and error in one large value, and building and moving it per frame was
/// the largest cost of an analysis (BENCHMARKS.md). Ether types other than IP and VLAN tags
/// (MACsec) still go through it.
fn slice(linktype: u32, data: &[u8]) -> Option<Net<'_>> {
    let (ether_type, bytes) = match linktype {
        1 => {
            let eth = etherparse::Ethernet2Slice::from_slice_without_fcs(data).ok()?;
            (eth.ether_type(), eth.payload_slice())
        }
        113 => (ether_type_at(data, 14)?, data.get(16..)?),
        276 => (ether_type_at(data, 0)?, data.get(20..)?),
        101 | 228 | 229 => return ip(data),
        0 | 108 => return ip(data.get(4..)?),
        _ => return None,
    };
    let (mut ether_type, mut bytes) = (ether_type, bytes);
    // At most three tags, as etherparse's own slicing takes.
    for _ in 0..3 {
        match ether_type {
            EtherType::IPV4 | EtherType::IPV6 => return ip(bytes),
            EtherType::VLAN_TAGGED_FRAME
            | EtherType::PROVIDER_BRIDGING
            | EtherType::VLAN_DOUBLE_TAGGED_FRAME => {
                let vlan = etherparse::SingleVlanSlice::from_slice(bytes).ok()?;
                (ether_type, bytes) = (vlan.ether_type(), vlan.payload_slice());
            }
            // MACsec (unencrypted, it may carry IP) is left to etherparse's whole-packet
            // slicer; it slices nothing else that is not IP or VLAN (ARP, LLDP, LLC).
            EtherType::MACSEC => return other(LaxSlicedPacket::from_ether_type(ether_type, bytes)),
            _ => return None,
        }
    }
    matches!(ether_type, EtherType::IPV4 | EtherType::IPV6)
        .then(|| ip(bytes))
        .flatten()
}

fn ether_type_at(data: &[u8], at: usize) -> Option<EtherType> {
    Some(EtherType(u16::from_be_bytes([
        *data.get(at)?,
        *data.get(at + 1)?,
    ])))
}

fn ip(bytes: &[u8]) -> Option<Net<'_>> {
    match etherparse::LaxIpSlice::from_slice(bytes).ok()?.0 {
        etherparse::LaxIpSlice::Ipv4(v4) => Some(ipv4(&v4)),
        etherparse::LaxIpSlice::Ipv6(v6) => Some(ipv6(&v6)),
    }
}

/// The transports the dissector reads; everything else is `Class::Other`.
enum Transport<'a> {
    Udp(etherparse::UdpSlice<'a>),
    Tcp(etherparse::TcpSlice<'a>),
    Icmpv4(etherparse::Icmpv4Slice<'a>),
    Icmpv6(etherparse::Icmpv6Slice<'a>),
}

/// What the whole-packet slicing found, for the rare ether types the fast path leaves to it.
fn other(sliced: LaxSlicedPacket<'_>) -> Option<Net<'_>> {
    match &sliced.net {
        Some(LaxNetSlice::Ipv4(v4)) => Some(ipv4(v4)),
        Some(LaxNetSlice::Ipv6(v6)) => Some(ipv6(v6)),
        _ => None,
    }
}

fn ipv4<'a>(v4: &etherparse::LaxIpv4Slice<'a>) -> Net<'a> {
    let h = v4.header();
    let p = v4.payload();
    let (src, dst) = (h.source_addr().into(), h.destination_addr().into());
    let key = (src, dst, h.identification().into(), p.ip_number.0);
    Net {
        ip: IpInfo {
            src,
            dst,
            id: h.identification(),
            len: usize::from(h.total_len()),
            proto: p.ip_number,
        },
        payload: p.payload,
        piece: p
            .fragmented
            .then(|| (h.fragments_offset().byte_offset(), h.more_fragments(), key)),
    }
}

fn ipv6<'a>(v6: &etherparse::LaxIpv6Slice<'a>) -> Net<'a> {
    let h = v6.header();
    let p = v6.payload();
    let (src, dst) = (
        IpAddr::V6(h.source_addr()),
        IpAddr::V6(h.destination_addr()),
    );
    let piece = p.fragmented.then(|| {
        let frag = v6.extensions().clone().into_iter().find_map(|e| match e {
            Ipv6ExtensionSlice::Fragment(f) => Some(f),
            _ => None,
        });
        frag.map_or((0, false, (src, dst, 0, 0)), |f| {
            (
                f.fragment_offset().byte_offset(),
                f.more_fragments(),
                (src, dst, f.identification(), p.ip_number.0),
            )
        })
    });
    Net {
        ip: IpInfo {
            src,
            dst,
            id: 0,
            len: 40 + usize::from(h.payload_length()),
            proto: p.ip_number,
        },
        payload: p.payload,
        piece,
    }
}

/// A fragment's place in its datagram.
struct Piece<'a> {
    key: FragKey,
    offset: usize,
    more: bool,
    /// Its length on the wire, and the part of it captured.
    len: usize,
    bytes: &'a [u8],
}

impl Dissector {
    /// Fragmented datagrams given up so far (timed out, or pushed out by the pool's bounds).
    pub fn fragments_given_up(&self) -> u64 {
        self.defrag.given_up
    }

    /// The packets a frame carries for the matcher: none (not IP, not the analysed hosts, a
    /// fragment still waiting), one, or several (an offloaded TCP segment cut back to wire
    /// size).
    pub fn dissect(&mut self, frame: &Frame<'_>, out: &mut Vec<Pkt>) {
        out.clear();
        self.now = frame.ts_ns;
        let Some(net) = slice(frame.linktype, frame.data) else {
            self.skipped += 1;
            return;
        };
        let ip = net.ip;
        if !self.filter.is_empty() && !self.filter.iter().any(|a| *a == ip.src || *a == ip.dst) {
            return;
        }
        // Bytes the snap length took from the end of the frame.
        let missing = (frame.orig_len as usize).saturating_sub(frame.data.len());
        let len = net.payload.len() + missing;
        match net.piece {
            Some((offset, more, key)) => {
                let piece = Piece {
                    key,
                    offset: usize::from(offset),
                    more,
                    len,
                    bytes: net.payload,
                };
                self.fragment(piece, ip, out)
            }
            None => self.transport_bytes(ip, net.payload, len, out),
        }
    }

    fn fragment(&mut self, piece: Piece<'_>, ip: IpInfo, out: &mut Vec<Pkt>) {
        let keep = self.hash_limit.saturating_add(64);
        if let Some((data, len)) = self.defrag.add(piece, self.now, keep) {
            self.transport_bytes(ip, &data, len, out);
            self.defrag.give_back(data);
        }
    }

    /// A transport payload (of a datagram whole or reassembled): its captured bytes, and its
    /// length on the wire. UDP, TCP and ICMP are dissected; any other protocol (IGMP, GRE, ESP,
    /// a header too short to slice) is keyed on its IP protocol, id, length and payload.
    fn transport_bytes(&mut self, ip: IpInfo, bytes: &[u8], len: usize, out: &mut Vec<Pkt>) {
        use etherparse::{Icmpv4Slice, Icmpv6Slice, TcpSlice, UdpSlice};
        let t = match ip.proto {
            IpNumber::UDP => UdpSlice::from_slice_lax(bytes).ok().map(Transport::Udp),
            IpNumber::TCP => TcpSlice::from_slice(bytes).ok().map(Transport::Tcp),
            IpNumber::ICMP => Icmpv4Slice::from_slice(bytes).ok().map(Transport::Icmpv4),
            IpNumber::IPV6_ICMP => Icmpv6Slice::from_slice(bytes).ok().map(Transport::Icmpv6),
            _ => None,
        };
        let missing = len.saturating_sub(bytes.len());
        match t {
            Some(t) => self.transport_slice(&t, ip, missing, out),
            None => {
                let (hashed, cut) = self.hashed(bytes, len);
                let key = hash(
                    &[u64::from(ip.proto.0), ip.id_or_zero(), len as u64],
                    hashed,
                );
                out.push(ip.pkt(Class::Other, key, 0, Role::None, len > 0, cut));
            }
        }
    }

    /// The part of a payload (`len` bytes on the wire, `p` captured) that its key covers, and
    /// whether the capture cut it shorter than that.
    fn hashed<'a>(&mut self, p: &'a [u8], len: usize) -> (&'a [u8], bool) {
        let want = len.min(self.hash_limit);
        let cut = p.len() < want;
        self.cut += u64::from(cut);
        (&p[..p.len().min(want)], cut)
    }

    fn transport_slice(
        &mut self,
        t: &Transport<'_>,
        ip: IpInfo,
        missing: usize,
        out: &mut Vec<Pkt>,
    ) {
        match t {
            Transport::Udp(u) => {
                let (sport, dport) = (u.source_port(), u.destination_port());
                let p = u.payload();
                let len = p.len() + missing;
                let class = udp_class(sport, dport);
                let role = match (class, snmp_id(p)) {
                    (Class::Snmp, Some(id)) if dport == 161 => Role::Request(Exchange::Snmp, id),
                    (Class::Snmp, Some(id)) if sport == 161 => Role::Response(Exchange::Snmp, id),
                    _ => Role::None,
                };
                let (hashed, cut) = self.hashed(p, len);
                let key = hash(&[17, ip.id_or_zero(), len as u64], hashed);
                out.push(ip.pkt(class, key, 0, role, len > 0, cut));
            }
            Transport::Tcp(t) => self.tcp(t, ip, missing, out),
            Transport::Icmpv4(i) => {
                let (ty, code) = (i.type_u8(), i.code_u8());
                let (p, cut) = self.hashed(i.payload(), i.payload().len() + missing);
                out.push(icmp(ip, ty, code, i.bytes5to8(), p, (8, 0)).cut_if(cut));
            }
            Transport::Icmpv6(i) => {
                let (ty, code) = (i.type_u8(), i.code_u8());
                let (p, cut) = self.hashed(i.payload(), i.payload().len() + missing);
                out.push(icmp(ip, ty, code, i.bytes5to8(), p, (128, 129)).cut_if(cut));
            }
        }
    }

    /// The flow's state: its relative sequence number and role.
    fn tcp_flow(&mut self, t: &etherparse::TcpSlice<'_>, ip: IpInfo) -> (&mut Flow, u32, Role) {
        let (sport, dport) = (t.source_port(), t.destination_port());
        let (seq, ack) = (t.sequence_number(), t.acknowledgment_number());
        self.tcp_packets += 1;
        if self.tcp_packets % 65_536 == 0 {
            let idle = self.now - FLOW_IDLE_NS;
            self.flows.retain(|_, f| f.last > idle);
        }
        if self.flows.len() >= MAX_FLOWS {
            self.flows.clear();
        }
        let flow = self
            .flows
            .entry((ip.src, ip.dst, sport, dport))
            .or_default();
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
        (flow, rel, role)
    }

    fn tcp(
        &mut self,
        t: &etherparse::TcpSlice<'_>,
        ip: IpInfo,
        missing: usize,
        out: &mut Vec<Pkt>,
    ) {
        let flags =
            (t.fin() as u8 * TCP_FIN) | (t.syn() as u8 * TCP_SYN) | (t.rst() as u8 * TCP_RST);
        let class = Class::Tcp(t.source_port().min(t.destination_port()));
        let payload = t.payload();
        let len = payload.len() + missing;
        let ip_len = ip.len;
        let headers = ip_len.saturating_sub(len);
        let (flow, rel, role) = self.tcp_flow(t, ip);
        let wire = ip_len <= WIRE_MTU || len == 0;
        if wire && ip_len == WIRE_MTU {
            flow.mss = flow.mss.max(len as u16);
        }
        // Offloaded: the segments of the flow's MSS (else the most an Ethernet MTU carries)
        // that the wire carried, with the ids the sender's stack gave them in turn.
        let mss = match (wire, flow.mss) {
            (true, _) => len.max(1),
            (false, 0) => WIRE_MTU - headers.min(WIRE_MTU - 1),
            (false, m) => usize::from(m),
        };
        let chunks = len.div_ceil(mss).max(1);
        for i in 0..chunks {
            let start = i * mss;
            let chunk_len = (len - start).min(mss);
            let got = payload.get(start..).unwrap_or(&[]);
            let (bytes, cut) = self.hashed(&got[..got.len().min(chunk_len)], chunk_len);
            let last = i + 1 == chunks;
            let f = if last { flags } else { flags & !TCP_FIN };
            let id = if ip.id == 0 {
                0
            } else {
                u64::from(ip.id.wrapping_add(i as u16))
            };
            let key = hash(&[6, id, u64::from(f), chunk_len as u64], bytes);
            let r = rel.wrapping_add(start as u32);
            let role = if i == 0 { role } else { Role::None };
            out.push(ip.pkt(class, key, r, role, chunk_len > 0, cut));
        }
    }
}

/// A fragmented datagram's identity: addresses, IP id, protocol.
type FragKey = (IpAddr, IpAddr, u32, u8);

/// Fragments wait this long for the rest of their datagram (Linux's ipfrag_time).
const FRAG_TIMEOUT_NS: i64 = 30_000_000_000;
/// Datagrams and bytes held at most while their fragments arrive (Linux holds 4 MB per
/// namespace by default); beyond, the oldest datagram is given up.
const MAX_FRAG_DATAGRAMS: usize = 4096;
const MAX_FRAG_BYTES: usize = 8 << 20;
/// Pieces of one datagram: more is an attack (the tiny-fragment kind), not a path's MTU.
const MAX_PIECES: usize = 64;

/// A datagram being put back together: the bytes of its start that a key can cover, and which
/// ranges of it arrived (by the IP headers' lengths, whether the capture kept the bytes or not).
struct Partial {
    seq: u64,
    first: i64,
    data: Vec<u8>,
    /// Ranges arrived, and ranges whose bytes the capture kept.
    have: Vec<(usize, usize)>,
    got: Vec<(usize, usize)>,
    total: Option<usize>,
}

/// IP reassembly with bounds (count, bytes, time, pieces), oldest given up first, counted.
/// etherparse's own pool has none, and holds whatever bytes the capture kept.
#[derive(Default)]
struct Defrag {
    active: FxHashMap<FragKey, Partial>,
    order: VecDeque<(u64, FragKey)>,
    next: u64,
    bytes: usize,
    spare: Vec<Vec<u8>>,
    /// Datagrams given up: timed out, or pushed out by the bounds.
    given_up: u64,
}

impl Defrag {
    /// A fragment in; the datagram's kept bytes and its length once complete.
    fn add(&mut self, p: Piece<'_>, now: i64, keep: usize) -> Option<(Vec<u8>, usize)> {
        self.expire(now);
        let (seq, spare) = (self.next, &mut self.spare);
        let e = self.active.entry(p.key).or_insert_with(|| Partial {
            seq,
            first: now,
            data: spare.pop().unwrap_or_default(),
            have: Vec::new(),
            got: Vec::new(),
            total: None,
        });
        if e.seq == seq {
            self.next += 1;
            self.order.push_back((seq, p.key));
        }
        let end = p.offset.checked_add(p.len)?;
        let stored = p.offset.min(keep)..end.min(keep).min(p.offset + p.bytes.len());
        if stored.end > e.data.len() {
            self.bytes += stored.end - e.data.len();
            e.data.resize(stored.end, 0);
        }
        if !stored.is_empty() {
            let from = stored.start - p.offset;
            e.data[stored.clone()].copy_from_slice(&p.bytes[from..from + stored.len()]);
        }
        e.have.push((p.offset, end));
        e.got.push((p.offset, p.offset + p.bytes.len()));
        if !p.more {
            e.total = Some(end);
        }
        let bad = e.have.len() > MAX_PIECES;
        let done = e.total.filter(|t| covered(&mut e.have, *t));
        if bad || done.is_some() {
            let mut e = self.active.remove(&p.key)?;
            self.bytes -= e.data.len();
            self.given_up += u64::from(bad);
            // Only the start that the capture kept without a gap is the datagram's.
            let kept = reach(&mut e.got);
            e.data.truncate(kept);
            return done.map(|t| (e.data, t));
        }
        self.bound();
        None
    }

    fn give_back(&mut self, mut data: Vec<u8>) {
        if self.spare.len() < 64 {
            data.clear();
            self.spare.push(data);
        }
    }

    /// Gives up datagrams older than the timeout.
    fn expire(&mut self, now: i64) {
        while let Some(&(seq, key)) = self.order.front() {
            match self.active.get(&key) {
                Some(e) if e.seq == seq && e.first > now - FRAG_TIMEOUT_NS => break,
                Some(e) if e.seq == seq => self.drop_front(),
                // Completed or given up already.
                _ => {
                    self.order.pop_front();
                }
            }
        }
    }

    /// Gives up the oldest datagrams while over the bounds.
    fn bound(&mut self) {
        while self.active.len() > MAX_FRAG_DATAGRAMS || self.bytes > MAX_FRAG_BYTES {
            let Some(&(seq, key)) = self.order.front() else {
                break;
            };
            if self.active.get(&key).is_some_and(|e| e.seq == seq) {
                self.drop_front();
            } else {
                self.order.pop_front();
            }
        }
    }

    fn drop_front(&mut self) {
        if let Some((_, key)) = self.order.pop_front() {
            if let Some(e) = self.active.remove(&key) {
                self.bytes -= e.data.len();
                self.given_up += 1;
            }
        }
    }
}

/// Whether the ranges cover `0..total` (sorting them in place).
fn covered(have: &mut [(usize, usize)], total: usize) -> bool {
    reach(have) >= total
}

/// How far the ranges reach from 0 without a gap (sorting them in place).
fn reach(ranges: &mut [(usize, usize)]) -> usize {
    ranges.sort_unstable();
    let mut reach = 0;
    for &(a, b) in ranges.iter() {
        if a > reach {
            break;
        }
        reach = reach.max(b);
    }
    reach
}

#[derive(Clone, Copy)]
struct IpInfo {
    src: IpAddr,
    dst: IpAddr,
    id: u16,
    /// The IP packet's length on the wire, from its header.
    len: usize,
    proto: IpNumber,
}

impl IpInfo {
    fn id_or_zero(&self) -> u64 {
        u64::from(self.id)
    }

    fn pkt(&self, class: Class, key: u64, seq: u32, role: Role, strong: bool, cut: bool) -> Pkt {
        Pkt {
            src: self.src,
            dst: self.dst,
            class,
            key,
            seq,
            role,
            strong: strong && !cut,
            cut,
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
        return ip.pkt(Class::Icmp, key, 0, role, !payload.is_empty(), false);
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
    ip.pkt(Class::Icmp, key, 0, Role::None, false, false)
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

    /// A raw IPv4 UDP fragment: `offset` in bytes, `data` its part of the UDP datagram.
    fn fragment(src: [u8; 4], id: u16, offset: u16, more: bool, data: &[u8]) -> Vec<u8> {
        let mut h =
            etherparse::Ipv4Header::new(data.len() as u16, 64, IpNumber::UDP, src, [10, 0, 0, 2])
                .unwrap();
        h.identification = id;
        h.more_fragments = more;
        h.fragment_offset = etherparse::IpFragOffset::try_new(offset / 8).unwrap();
        let mut v = h.to_bytes().to_vec();
        v.extend_from_slice(data);
        v
    }

    fn feed(d: &mut Dissector, frames: &[Vec<u8>], orig: Option<u32>) -> Vec<Pkt> {
        let mut all = Vec::new();
        let mut out = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            let frame = Frame {
                ts_ns: i as i64,
                linktype: 101,
                data: f,
                orig_len: orig.unwrap_or(f.len() as u32),
            };
            d.dissect(&frame, &mut out);
            all.extend_from_slice(&out);
        }
        all
    }

    /// A UDP datagram (header and payload) of `n` bytes.
    fn datagram(n: usize) -> Vec<u8> {
        let payload: Vec<u8> = (0..n - 8).map(|i| (i * 7) as u8).collect();
        let mut v = Vec::new();
        v.extend_from_slice(&40000u16.to_be_bytes());
        v.extend_from_slice(&514u16.to_be_bytes());
        v.extend_from_slice(&(n as u16).to_be_bytes());
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&payload);
        v
    }

    /// A UDP datagram in IPv4 and in IPv6: (datagram, its ether type, its raw link type).
    fn v4_and_v6() -> [(Vec<u8>, u16, u32); 2] {
        let udp = datagram(60);
        let v4 = etherparse::Ipv4Header::new(60, 64, IpNumber::UDP, [10, 0, 0, 1], [10, 0, 0, 2])
            .unwrap();
        let v6 = etherparse::Ipv6Header {
            payload_length: 60,
            next_header: IpNumber::UDP,
            hop_limit: 64,
            source: [1; 16],
            destination: [2; 16],
            ..Default::default()
        };
        [
            ([v4.to_bytes().to_vec(), udp.clone()].concat(), 0x0800, 228),
            ([v6.to_bytes().to_vec(), udp].concat(), 0x86dd, 229),
        ]
    }

    /// An Ethernet frame of ether type `ty` behind `tags`, padded past the datagram.
    fn eth(ty: u16, tags: &[u16], ip: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        let mut types: Vec<u16> = tags.to_vec();
        types.push(ty);
        for (i, t) in types.iter().enumerate() {
            f.extend_from_slice(&t.to_be_bytes());
            if i + 1 < types.len() {
                f.extend_from_slice(&[0, 7]); // the tag's TCI
            }
        }
        [f, ip.to_vec(), vec![0; 20]].concat()
    }

    /// `ip` in every link type read: (link type, frame, bytes before the IP header).
    fn in_every_link_type(ip: &[u8], ty: u16, raw: u32) -> Vec<(u32, Vec<u8>, usize)> {
        let sll = [vec![0u8; 14], ty.to_be_bytes().to_vec(), ip.to_vec()].concat();
        let sll2 = [ty.to_be_bytes().to_vec(), vec![0u8; 18], ip.to_vec()].concat();
        let null = [2u32.to_ne_bytes().to_vec(), ip.to_vec()].concat();
        vec![
            (1, eth(ty, &[], ip), 14),
            (1, eth(ty, &[0x8100], ip), 18),
            (1, eth(ty, &[0x88a8, 0x8100], ip), 22),
            (1, eth(ty, &[0x9100, 0x88a8, 0x8100], ip), 26),
            (113, sll, 16),
            (276, sll2, 20),
            (101, ip.to_vec(), 0),
            (raw, ip.to_vec(), 0),
            (0, null.clone(), 4),
            (108, null, 4),
        ]
    }

    /// The same IPv4 and IPv6 datagrams in every link type read, with up to three VLAN tags
    /// and Ethernet padding: the same packet every time, and the same IP layer as etherparse's
    /// whole-packet slicing finds (which the layer-by-layer path replaced). A fourth tag, ARP
    /// and unknown link types are not IP.
    #[test]
    fn every_link_type_gives_the_same_packet() {
        for (ip, ty, raw) in v4_and_v6() {
            let want = feed(&mut Dissector::default(), std::slice::from_ref(&ip), None);
            assert_eq!(want.len(), 1);
            for (lt, f, at) in in_every_link_type(&ip, ty, raw) {
                assert_eq!(one(lt, &f), want, "link type {lt}: {f:02x?}");
                let whole = match lt {
                    1 => LaxSlicedPacket::from_ethernet(&f).unwrap(),
                    113 | 276 => LaxSlicedPacket::from_ether_type(EtherType(ty), &f[at..]),
                    _ => LaxSlicedPacket::from_ip(&f[at..]).unwrap(),
                };
                let ours = slice(lt, &f).expect("IP");
                let theirs = other(whole).expect("etherparse finds IP too");
                let layer =
                    |n: Net<'_>| (n.ip.src, n.ip.dst, n.ip.len, n.ip.proto, n.payload.to_vec());
                assert_eq!(layer(ours), layer(theirs), "link type {lt}");
            }
            // Not IP: a fourth tag (etherparse's limit too), ARP, an unknown link type.
            for (lt, f) in [
                (1, eth(ty, &[0x8100, 0x8100, 0x8100, 0x8100], &ip)),
                (1, eth(0x0806, &[], &[0; 28])),
                (147, ip.clone()),
            ] {
                let mut d = Dissector::default();
                assert!(slice(lt, &f).is_none(), "{lt}: {f:02x?}");
                d.dissect(&frame(lt, &f), &mut Vec::new());
                assert_eq!(d.skipped, 1);
            }
        }
    }

    /// Every frame above cut at every length: never a panic, and no IP layer until its link
    /// header and its whole IP header are there (a short payload is the snap length's doing
    /// and still read).
    #[test]
    fn a_frame_cut_anywhere_is_skipped_or_read_whole_headers() {
        for (ip, ty, raw) in v4_and_v6() {
            let header = if ty == 0x0800 { 20 } else { 40 };
            for (lt, f, at) in in_every_link_type(&ip, ty, raw) {
                let mut d = Dissector::default();
                for n in 0..f.len() {
                    let cut = &f[..n];
                    let sliced = slice(lt, cut).is_some();
                    assert_eq!(
                        sliced,
                        n >= at + header,
                        "link type {lt}, {n} of {} bytes",
                        f.len()
                    );
                    d.dissect(&frame(lt, cut), &mut Vec::new());
                }
            }
        }
    }

    fn frame(linktype: u32, data: &[u8]) -> Frame<'_> {
        Frame {
            ts_ns: 0,
            linktype,
            data,
            orig_len: data.len() as u32,
        }
    }

    fn one(linktype: u32, data: &[u8]) -> Vec<Pkt> {
        let mut out = Vec::new();
        Dissector::default().dissect(&frame(linktype, data), &mut out);
        out
    }

    /// Fragments of hosts outside the filter are never held; the pool is bounded in datagrams
    /// (oldest given up first, counted); a datagram whose fragments all came is one packet,
    /// with the key of the same datagram unfragmented.
    #[test]
    fn fragments_are_filtered_bounded_and_reassembled() {
        let mut d = Dissector {
            filter: vec![IpAddr::from([10, 0, 0, 1])],
            ..Dissector::default()
        };
        let others: Vec<Vec<u8>> = (0..100)
            .map(|i| fragment([10, 9, 9, 9], i, 0, true, &[1; 64]))
            .collect();
        assert!(feed(&mut d, &others, None).is_empty());
        assert_eq!(d.defrag.active.len(), 0);

        let mut d = Dissector::default();
        let n = MAX_FRAG_DATAGRAMS + 500;
        let first: Vec<Vec<u8>> = (0..n)
            .map(|i| fragment([10, 0, 0, 1], i as u16, 0, true, &[1; 64]))
            .collect();
        assert!(feed(&mut d, &first, None).is_empty());
        assert_eq!(d.defrag.active.len(), MAX_FRAG_DATAGRAMS);
        assert_eq!(d.fragments_given_up(), 500);
        // The newest datagrams are still there: their last fragments complete them.
        let whole = datagram(600);
        let mut d = Dissector::default();
        let pieces = [
            fragment([10, 0, 0, 1], 77, 0, true, &whole[..304]),
            fragment([10, 0, 0, 1], 77, 304, false, &whole[304..]),
        ];
        let got = feed(&mut d, &pieces, None);
        let mut unfragmented =
            etherparse::Ipv4Header::new(600, 64, IpNumber::UDP, [10, 0, 0, 1], [10, 0, 0, 2])
                .unwrap();
        unfragmented.identification = 77;
        let mut one = unfragmented.to_bytes().to_vec();
        one.extend_from_slice(&whole);
        let want = feed(&mut Dissector::default(), &[one], None);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].key, got[0].class), (want[0].key, want[0].class));
        assert_eq!(d.defrag.active.len(), 0);
    }

    /// A frame cut by the snap length keys on the bytes both captures have: cut at 100 bytes
    /// with a 40-byte limit, the same key as whole with that limit; cut below it, unmatchable.
    #[test]
    fn cut_frames_key_on_what_both_captures_have() {
        let whole = datagram(600);
        let mut h =
            etherparse::Ipv4Header::new(600, 64, IpNumber::UDP, [10, 0, 0, 1], [10, 0, 0, 2])
                .unwrap();
        h.identification = 9;
        let mut frame = h.to_bytes().to_vec();
        frame.extend_from_slice(&whole);
        let limited = || Dissector {
            hash_limit: 40,
            ..Dissector::default()
        };
        let full = feed(&mut limited(), &[frame.clone()], None);
        let cut = feed(
            &mut limited(),
            &[frame[..100].to_vec()],
            Some(frame.len() as u32),
        );
        assert_eq!(full[0].key, cut[0].key);
        assert!(!cut[0].cut && cut[0].strong);
        let mut d = limited();
        let short = feed(&mut d, &[frame[..50].to_vec()], Some(frame.len() as u32));
        assert!(short[0].cut && !short[0].strong);
        assert_eq!(d.cut, 1);
        // Without a limit, the whole payload is hashed, and a cut frame cannot match.
        let all = feed(&mut Dissector::default(), &[frame.clone()], None);
        assert_ne!(all[0].key, full[0].key);
        assert_eq!(hash_limit(&[262_144, 262_144, 0]), usize::MAX);
        assert_eq!(hash_limit(&[262_144, 65_535]), 65_535 - MAX_HEADERS);
        assert_eq!(hash_limit(&[262_144, 200, 0]), 40);
    }

    #[test]
    fn keys_depend_on_the_payload_and_its_fields_only() {
        assert_eq!(hash(&[17, 5], b"abc"), hash(&[17, 5], b"abc"));
        assert_ne!(hash(&[17, 5], b"abc"), hash(&[17, 6], b"abc"));
        assert_ne!(hash(&[17, 5], b"abc"), hash(&[17, 5], b"abd"));
        assert_ne!(hash(&[1, 2], b""), hash(&[2, 1], b""));
    }
}
