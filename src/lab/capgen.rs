//! `tc lab captures` (hidden): a generated pair of captures of one device's management traffic
//! as OVOC and the CPE would record it, with what `tc analyze` should find written beside them
//! (`truth.json`). For tests and benchmarks where no real WAN exists: SNMP polls and their
//! responses, a large SNMP set that a smaller path MTU fragments on its way, ICMP echo, TCP 443
//! sessions (handshake, data, a spurious retransmission, close), syslog (some of it fragmented
//! by its sender) and SNMP traps from the CPE, and LAN chatter of the CPE's that is not OVOC's.
//!
//! The world is simulated in true time: OVOC's clock is true, the CPE's is off by `--offset`
//! and drifts by `--drift-ppm`; each direction has its own minimum delay and a jitter. Packets
//! can be dropped in one direction from a time, either side can fall silent, each capture has
//! its own window, NAT can rewrite the CPE's and OVOC's addresses and the client ports, the
//! CPE's file can be a two-interface pcapng, and OVOC's capture can be a tcpdump ring (`-C`,
//! `-W 3`) that wrapped.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use etherparse::{IpHeaders, IpNumber, Ipv4Header, Ipv6Header, PacketBuilder};

use crate::cli::LabCapturesArgs;
use crate::error::{Error, ExitCode, Result};

const S: i64 = 1_000_000_000;
const MS: i64 = 1_000_000;
const O2C: usize = 0;
const C2O: usize = 1;
/// The path's MTU towards the CPE (a tunnel, say): the large SNMP set arrives in two fragments.
const PATH_MTU: usize = 1400;

/// The generated traffic's addresses: OVOC's own view and the CPE's (different behind NAT).
#[derive(Clone, Copy)]
struct Addrs {
    ovoc: IpAddr,
    device: IpAddr,
    cpe_own: IpAddr,
    ovoc_seen: IpAddr,
    lan_peer: IpAddr,
}

fn addrs(ipv6: bool, nat: bool) -> Addrs {
    let p = |s: &str| s.parse::<IpAddr>().expect("literal");
    match (ipv6, nat) {
        (false, false) => Addrs {
            ovoc: p("10.20.0.5"),
            device: p("198.51.100.7"),
            cpe_own: p("198.51.100.7"),
            ovoc_seen: p("10.20.0.5"),
            lan_peer: p("198.51.100.200"),
        },
        (false, true) => Addrs {
            ovoc: p("10.20.0.5"),
            device: p("198.51.100.7"),
            cpe_own: p("192.168.1.10"),
            ovoc_seen: p("203.0.113.5"),
            lan_peer: p("192.168.1.1"),
        },
        (true, _) => Addrs {
            ovoc: p("2001:db8:20::5"),
            device: p("2001:db8:100::7"),
            cpe_own: p("2001:db8:100::7"),
            ovoc_seen: p("2001:db8:20::5"),
            lan_peer: p("2001:db8:100::1"),
        },
    }
}

/// One packet between OVOC and the CPE (or the CPE's LAN chatter), before it is put on a wire.
#[derive(Clone)]
struct Logical {
    dir: usize,
    /// Sent at this true time.
    t: i64,
    class: &'static str,
    proto: Proto,
    /// Ports as the sender's side sees them: (OVOC's, CPE's).
    ovoc_port: u16,
    cpe_port: u16,
    /// The OVOC end initiated (its port is the client's, rewritten by NAT), else the CPE.
    ovoc_client: bool,
    ip_id: u16,
    payload: Vec<u8>,
    /// Fragmented by its sender (both captures see the fragments).
    sender_fragments: bool,
    /// Not OVOC's: LAN chatter only the CPE captures.
    lan: bool,
}

#[derive(Clone, Copy)]
enum Proto {
    Udp,
    Tcp {
        seq: u32,
        ack: u32,
        syn: bool,
        ackf: bool,
        fin: bool,
    },
    Echo {
        id: u16,
        seq: u16,
        reply: bool,
    },
}

/// Deterministic pseudo-random numbers (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// What `tc analyze` should report, from the simulation's own knowledge.
#[derive(Default, serde::Serialize)]
struct Truth {
    device: String,
    ovoc_addr_cpe_view: String,
    offset_ns: i64,
    drift_ppm: f64,
    /// True (= OVOC) time the drift is counted from.
    t0_ns: i64,
    cpe_file: String,
    ovoc_files: Vec<String>,
    ring_wrapped: bool,
    /// direction -> class -> counts
    flows: BTreeMap<String, BTreeMap<String, TruthFlow>>,
    /// direction -> first and last lost packet's send time (OVOC clock = true time)
    lost_span: BTreeMap<String, (i64, i64)>,
}

#[derive(Default, serde::Serialize, Clone, Copy)]
struct TruthFlow {
    sent: u64,
    lost: u64,
}

/// The `k`s whose time `phase + k * period` falls in `[from, to)`.
fn ticks(from: i64, to: i64, phase: i64, period: i64) -> std::ops::Range<i64> {
    let k = |t: i64| {
        (t - phase).max(0).div_euclid(period) + i64::from((t - phase).max(0) % period != 0)
    };
    k(from)..k(to)
}

/// The random numbers of one item (the `k`th of stream `what`): the same whatever slice of
/// time is being generated.
fn rng_of(seed: u64, what: u64, k: i64) -> Rng {
    let mut r = Rng(seed ^ what.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ (k as u64).rotate_left(17));
    r.next();
    r
}

fn ip_id(r: &mut Rng) -> u16 {
    (r.next() as u16).max(1)
}

/// The traffic sent in true time `[from, to)`, in send order (TCP sessions and responses that
/// start there may end a little later).
fn traffic(a: &LabCapturesArgs, t0: i64, from: i64, to: i64) -> Vec<Logical> {
    let s = Slice::new(a, t0, from, to);
    let mut out = Vec::new();
    snmp_polls(&mut out, &s);
    icmp_echo(&mut out, &s);
    for (k, t) in s.every(503, 10.0) {
        let mut r = rng_of(a.seed, 3, k);
        tcp_session(&mut out, &s.base, t, k, s.arrived, &mut r);
    }
    for (k, t) in s.every(377, 0.5) {
        cpe_chatter(&mut out, &s.base, t, k, &mut rng_of(a.seed, 4, k));
    }
    out.sort_by_key(|l| l.t);
    out
}

/// One slice `[from, to)` of true time, and what each stream generated in it shares.
struct Slice<'a> {
    a: &'a LabCapturesArgs,
    t0: i64,
    from: i64,
    to: i64,
    /// An answer leaves after its request arrived, however late that was.
    arrived: i64,
    /// An SNMP poll from OVOC; each stream changes what differs.
    base: Logical,
}

impl Slice<'_> {
    fn new(a: &LabCapturesArgs, t0: i64, from: i64, to: i64) -> Slice<'_> {
        Slice {
            a,
            t0,
            from,
            to,
            arrived: ((a.delay_ms + a.jitter_ms) * MS as f64) as i64,
            base: Logical {
                dir: O2C,
                t: 0,
                class: "snmp",
                proto: Proto::Udp,
                ovoc_port: 0,
                cpe_port: 0,
                ovoc_client: true,
                ip_id: 0,
                payload: Vec::new(),
                sender_fragments: false,
                lan: false,
            },
        }
    }

    /// `(k, send time)` of the items of a stream sent every `secs` (divided by `--rate`) from
    /// `phase_ms` after the start, that fall in this slice.
    fn every(&self, phase_ms: i64, secs: f64) -> impl Iterator<Item = (i64, i64)> {
        let period = (((secs / self.a.rate.max(0.001)) * S as f64) as i64).max(1);
        let phase = self.t0 + phase_ms * MS;
        ticks(self.from, self.to, phase, period).map(move |k| (k, phase + k * period))
    }
}

/// SNMP polls and their responses; every 30th a large set that the path fragments.
fn snmp_polls(out: &mut Vec<Logical>, s: &Slice) {
    for (k, t) in s.every(13, 1.0) {
        let mut r = rng_of(s.a.seed, 1, k);
        let big = k % 30 == 29;
        let size = if big { 1400 } else { 40 + r.below(60) as usize };
        let port = 40000 + (k % 4) as u16;
        let (pdu, id) = (if big { 0xa3 } else { 0xa0 }, k as u32);
        out.push(Logical {
            t,
            ovoc_port: port,
            cpe_port: 161,
            ip_id: ip_id(&mut r),
            payload: snmp(pdu, id, &r.bytes(size)),
            ..s.base.clone()
        });
        let n = 30 + r.below(200) as usize;
        let answer = r.bytes(n);
        out.push(Logical {
            dir: C2O,
            t: t + s.arrived + 1_500_000,
            ovoc_port: port,
            cpe_port: 161,
            ip_id: ip_id(&mut r),
            payload: snmp(0xa2, id, &answer),
            ..s.base.clone()
        });
    }
}

/// ICMP echo from OVOC, and the CPE's replies.
fn icmp_echo(out: &mut Vec<Logical>, s: &Slice) {
    for (k, t) in s.every(211, 2.0) {
        let mut r = rng_of(s.a.seed, 2, k);
        let data = r.bytes(56);
        for (dir, dt, reply) in [(O2C, 0, false), (C2O, s.arrived + 300_000, true)] {
            out.push(Logical {
                dir,
                t: t + dt,
                class: "icmp",
                proto: Proto::Echo {
                    id: 0x4242,
                    seq: k as u16,
                    reply,
                },
                ip_id: ip_id(&mut r),
                payload: data.clone(),
                ..s.base.clone()
            });
        }
    }
}

/// Syslog from the CPE (every 20th too large for one packet), a trap now and then, and a DNS
/// exchange with the CPE's LAN.
fn cpe_chatter(out: &mut Vec<Logical>, base: &Logical, t: i64, k: i64, r: &mut Rng) {
    let text = format!(
        "<134>1 - msbr-7 - - - - [{k}] Board: {} ",
        "x".repeat(if k % 20 == 19 {
            2500
        } else {
            60 + (k % 50) as usize
        })
    );
    out.push(Logical {
        dir: C2O,
        t,
        class: "syslog",
        ovoc_port: 514,
        cpe_port: 514,
        ovoc_client: false,
        ip_id: ip_id(r),
        sender_fragments: text.len() > PATH_MTU,
        payload: text.into_bytes(),
        ..base.clone()
    });
    if k % 30 == 7 {
        let value = r.bytes(80);
        out.push(Logical {
            dir: C2O,
            t: t + 40 * MS,
            class: "snmp_trap",
            ovoc_port: 162,
            cpe_port: 50162,
            ovoc_client: false,
            ip_id: ip_id(r),
            payload: snmp(0xa7, k as u32, &value),
            ..base.clone()
        });
    }
    for dir in [C2O, O2C] {
        out.push(Logical {
            dir,
            t: t + 90 * MS + dir as i64 * MS,
            class: "other",
            ovoc_port: 53,
            cpe_port: 33000 + (k % 100) as u16,
            ovoc_client: false,
            ip_id: ip_id(r),
            payload: r.bytes(40),
            lan: true,
            ..base.clone()
        });
    }
}

/// One TCP session of OVOC's to the CPE's port 443: handshake, a request and a response of
/// three segments (of an MSS of 1380, as a clamping router or a tunnel leaves it, so that IPv6
/// fits an Ethernet MTU too), a second exchange, close; every 5th with a spurious
/// retransmission.
fn tcp_session(out: &mut Vec<Logical>, base: &Logical, t: i64, k: i64, arrived: i64, r: &mut Rng) {
    // The session's steps are 30 ms apart on a path whose one-way delay is below that.
    let scale = (arrived + 2 * MS).max(30 * MS) as f64 / (30 * MS) as f64;
    let port = 50000 + (k % 1000) as u16;
    let (isn_c, isn_s) = (r.next() as u32, r.next() as u32);
    let (c, s) = (isn_c.wrapping_add(1), isn_s.wrapping_add(1));
    let at = |n: u32, plus: u32| n.wrapping_add(plus);
    // (dir, ms after start, payload length, SYN, ACK, FIN, seq, ack)
    type Segment = (usize, i64, usize, bool, bool, bool, u32, u32);
    let mut segs: Vec<Segment> = vec![
        (O2C, 0, 0, true, false, false, isn_c, 0),
        (C2O, 30, 0, true, true, false, isn_s, c),
        (O2C, 60, 0, false, true, false, c, s),
        (O2C, 61, 517, false, true, false, c, s),
        (C2O, 95, 1380, false, true, false, s, at(c, 517)),
        (C2O, 95, 1380, false, true, false, at(s, 1380), at(c, 517)),
        (C2O, 96, 600, false, true, false, at(s, 2760), at(c, 517)),
        (O2C, 125, 0, false, true, false, at(c, 517), at(s, 3360)),
        (O2C, 130, 120, false, true, false, at(c, 517), at(s, 3360)),
        (C2O, 160, 80, false, true, false, at(s, 3360), at(c, 637)),
        (O2C, 190, 0, false, true, true, at(c, 637), at(s, 3440)),
        (C2O, 220, 0, false, true, true, at(s, 3440), at(c, 638)),
        (O2C, 250, 0, false, true, false, at(c, 638), at(s, 3441)),
    ];
    if k % 5 == 4 {
        // A spurious retransmission of the last response segment: both copies arrive.
        segs.insert(
            7,
            (C2O, 124, 600, false, true, false, at(s, 2760), at(c, 517)),
        );
    }
    let mut data: BTreeMap<(usize, u32), Vec<u8>> = BTreeMap::new();
    for (dir, ms, len, syn, ackf, fin, seq, ack) in segs {
        let payload = data
            .entry((dir, seq))
            .or_insert_with(|| r.bytes(len))
            .clone();
        out.push(Logical {
            dir,
            t: t + (ms as f64 * scale) as i64 * MS,
            class: "tcp:443",
            proto: Proto::Tcp {
                seq,
                ack,
                syn,
                ackf,
                fin,
            },
            ovoc_port: port,
            cpe_port: 443,
            ip_id: ip_id(r),
            payload,
            ..base.clone()
        });
    }
}

fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    if body.len() < 0x80 {
        v.push(body.len() as u8);
    } else {
        v.extend_from_slice(&[0x82, (body.len() >> 8) as u8, body.len() as u8]);
    }
    v.extend_from_slice(body);
    v
}

/// An SNMPv2c message (community "public") with PDU type `pdu`, request id `id` and one
/// varbind whose value is `value`.
fn snmp(pdu: u8, id: u32, value: &[u8]) -> Vec<u8> {
    let oid = [0x06, 0x08, 0x2b, 6, 1, 4, 1, 0x85, 0x4c, 1];
    let varbind = [&oid[..], &tlv(0x04, value)].concat();
    let list = tlv(0x30, &tlv(0x30, &varbind));
    let body = [
        &tlv(0x02, &id.to_be_bytes())[..],
        &[2, 1, 0, 2, 1, 0],
        &list,
    ]
    .concat();
    tlv(
        0x30,
        &[&[2, 1, 1][..], &tlv(0x04, b"public"), &tlv(pdu, &body)].concat(),
    )
}

/// The IP packet(s) of a logical packet as `side` captures it: addresses and client port as
/// NAT left them there, TTL as the hops left it, fragments where the path or sender made them.
fn on_wire(l: &Logical, side: usize, a: &Addrs, nat: bool) -> Vec<Vec<u8>> {
    let (src, dst, sport, dport) = endpoints(l, side, a, nat);
    let sender_side = if l.dir == O2C { 0 } else { 1 };
    let ttl = if side == sender_side { 64 } else { 57 };
    let pkt = build_packet(l, ip_header(l, src, dst, ttl), sport, dport);
    let path_frag = l.dir == O2C && side == 1 && pkt.len() > PATH_MTU;
    if src.is_ipv4() && (l.sender_fragments || path_frag) {
        fragment(&pkt, PATH_MTU)
    } else {
        vec![pkt]
    }
}

/// (source, destination, source port, destination port) as `side` sees them.
fn endpoints(l: &Logical, side: usize, a: &Addrs, nat: bool) -> (IpAddr, IpAddr, u16, u16) {
    let at_ovoc = side == 0;
    let (ovoc_ip, cpe_ip) = if at_ovoc {
        (a.ovoc, a.device)
    } else if l.lan {
        (a.lan_peer, a.cpe_own)
    } else {
        (a.ovoc_seen, a.cpe_own)
    };
    let (mut op, mut cp) = (l.ovoc_port, l.cpe_port);
    // NAT rewrites the client's port on the far side of the CPE's router.
    if nat && !l.lan {
        if l.ovoc_client && !at_ovoc {
            op ^= 0x2a00;
        }
        if !l.ovoc_client && at_ovoc {
            cp ^= 0x2a00;
        }
    }
    if l.dir == O2C {
        (ovoc_ip, cpe_ip, op, cp)
    } else {
        (cpe_ip, ovoc_ip, cp, op)
    }
}

fn ip_header(l: &Logical, src: IpAddr, dst: IpAddr, ttl: u8) -> IpHeaders {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h =
                Ipv4Header::new(0, ttl, IpNumber::UDP, s.octets(), d.octets()).expect("header");
            h.identification = l.ip_id;
            h.dont_fragment = !matches!(l.proto, Proto::Udp);
            IpHeaders::Ipv4(h, Default::default())
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => IpHeaders::Ipv6(
            Ipv6Header {
                hop_limit: ttl,
                source: s.octets(),
                destination: d.octets(),
                ..Default::default()
            },
            Default::default(),
        ),
        _ => unreachable!("one family"),
    }
}

/// The whole IP packet: `ip`, the transport header of `l.proto`, the payload.
fn build_packet(l: &Logical, ip: IpHeaders, sport: u16, dport: u16) -> Vec<u8> {
    let v4 = matches!(ip, IpHeaders::Ipv4(..));
    let b = PacketBuilder::ip(ip);
    let mut pkt = Vec::with_capacity(l.payload.len() + 64);
    let r = match l.proto {
        Proto::Udp => b.udp(sport, dport).write(&mut pkt, &l.payload),
        Proto::Tcp {
            seq,
            ack,
            syn,
            ackf,
            fin,
        } => {
            let mut t = b.tcp(sport, dport, seq, 64240);
            if syn {
                t = t.syn();
            }
            if ackf {
                t = t.ack(ack);
            }
            if fin {
                t = t.fin();
            }
            if !l.payload.is_empty() {
                t = t.psh();
            }
            t.write(&mut pkt, &l.payload)
        }
        Proto::Echo { id, seq, reply } => match (v4, reply) {
            (true, false) => b.icmpv4_echo_request(id, seq).write(&mut pkt, &l.payload),
            (true, true) => b.icmpv4_echo_reply(id, seq).write(&mut pkt, &l.payload),
            (false, false) => b.icmpv6_echo_request(id, seq).write(&mut pkt, &l.payload),
            (false, true) => b.icmpv6_echo_reply(id, seq).write(&mut pkt, &l.payload),
        },
    };
    r.expect("building a packet");
    pkt
}

/// IPv4 fragments of `pkt` of at most `mtu` bytes each.
fn fragment(pkt: &[u8], mtu: usize) -> Vec<Vec<u8>> {
    let (h, rest) = Ipv4Header::from_slice(pkt).expect("our own header");
    let chunk = (mtu - h.header_len()) / 8 * 8;
    let pieces: Vec<&[u8]> = rest.chunks(chunk).collect();
    pieces
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut f = h.clone();
            f.more_fragments = i + 1 < pieces.len();
            f.fragment_offset =
                etherparse::IpFragOffset::try_new((i * chunk / 8) as u16).expect("offset fits");
            f.total_len = (f.header_len() + p.len()) as u16;
            f.header_checksum = f.calc_header_checksum();
            let mut out = f.to_bytes().to_vec();
            out.extend_from_slice(p);
            out
        })
        .collect()
}

/// A frame for a link type: Ethernet (with a VLAN tag for the CPE), or Linux cooked v2.
fn framed(ip: &[u8], linktype: u32, vlan: Option<u16>) -> Vec<u8> {
    let v6 = ip.first().is_some_and(|b| b >> 4 == 6);
    let ethertype: u16 = if v6 { 0x86dd } else { 0x0800 };
    let mut f = Vec::with_capacity(ip.len() + 24);
    if linktype == 276 {
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0, 0, 2, 1, 4, 6, 2, 0, 0, 0, 0xa, 0xb, 0, 0, 0]);
        debug_assert_eq!(f.len(), 20);
    } else {
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2]);
        if let Some(v) = vlan {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
    }
    f.extend_from_slice(ip);
    f
}

/// Capture writers: classic pcap (µs or ns), two-interface pcapng, a tcpdump-style ring.
trait Sink {
    fn record(&mut self, ts: i64, iface: usize, frame: &[u8]) -> std::io::Result<()>;
    fn close(self: Box<Self>) -> std::io::Result<Vec<PathBuf>>;
    /// A ring that reused a file.
    fn wrapped(&self) -> bool {
        false
    }
}

struct Pcap {
    out: BufWriter<File>,
    path: PathBuf,
    nanos: bool,
    bytes: u64,
    /// Frames are cut to this (tcpdump -s).
    snaplen: usize,
}

fn pcap_header(linktype: u32, nanos: bool, snaplen: u32) -> [u8; 24] {
    let mut h = crate::lab::pcap::global_header(linktype, snaplen);
    if nanos {
        h[0..4].copy_from_slice(&0xa1b2_3c4du32.to_le_bytes());
    }
    h
}

impl Pcap {
    fn create(path: PathBuf, linktype: u32, nanos: bool) -> std::io::Result<Pcap> {
        Pcap::with_snaplen(path, linktype, nanos, 262_144)
    }

    fn with_snaplen(path: PathBuf, lt: u32, nanos: bool, snaplen: u32) -> std::io::Result<Pcap> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&path)?);
        out.write_all(&pcap_header(lt, nanos, snaplen))?;
        Ok(Pcap {
            out,
            path,
            nanos,
            bytes: 24,
            snaplen: snaplen as usize,
        })
    }
}

impl Sink for Pcap {
    fn record(&mut self, ts: i64, _: usize, frame: &[u8]) -> std::io::Result<()> {
        let (sec, frac) = (ts.div_euclid(S), ts.rem_euclid(S));
        let frac = if self.nanos { frac } else { frac / 1000 };
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&(sec as u32).to_le_bytes());
        h[4..8].copy_from_slice(&(frac as u32).to_le_bytes());
        let kept = &frame[..frame.len().min(self.snaplen)];
        h[8..12].copy_from_slice(&(kept.len() as u32).to_le_bytes());
        h[12..16].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(kept)?;
        self.bytes += 16 + kept.len() as u64;
        Ok(())
    }

    fn close(mut self: Box<Self>) -> std::io::Result<Vec<PathBuf>> {
        self.out.flush()?;
        Ok(vec![self.path])
    }
}

/// tcpdump's `-C size -W 3`: a new file when the current one is full, numbered in turn and
/// reused after the last (the oldest packets are lost).
struct Ring {
    base: String,
    dir: PathBuf,
    size: u64,
    count: u32,
    current: Option<(u32, Pcap)>,
    used: Vec<u32>,
    wrapped: bool,
}

impl Ring {
    fn path(&self, n: u32) -> PathBuf {
        self.dir.join(format!("{}-{n}.pcap", self.base))
    }
}

impl Sink for Ring {
    fn record(&mut self, ts: i64, i: usize, frame: &[u8]) -> std::io::Result<()> {
        let full = self
            .current
            .as_ref()
            .is_some_and(|(_, p)| p.bytes >= self.size);
        if self.current.is_none() || full {
            let n = match self.current.take() {
                Some((n, mut p)) => {
                    p.out.flush()?;
                    (n + 1) % self.count
                }
                None => 0,
            };
            if self.used.contains(&n) {
                self.wrapped = true;
            } else {
                self.used.push(n);
            }
            self.current = Some((n, Pcap::create(self.path(n), 1, false)?));
        }
        self.current
            .as_mut()
            .expect("opened")
            .1
            .record(ts, i, frame)
    }

    fn wrapped(&self) -> bool {
        self.wrapped
    }

    fn close(mut self: Box<Self>) -> std::io::Result<Vec<PathBuf>> {
        if let Some((_, mut p)) = self.current.take() {
            p.out.flush()?;
        }
        let mut v: Vec<u32> = self.used.clone();
        v.sort_unstable();
        Ok(v.into_iter().map(|n| self.path(n)).collect())
    }
}

struct PcapNg {
    out: BufWriter<File>,
    path: PathBuf,
    /// Written at the end as the WAN interface's statistics (isb_ifdrop), when given.
    drops: Option<u64>,
}

impl PcapNg {
    /// Interface 0: the CPE's LAN (Ethernet, µs); interface 1: its WAN (Linux cooked v2, ns).
    fn create(path: PathBuf, drops: Option<u64>) -> std::io::Result<PcapNg> {
        use pcap_parser::pcapng::{InterfaceDescriptionBlock, SectionHeaderBlock};
        use pcap_parser::{Linktype, ToVec};
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&path)?);
        let shb = SectionHeaderBlock {
            block_type: 0,
            block_len1: 0,
            bom: 0,
            major_version: 1,
            minor_version: 0,
            section_len: -1,
            options: Vec::new(),
            block_len2: 0,
        }
        .to_vec();
        out.write_all(&shb.map_err(|e| std::io::Error::other(format!("{e:?}")))?)?;
        for (lt, resol) in [(1, 6u8), (276, 9u8)] {
            let idb = InterfaceDescriptionBlock {
                block_type: 0,
                block_len1: 0,
                linktype: Linktype(lt),
                reserved: 0,
                snaplen: 0,
                options: Vec::new(),
                block_len2: 0,
                if_tsresol: resol,
                if_tsoffset: 0,
            }
            .to_vec();
            out.write_all(&idb.map_err(|e| std::io::Error::other(format!("{e:?}")))?)?;
        }
        Ok(PcapNg { out, path, drops })
    }
}

impl Sink for PcapNg {
    fn record(&mut self, ts: i64, iface: usize, frame: &[u8]) -> std::io::Result<()> {
        let units = if iface == 0 { ts / 1000 } else { ts } as u64;
        let pad = (4 - frame.len() % 4) % 4;
        let len = (32 + frame.len() + pad) as u32;
        let mut b = Vec::with_capacity(len as usize);
        for v in [
            6u32,
            len,
            iface as u32,
            (units >> 32) as u32,
            units as u32,
            frame.len() as u32,
            frame.len() as u32,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(frame);
        b.extend(std::iter::repeat_n(0, pad));
        b.extend_from_slice(&len.to_le_bytes());
        self.out.write_all(&b)
    }

    fn close(mut self: Box<Self>) -> std::io::Result<Vec<PathBuf>> {
        if let Some(drops) = self.drops {
            // An interface statistics block for the WAN interface: isb_ifdrop (code 5), then
            // the end of options.
            let mut b = Vec::with_capacity(40);
            for v in [5u32, 40, 1, 0, 0] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(&5u16.to_le_bytes());
            b.extend_from_slice(&8u16.to_le_bytes());
            b.extend_from_slice(&drops.to_le_bytes());
            b.extend_from_slice(&[0; 4]);
            b.extend_from_slice(&40u32.to_le_bytes());
            self.out.write_all(&b)?;
        }
        self.out.flush()?;
        Ok(vec![self.path])
    }
}

/// The simulated world of one run.
struct World<'a> {
    a: &'a LabCapturesArgs,
    addrs: Addrs,
    t0: i64,
    /// Capture windows in true time: OVOC, CPE.
    windows: [(i64, i64); 2],
    /// Records waiting to be written in time order, per side: (stamp, interface, frame).
    pending: [Vec<(i64, usize, Vec<u8>)>; 2],
    truth: Truth,
}

impl World<'_> {
    fn new<'a>(a: &'a LabCapturesArgs, addrs: Addrs, cpe_path: &Path) -> World<'a> {
        let t0 = a.start;
        let window = |start: f64, stop: Option<f64>| {
            let stop = stop.unwrap_or(a.seconds + 1.0);
            (
                t0 + (start * S as f64) as i64,
                t0 + (stop * S as f64) as i64,
            )
        };
        World {
            a,
            addrs,
            t0,
            windows: [
                window(a.ovoc_start, a.ovoc_end),
                window(a.cpe_start, a.cpe_end),
            ],
            pending: [Vec::new(), Vec::new()],
            truth: Truth {
                device: addrs.device.to_string(),
                ovoc_addr_cpe_view: addrs.ovoc_seen.to_string(),
                offset_ns: a.offset,
                drift_ppm: a.drift_ppm,
                t0_ns: t0,
                cpe_file: cpe_path.display().to_string(),
                ..Truth::default()
            },
        }
    }

    fn cpe_clock(&self, t: i64) -> i64 {
        let stepped = self.a.cpe_step != 0 && self.secs(t) >= self.a.cpe_step_at;
        t + self.a.offset
            + (self.a.drift_ppm * 1e-6 * (t - self.t0) as f64) as i64
            + if stepped { self.a.cpe_step } else { 0 }
    }

    fn stamp(&self, side: usize, t: i64) -> i64 {
        if side == 0 {
            t
        } else {
            self.cpe_clock(t)
        }
    }

    fn in_window(&self, side: usize, t: i64) -> bool {
        let (a, b) = self.windows[side];
        (a..=b).contains(&t)
    }

    fn secs(&self, t: i64) -> f64 {
        (t - self.t0) as f64 / S as f64
    }

    fn dropped(&self, l: &Logical) -> bool {
        let dir_ok = match self.a.drop.as_deref() {
            Some("both") => true,
            Some("ovoc_to_cpe") => l.dir == O2C,
            Some("cpe_to_ovoc") => l.dir == C2O,
            _ => false,
        };
        let t = self.secs(l.t);
        dir_ok
            && self.a.drop_class.as_deref().is_none_or(|c| c == l.class)
            && t >= self.a.drop_from
            && self.a.drop_until.is_none_or(|u| t < u)
    }

    fn silent(&self, l: &Logical) -> bool {
        let t = self.secs(l.t);
        let from = if l.dir == C2O {
            self.a.cpe_silent_from
        } else {
            self.a.ovoc_silent_from
        };
        from.is_some_and(|f| t >= f)
    }

    fn record(&mut self, side: usize, t: i64, l: &Logical) {
        let pcapng = side == 1 && self.a.cpe_format == "pcapng";
        let stamp = self.stamp(side, t);
        for (i, ip) in on_wire(l, side, &self.addrs, self.a.nat)
            .into_iter()
            .enumerate()
        {
            let (iface, frame) = match (side, pcapng, l.lan) {
                (0, _, _) => (0, framed(&ip, 1, None)),
                (_, true, true) => (0, framed(&ip, 1, None)),
                (_, true, false) => (1, framed(&ip, 276, None)),
                (_, false, true) => (0, framed(&ip, 1, None)),
                (_, false, false) => (0, framed(&ip, 1, Some(100))),
            };
            self.pending[side].push((stamp + i as i64 * 1000, iface, frame));
        }
    }

    fn simulate(&mut self, l: &Logical) {
        if l.lan {
            if self.in_window(1, l.t) && !(self.silent(l) && l.dir == C2O) {
                self.record(1, l.t, l);
            }
            return;
        }
        if self.silent(l) {
            return;
        }
        let sender = if l.dir == O2C { 0 } else { 1 };
        let mut r = Rng(l.t as u64 ^ l.ip_id as u64 ^ self.a.seed);
        // Queueing above the minimum delay: mostly small, sometimes up to the jitter.
        let u = r.below(1_000_000) as f64 / 1e6;
        let base = if l.dir == O2C {
            self.a.delay_ms
        } else {
            self.a.delay_up_ms.unwrap_or(self.a.delay_ms)
        };
        let arrive = l.t + ((base + self.a.jitter_ms * u * u * u) * MS as f64) as i64;
        let dropped = self.dropped(l);
        if self.in_window(sender, l.t) {
            self.record(sender, l.t, l);
            let (lo, hi) = self.windows[1 - sender];
            let inner = arrive >= lo + 2 * S && arrive <= hi - 2 * S;
            let f = self
                .truth
                .flows
                .entry(crate::analyze::core::DIRECTIONS[l.dir].to_string())
                .or_default()
                .entry(l.class.to_string())
                .or_default();
            f.sent += 1;
            if dropped && inner {
                f.lost += 1;
                let span = self
                    .truth
                    .lost_span
                    .entry(crate::analyze::core::DIRECTIONS[l.dir].to_string())
                    .or_insert((l.t, l.t));
                span.1 = l.t;
            }
        }
        if !dropped && self.in_window(1 - sender, arrive) {
            self.record(1 - sender, arrive, l);
        }
    }

    /// Writes the records older than `before` (true time) in time order.
    fn flush(&mut self, sinks: &mut [Box<dyn Sink>; 2], before: i64) -> std::io::Result<()> {
        for (side, sink) in sinks.iter_mut().enumerate() {
            let cut = if before == i64::MAX {
                i64::MAX
            } else {
                self.stamp(side, before)
            };
            let p = &mut self.pending[side];
            p.sort_by_key(|r| r.0);
            let n = p.partition_point(|r| r.0 < cut);
            for (ts, iface, frame) in p.drain(..n) {
                sink.record(ts, iface, &frame)?;
            }
        }
        Ok(())
    }
}

pub fn run(a: LabCapturesArgs) -> Result<ExitCode> {
    std::fs::create_dir_all(&a.dir)
        .map_err(|e| Error::usage(format!("creating {}: {e}", a.dir.display())))?;
    let t0 = a.start;
    let addrs = addrs(a.ipv6, a.nat);
    let stamp = crate::timefmt::Utc::from_unix_micros(t0 / 1000).file_stamp();
    let name = format!("device_{}_{stamp}", addrs.device);
    let (mut sinks, cpe_path) = open_sinks(&a, &name).map_err(io_error)?;
    let mut w = World::new(&a, addrs, &cpe_path);
    // One second of traffic at a time, so memory stays bounded however long the capture:
    // nothing generated later is recorded before the slice's start, so what is older is
    // written out (with two seconds to spare).
    let end = t0 + (a.seconds * S as f64) as i64;
    let mut from = t0;
    while from < end {
        let to = (from + S).min(end);
        for l in traffic(&a, t0, from, to) {
            w.simulate(&l);
        }
        w.flush(&mut sinks, from - 2 * S).map_err(io_error)?;
        from = to;
    }
    w.flush(&mut sinks, i64::MAX).map_err(io_error)?;
    let [ovoc, cpe] = sinks;
    w.truth.ring_wrapped = ovoc.wrapped();
    cpe.close().map_err(io_error)?;
    let files = ovoc.close().map_err(io_error)?;
    w.truth.ovoc_files = files.iter().map(|p| p.display().to_string()).collect();
    let truth = serde_json::to_string_pretty(&w.truth).expect("serializes");
    std::fs::write(a.dir.join("truth.json"), truth).map_err(io_error)?;
    Ok(ExitCode::Ok)
}

fn io_error(e: std::io::Error) -> Error {
    Error::failed(format!("writing captures: {e}"))
}

/// OVOC's capture (one file, or a ring) and the CPE's in the format asked for; and the CPE
/// file's path, for the truth.
fn open_sinks(a: &LabCapturesArgs, name: &str) -> std::io::Result<([Box<dyn Sink>; 2], PathBuf)> {
    let ext = if a.cpe_format == "pcapng" {
        "pcapng"
    } else {
        "pcap"
    };
    let cpe_path = a.dir.join(format!("CPE_{name}.{ext}"));
    let cpe: Box<dyn Sink> = match a.cpe_format.as_str() {
        "pcapng" => Box::new(PcapNg::create(cpe_path.clone(), a.cpe_capture_drops)?),
        f => Box::new(Pcap::with_snaplen(
            cpe_path.clone(),
            1,
            f == "pcap-ns",
            a.cpe_snaplen.unwrap_or(262_144),
        )?),
    };
    let ovoc: Box<dyn Sink> = match a.ring_bytes {
        Some(size) => Box::new(Ring {
            base: format!("OVOC_{name}"),
            dir: a.dir.clone(),
            size,
            count: 3,
            current: None,
            used: Vec::new(),
            wrapped: false,
        }),
        None => Box::new(Pcap::create(
            a.dir.join(format!("OVOC_{name}-0.pcap")),
            1,
            false,
        )?),
    };
    Ok(([ovoc, cpe], cpe_path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::dissect::{Class, Dissector};
    use crate::analyze::read::Frame;

    fn keys(frames: &[Vec<u8>], linktype: u32) -> Vec<crate::analyze::dissect::Pkt> {
        let mut d = Dissector::default();
        let (mut all, mut out) = (Vec::new(), Vec::new());
        for (i, f) in frames.iter().enumerate() {
            let frame = Frame {
                ts_ns: i as i64,
                linktype,
                data: f,
                orig_len: f.len() as u32,
            };
            d.dissect(&frame, &mut out);
            all.extend_from_slice(&out);
        }
        all
    }

    /// One packet of each kind, as both captures record it through NAT (other addresses,
    /// ports, TTL, checksums; fragments on one side only): the same key, and the same class and
    /// role.
    #[test]
    fn keys_survive_nat_ttl_and_fragmentation() {
        let a = LabCapturesArgs {
            rate: 1.0,
            seed: 7,
            delay_ms: 20.0,
            jitter_ms: 8.0,
            ..test_args()
        };
        let t0 = 1_000 * S;
        let traffic = traffic(&a, t0, t0, t0 + 31 * S);
        let mut kinds = std::collections::BTreeSet::new();
        for ipv6 in [false, true] {
            let ad = addrs(ipv6, !ipv6);
            for l in traffic.iter().filter(|l| !l.lan) {
                let (o, c) = (on_wire(l, 0, &ad, !ipv6), on_wire(l, 1, &ad, !ipv6));
                let ko = keys(
                    &o.iter().map(|ip| framed(ip, 1, None)).collect::<Vec<_>>(),
                    1,
                );
                let kc = keys(
                    &c.iter().map(|ip| framed(ip, 276, None)).collect::<Vec<_>>(),
                    276,
                );
                assert_eq!(ko.len(), 1, "{} {ipv6}", l.class);
                assert_eq!(kc.len(), 1, "{} {ipv6}", l.class);
                let (ko, kc) = (ko[0], kc[0]);
                assert_eq!((ko.key, ko.class), (kc.key, kc.class), "{} {ipv6}", l.class);
                assert_eq!(
                    std::mem::discriminant(&ko.role),
                    std::mem::discriminant(&kc.role)
                );
                if !ipv6 {
                    assert_ne!(ko.src, kc.src);
                }
                kinds.insert((ko.class, c.len() > 1 || o.len() > 1));
            }
        }
        // Every kind was there: fragmented SNMP and syslog, requests and responses.
        assert!(kinds.iter().any(|k| k.0 == Class::Snmp && k.1), "{kinds:?}");
        assert!(
            kinds.iter().any(|k| k.0 == Class::Syslog && k.1),
            "{kinds:?}"
        );
        for c in [Class::Icmp, Class::Tcp(443), Class::SnmpTrap] {
            assert!(kinds.iter().any(|k| k.0 == c), "{c:?} {kinds:?}");
        }
    }

    /// A sender's TSO segment (one 4000-byte capture record) and the three segments the wire
    /// carried: the same keys once the large one is cut back.
    #[test]
    fn offloaded_segments_match_the_wire() {
        let ip = |id: u16, seq: u32, data: &[u8]| {
            let mut h = Ipv4Header::new(0, 64, IpNumber::TCP, [10, 0, 0, 1], [10, 0, 0, 2])
                .expect("header");
            h.identification = id;
            let mut out = Vec::new();
            PacketBuilder::ip(IpHeaders::Ipv4(h, Default::default()))
                .tcp(443, 50000, seq, 1000)
                .ack(1)
                .write(&mut out, data)
                .expect("packet");
            framed(&out, 1, None)
        };
        let data: Vec<u8> = (0..4000u32).map(|i| (i * 7) as u8).collect();
        let big = keys(&[ip(100, 5000, &data)], 1);
        let wire = keys(
            &[
                ip(100, 5000, &data[..1460]),
                ip(101, 6460, &data[1460..2920]),
                ip(102, 7920, &data[2920..]),
            ],
            1,
        );
        let k = |v: &[crate::analyze::dissect::Pkt]| {
            v.iter().map(|p| (p.key, p.seq)).collect::<Vec<_>>()
        };
        assert_eq!(big.len(), 3);
        assert_eq!(k(&big), k(&wire));
    }

    fn test_args() -> LabCapturesArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct W {
            #[command(flatten)]
            a: LabCapturesArgs,
        }
        W::parse_from(["x", "--dir", "/nonexistent"]).a
    }
}
