//! The lab's classic libpcap helpers: parse, write, split by IPv4 address and generate the
//! emulated devices' captures. Pure: every function is table-tested on byte slices. Both byte
//! orders and µs or ns timestamps are read; µs little-endian is written. (`tc analyze` reads
//! pcap and pcapng with pcap-parser.)

use std::collections::HashMap;
use std::net::Ipv4Addr;

pub const LINKTYPE_ETHERNET: u32 = 1;
pub const LINKTYPE_RAW: u32 = 101;
pub const LINKTYPE_LINUX_SLL: u32 = 113;
/// Some writers use the IPv4-only raw type instead of RAW; the frames look the same to us.
pub const LINKTYPE_IPV4: u32 = 228;
pub const LINKTYPE_LINUX_SLL2: u32 = 276;

const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const GLOBAL_HEADER_LEN: usize = 24;
const RECORD_HEADER_LEN: usize = 16;
/// libpcap's own ceiling for a record (it rejects larger ones as corrupt): a larger length is
/// a sign of garbage, not of a real jumbo frame, and would make us allocate absurd amounts.
const MAX_RECORD_LEN: u32 = 256 * 1024 * 1024;
const ETHERTYPE_IPV4: u16 = 0x0800;
const DEFAULT_SNAPLEN: u32 = 262_144;
/// Frame size used by `pad_to`: close to a full-MTU frame, as a busy device's capture would be.
const PAD_FRAME_LEN: usize = 1400;

/// A libpcap global header: little-endian, µs timestamps, version 2.4.
pub fn global_header(linktype: u32, snaplen: u32) -> [u8; 24] {
    let mut h = [0u8; GLOBAL_HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC_MICROS.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    // thiszone and sigfigs stay 0: every modern reader ignores them.
    h[16..20].copy_from_slice(&snaplen.to_le_bytes());
    h[20..24].copy_from_slice(&linktype.to_le_bytes());
    h
}

/// Append one record in the format written by `global_header` (little-endian, µs).
pub fn write_record(out: &mut Vec<u8>, ts_micros: u64, frame: &[u8]) {
    let len = frame.len() as u32;
    Layout::NATIVE_OUT.push_header(out, ts_micros, len, len);
    out.extend_from_slice(frame);
}

// The parser reports every record field; the lab only splits by address today.
#[allow(dead_code)]
pub struct Packet<'a> {
    pub ts_micros: u64,
    pub data: &'a [u8],
    pub orig_len: u32,
}

pub struct Capture<'a> {
    pub linktype: u32,
    pub packets: Vec<Packet<'a>>,
}

/// Parse a libpcap file (either byte order, µs or ns). Nanosecond timestamps are truncated to
/// µs in `Packet::ts_micros`; `split_by_ipv4` copies records verbatim so nothing is lost there.
pub fn parse(bytes: &[u8]) -> Result<Capture<'_>, String> {
    let (header, records) = parse_records(bytes)?;
    Ok(Capture {
        linktype: header.linktype,
        packets: records.into_iter().map(|r| r.packet).collect(),
    })
}

/// The IPv4 source and destination of a frame for linktypes EN10MB (1, including 802.1Q/QinQ
/// tags), RAW (101), IPV4 (228), LINUX_SLL (113) and LINUX_SLL2 (276); None if not IPv4.
pub fn ipv4_endpoints(linktype: u32, frame: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let ip = match linktype {
        LINKTYPE_ETHERNET => {
            let mut off = 12;
            let mut ethertype = be16(frame, off)?;
            // At most two tags (QinQ); more than that is not something a CPE capture contains.
            for _ in 0..2 {
                if ethertype != 0x8100 && ethertype != 0x88a8 {
                    break;
                }
                off += 4;
                ethertype = be16(frame, off)?;
            }
            if ethertype != ETHERTYPE_IPV4 {
                return None;
            }
            frame.get(off + 2..)?
        }
        LINKTYPE_RAW | LINKTYPE_IPV4 => frame,
        LINKTYPE_LINUX_SLL => {
            if be16(frame, 14)? != ETHERTYPE_IPV4 {
                return None;
            }
            frame.get(16..)?
        }
        LINKTYPE_LINUX_SLL2 => {
            if be16(frame, 0)? != ETHERTYPE_IPV4 {
                return None;
            }
            frame.get(20..)?
        }
        _ => return None,
    };
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[0] & 0x0f < 5 {
        return None;
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    Some((src, dst))
}

/// Split a libpcap file into one file per address: every packet whose IPv4 source or destination
/// is that address. Each output keeps the input's global header (byte order, timestamp
/// resolution, linktype, snaplen) and its records byte for byte; an address without packets
/// gets a header-only file.
pub fn split_by_ipv4(
    bytes: &[u8],
    addrs: &[Ipv4Addr],
) -> Result<HashMap<Ipv4Addr, Vec<u8>>, String> {
    let (header, records) = parse_records(bytes)?;
    let head = &bytes[..GLOBAL_HEADER_LEN];
    let mut out: HashMap<Ipv4Addr, Vec<u8>> = addrs.iter().map(|a| (*a, head.to_vec())).collect();
    for r in &records {
        let Some((src, dst)) = ipv4_endpoints(header.linktype, r.packet.data) else {
            continue;
        };
        let raw = &bytes[r.start..r.end];
        if let Some(f) = out.get_mut(&src) {
            f.extend_from_slice(raw);
        }
        if dst != src {
            if let Some(f) = out.get_mut(&dst) {
                f.extend_from_slice(raw);
            }
        }
    }
    Ok(out)
}

/// An Ethernet/IPv4/UDP frame with a correct IPv4 header checksum and UDP checksum 0 ("none",
/// legal for IPv4), with zero MACs as Linux loopback captures show them.
#[cfg(test)]
pub fn udp_frame(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    udp_frame_with_id(src, dst, sport, dport, 0, payload)
}

/// A complete valid pcap file of `count` generated UDP packets alternating between src -> dst
/// and dst -> src, 1 ms apart from `start_micros`. Used where a real capture is impossible.
pub fn synthetic(src: Ipv4Addr, dst: Ipv4Addr, count: u32, start_micros: u64) -> Vec<u8> {
    let mut out = global_header(LINKTYPE_ETHERNET, DEFAULT_SNAPLEN).to_vec();
    for i in 0..count {
        let payload = format!("tc synthetic packet {i}");
        let (s, d, sp, dp) = if i % 2 == 0 {
            (src, dst, 40000, 9)
        } else {
            (dst, src, 9, 40000)
        };
        let frame = udp_frame_with_id(s, d, sp, dp, i as u16, payload.as_bytes());
        write_record(&mut out, start_micros + u64::from(i) * 1000, &frame);
    }
    out
}

/// Append generated src -> dst records of about 1400 bytes to a complete pcap file until it is at
/// least `target` bytes. The records follow the file's own byte order, timestamp resolution,
/// snaplen and linktype (EN10MB, RAW, IPV4, LINUX_SLL, LINUX_SLL2), start 100 µs after its last
/// record and are 100 µs apart. An empty `file` first gets an Ethernet header; a file that is not
/// a libpcap capture is treated as if it had one (the caller promised a complete pcap file).
pub fn pad_to(file: &mut Vec<u8>, target: u64, src: Ipv4Addr, dst: Ipv4Addr) {
    if file.is_empty() {
        file.extend_from_slice(&global_header(LINKTYPE_ETHERNET, DEFAULT_SNAPLEN));
    }
    if file.len() as u64 >= target {
        return;
    }
    let header = parse_global_header(file).unwrap_or(GlobalHeader {
        layout: Layout::NATIVE_OUT,
        linktype: LINKTYPE_ETHERNET,
        snaplen: DEFAULT_SNAPLEN,
    });
    let last_ts = last_timestamp(file, &header).unwrap_or(0);

    // One frame built once; per record only the IP id and header checksum change, which keeps
    // a 200 MB pad to a few hundred ms.
    let payload = vec![0x5a; PAD_FRAME_LEN - 14 - 20 - 8];
    let eth = udp_frame_with_id(src, dst, 40000, 9, 0, &payload);
    let (mut frame, ip_off) = match header.linktype {
        LINKTYPE_RAW | LINKTYPE_IPV4 => (eth[14..].to_vec(), 0),
        LINKTYPE_LINUX_SLL => {
            let mut f = Vec::with_capacity(eth.len() + 2);
            f.extend_from_slice(&0u16.to_be_bytes()); // packet to us
            f.extend_from_slice(&772u16.to_be_bytes()); // ARPHRD_LOOPBACK
            f.extend_from_slice(&[0u8; 10]); // address length 0 + 8 address bytes
            f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
            f.extend_from_slice(&eth[14..]);
            (f, 16)
        }
        LINKTYPE_LINUX_SLL2 => {
            let mut f = Vec::with_capacity(eth.len() + 6);
            f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
            f.extend_from_slice(&[0u8; 2]); // reserved
            f.extend_from_slice(&1u32.to_be_bytes()); // ifindex of lo
            f.extend_from_slice(&772u16.to_be_bytes()); // ARPHRD_LOOPBACK
            f.extend_from_slice(&[0u8; 10]); // packet type, address length, 8 address bytes
            f.extend_from_slice(&eth[14..]);
            (f, 20)
        }
        _ => (eth, 14),
    };
    let orig_len = frame.len() as u32;
    let incl_len = if header.snaplen > 0 {
        orig_len.min(header.snaplen)
    } else {
        orig_len
    };
    let per_record = (RECORD_HEADER_LEN + incl_len as usize) as u64;
    let missing = target - file.len() as u64;
    let n = missing.div_ceil(per_record);
    file.reserve((n * per_record) as usize);
    for i in 0..n {
        let id = (i as u16).wrapping_add(1);
        frame[ip_off + 4..ip_off + 6].copy_from_slice(&id.to_be_bytes());
        frame[ip_off + 10..ip_off + 12].copy_from_slice(&[0, 0]);
        let sum = ipv4_checksum(&frame[ip_off..ip_off + 20]);
        frame[ip_off + 10..ip_off + 12].copy_from_slice(&sum.to_be_bytes());
        header
            .layout
            .push_header(file, last_ts + (i + 1) * 100, incl_len, orig_len);
        file.extend_from_slice(&frame[..incl_len as usize]);
    }
}

/// How a file encodes its numbers and timestamps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    big_endian: bool,
    nanos: bool,
}

impl Layout {
    const NATIVE_OUT: Layout = Layout {
        big_endian: false,
        nanos: false,
    };

    fn u32_at(self, b: &[u8], off: usize) -> u32 {
        let a: [u8; 4] = b[off..off + 4]
            .try_into()
            .expect("caller checked the length");
        if self.big_endian {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    }

    fn put_u32(self, out: &mut Vec<u8>, v: u32) {
        if self.big_endian {
            out.extend_from_slice(&v.to_be_bytes());
        } else {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn push_header(self, out: &mut Vec<u8>, ts_micros: u64, incl_len: u32, orig_len: u32) {
        let secs = ts_micros / 1_000_000;
        let frac = ts_micros % 1_000_000;
        let frac = if self.nanos { frac * 1000 } else { frac };
        self.put_u32(out, secs as u32);
        self.put_u32(out, frac as u32);
        self.put_u32(out, incl_len);
        self.put_u32(out, orig_len);
    }
}

struct GlobalHeader {
    layout: Layout,
    linktype: u32,
    snaplen: u32,
}

struct Record<'a> {
    /// Byte range of the whole record (header and data) in the file.
    start: usize,
    end: usize,
    packet: Packet<'a>,
}

fn parse_global_header(bytes: &[u8]) -> Result<GlobalHeader, String> {
    if bytes.len() < GLOBAL_HEADER_LEN {
        return match crate::sftp::capture_format(bytes) {
            Some(_) => Err(format!(
                "truncated pcap global header: {} of {GLOBAL_HEADER_LEN} bytes",
                bytes.len()
            )),
            None => Err(format!("not a pcap file: only {} bytes", bytes.len())),
        };
    }
    let magic: [u8; 4] = bytes[..4].try_into().expect("length checked");
    let layout = match (u32::from_le_bytes(magic), u32::from_be_bytes(magic)) {
        (MAGIC_MICROS, _) => Layout {
            big_endian: false,
            nanos: false,
        },
        (MAGIC_NANOS, _) => Layout {
            big_endian: false,
            nanos: true,
        },
        (_, MAGIC_MICROS) => Layout {
            big_endian: true,
            nanos: false,
        },
        (_, MAGIC_NANOS) => Layout {
            big_endian: true,
            nanos: true,
        },
        (PCAPNG_SHB, _) => {
            return Err("the file is pcapng, not libpcap: convert it with `editcap -F pcap`".into())
        }
        _ => {
            return Err(format!(
                "not a pcap file: magic number {:02x}{:02x}{:02x}{:02x}",
                magic[0], magic[1], magic[2], magic[3]
            ))
        }
    };
    // The upper bits of the link-type field carry FCS information, not the type.
    let linktype = layout.u32_at(bytes, 20) & 0xffff;
    let snaplen = layout.u32_at(bytes, 16);
    Ok(GlobalHeader {
        layout,
        linktype,
        snaplen,
    })
}

fn parse_records(bytes: &[u8]) -> Result<(GlobalHeader, Vec<Record<'_>>), String> {
    let header = parse_global_header(bytes)?;
    let l = header.layout;
    let mut records = Vec::new();
    let mut off = GLOBAL_HEADER_LEN;
    while off < bytes.len() {
        let n = records.len() + 1;
        if bytes.len() - off < RECORD_HEADER_LEN {
            return Err(format!(
                "truncated pcap: record {n} at byte {off} has {} of {RECORD_HEADER_LEN} header bytes",
                bytes.len() - off
            ));
        }
        let secs = u64::from(l.u32_at(bytes, off));
        let frac = u64::from(l.u32_at(bytes, off + 4));
        let incl = l.u32_at(bytes, off + 8);
        let orig_len = l.u32_at(bytes, off + 12);
        if incl > MAX_RECORD_LEN {
            return Err(format!(
                "corrupt pcap: record {n} at byte {off} claims {incl} bytes (more than libpcap allows)"
            ));
        }
        let data_start = off + RECORD_HEADER_LEN;
        let end = data_start + incl as usize;
        if end > bytes.len() {
            return Err(format!(
                "truncated pcap: record {n} at byte {off} claims {incl} bytes but only {} remain",
                bytes.len() - data_start
            ));
        }
        let ts_micros = secs * 1_000_000 + if l.nanos { frac / 1000 } else { frac };
        records.push(Record {
            start: off,
            end,
            packet: Packet {
                ts_micros,
                data: &bytes[data_start..end],
                orig_len,
            },
        });
        off = end;
    }
    Ok((header, records))
}

/// A device clock for a capture the host made: every record's time `t` (host clock) becomes
/// `t + offset_ns + (t - ref_ns) * drift_ppm / 10^6`, as a CPE whose clock is off by
/// `offset_ns` at `ref_ns` and runs `drift_ppm` fast would have stamped it.
pub fn shift_clock(
    bytes: &[u8],
    offset_ns: i64,
    drift_ppm: f64,
    ref_ns: i64,
) -> Result<Vec<u8>, String> {
    let (header, records) = parse_records(bytes)?;
    let l = header.layout;
    let unit: i64 = if l.nanos { 1 } else { 1000 };
    let mut out = bytes.to_vec();
    for r in &records {
        let t = i64::from(l.u32_at(bytes, r.start)) * 1_000_000_000
            + i64::from(l.u32_at(bytes, r.start + 4)) * unit;
        let drift = ((t - ref_ns) as f64 * drift_ppm / 1e6) as i64;
        let shifted = t + offset_ns + drift;
        let secs = u32::try_from(shifted.div_euclid(1_000_000_000))
            .map_err(|_| format!("a shifted time is outside pcap's range: {shifted} ns"))?;
        let frac = (shifted.rem_euclid(1_000_000_000) / unit) as u32;
        let mut head = Vec::with_capacity(8);
        l.put_u32(&mut head, secs);
        l.put_u32(&mut head, frac);
        out[r.start..r.start + 8].copy_from_slice(&head);
    }
    Ok(out)
}

/// The timestamp of the last complete record, walking headers only (no per-packet work).
fn last_timestamp(bytes: &[u8], header: &GlobalHeader) -> Option<u64> {
    let l = header.layout;
    let mut off = GLOBAL_HEADER_LEN;
    let mut last = None;
    while bytes.len().saturating_sub(off) >= RECORD_HEADER_LEN {
        let incl = l.u32_at(bytes, off + 8) as usize;
        let end = off + RECORD_HEADER_LEN + incl;
        if end > bytes.len() {
            break;
        }
        let secs = u64::from(l.u32_at(bytes, off));
        let frac = u64::from(l.u32_at(bytes, off + 4));
        last = Some(secs * 1_000_000 + if l.nanos { frac / 1000 } else { frac });
        off = end;
    }
    last
}

fn be16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn udp_frame_with_id(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    ip_id: u16,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&[0u8; 12]);
    f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&(ip_len as u16).to_be_bytes());
    f.extend_from_slice(&ip_id.to_be_bytes());
    f.extend_from_slice(&0x4000u16.to_be_bytes()); // DF, as Linux sets on UDP
    f.extend_from_slice(&[64, 17, 0, 0]); // TTL, protocol UDP, checksum placeholder
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    let sum = ipv4_checksum(&f[14..34]);
    f[24..26].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(127, 0, 1, 1);
    const B: Ipv4Addr = Ipv4Addr::new(127, 0, 1, 2);
    const C: Ipv4Addr = Ipv4Addr::new(127, 0, 1, 3);
    const LO: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

    /// Re-encode a little-endian µs file in another layout, to test the other three readers
    /// against files whose content is known.
    fn reencode(le_micros: &[u8], layout: Layout) -> Vec<u8> {
        let (h, recs) = parse_records(le_micros).unwrap();
        let mut out = Vec::new();
        let magic = if layout.nanos {
            MAGIC_NANOS
        } else {
            MAGIC_MICROS
        };
        layout.put_u32(&mut out, magic);
        let ver = if layout.big_endian {
            [0, 2, 0, 4]
        } else {
            [2, 0, 4, 0]
        };
        out.extend_from_slice(&ver);
        out.extend_from_slice(&[0; 8]);
        layout.put_u32(&mut out, h.snaplen);
        layout.put_u32(&mut out, h.linktype);
        for r in recs {
            let len = r.packet.data.len() as u32;
            layout.push_header(&mut out, r.packet.ts_micros, len, r.packet.orig_len);
            out.extend_from_slice(r.packet.data);
        }
        out
    }

    #[test]
    fn write_parse_round_trip() {
        let mut f = global_header(LINKTYPE_ETHERNET, 65535).to_vec();
        let f1 = udp_frame(A, B, 1, 2, b"one");
        let f2 = udp_frame(B, A, 2, 1, b"two!");
        write_record(&mut f, 1_700_000_000_123_456, &f1);
        write_record(&mut f, 1_700_000_001_000_001, &f2);
        assert_eq!(f.len(), 24 + 2 * 16 + f1.len() + f2.len());
        let cap = parse(&f).unwrap();
        assert_eq!(cap.linktype, LINKTYPE_ETHERNET);
        assert_eq!(cap.packets.len(), 2);
        assert_eq!(cap.packets[0].ts_micros, 1_700_000_000_123_456);
        assert_eq!(cap.packets[0].data, &f1[..]);
        assert_eq!(cap.packets[0].orig_len, f1.len() as u32);
        assert_eq!(cap.packets[1].ts_micros, 1_700_000_001_000_001);
        assert_eq!(cap.packets[1].data, &f2[..]);
        assert_eq!(
            parse(&global_header(LINKTYPE_RAW, 100))
                .unwrap()
                .packets
                .len(),
            0
        );
    }

    #[test]
    fn all_four_layouts_parse_the_same() {
        let base = synthetic(A, B, 5, 1_000_000_123_456);
        let want: Vec<(u64, Vec<u8>)> = parse(&base)
            .unwrap()
            .packets
            .iter()
            .map(|p| (p.ts_micros, p.data.to_vec()))
            .collect();
        for big_endian in [false, true] {
            for nanos in [false, true] {
                let layout = Layout { big_endian, nanos };
                let file = reencode(&base, layout);
                assert_eq!(crate::sftp::capture_format(&file), Some("pcap"));
                let cap = parse(&file).unwrap();
                assert_eq!(cap.linktype, LINKTYPE_ETHERNET, "{layout:?}");
                let got: Vec<(u64, Vec<u8>)> = cap
                    .packets
                    .iter()
                    .map(|p| (p.ts_micros, p.data.to_vec()))
                    .collect();
                assert_eq!(got, want, "{layout:?}");
            }
        }
    }

    #[test]
    fn nanosecond_timestamps_truncate_to_micros() {
        let mut f = reencode(
            &global_header(LINKTYPE_RAW, 1500),
            Layout {
                big_endian: false,
                nanos: true,
            },
        );
        // 5 s + 123_456_789 ns, written by hand so the ns digits below µs are not zero.
        f.extend_from_slice(&5u32.to_le_bytes());
        f.extend_from_slice(&123_456_789u32.to_le_bytes());
        f.extend_from_slice(&2u32.to_le_bytes());
        f.extend_from_slice(&60u32.to_le_bytes());
        f.extend_from_slice(&[0x45, 0]);
        let cap = parse(&f).unwrap();
        assert_eq!(cap.packets[0].ts_micros, 5_123_456);
        assert_eq!(cap.packets[0].orig_len, 60);
        assert_eq!(cap.linktype, LINKTYPE_RAW);
    }

    #[test]
    fn parse_errors_are_clear() {
        let good = synthetic(A, B, 2, 0);
        let first_len = 16 + parse(&good).unwrap().packets[0].data.len();
        let mut huge = good[..24].to_vec();
        huge.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "not a pcap file: only 0 bytes"),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                "not a pcap file: magic number 47455420",
            ),
            (
                good[..10].to_vec(),
                "truncated pcap global header: 10 of 24 bytes",
            ),
            (
                vec![
                    0x0a, 0x0d, 0x0d, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                    0, 0,
                ],
                "pcapng",
            ),
            (
                good[..24 + 7].to_vec(),
                "truncated pcap: record 1 at byte 24 has 7 of 16 header bytes",
            ),
            (
                good[..24 + 20].to_vec(),
                "truncated pcap: record 1 at byte 24 claims",
            ),
            (
                good[..good.len() - 1].to_vec(),
                "truncated pcap: record 2 at byte ",
            ),
            (
                huge,
                "corrupt pcap: record 1 at byte 24 claims 2147483647 bytes",
            ),
        ];
        for (bytes, want) in cases {
            let err = parse(&bytes)
                .err()
                .unwrap_or_else(|| panic!("{want}: parsed"));
            assert!(err.contains(want), "got {err:?}, want {want:?}");
        }
        let err = parse(&good[..good.len() - 1]).err().unwrap();
        assert!(err.contains(&format!("byte {}", 24 + first_len)), "{err}");
        assert!(split_by_ipv4(&good[..30], &[A]).is_err());
    }

    #[test]
    fn udp_frame_is_well_formed() {
        let f = udp_frame(A, B, 5060, 9, b"hello");
        assert_eq!(f.len(), 14 + 20 + 8 + 5);
        assert_eq!(&f[..12], &[0; 12]);
        assert_eq!(be16(&f, 12), Some(0x0800));
        assert_eq!(
            ipv4_checksum(&f[14..34]),
            0,
            "a correct header sums to 0xffff"
        );
        assert_eq!(be16(&f, 16), Some(20 + 8 + 5));
        assert_eq!(f[23], 17);
        assert_eq!(be16(&f, 34), Some(5060));
        assert_eq!(be16(&f, 36), Some(9));
        assert_eq!(be16(&f, 38), Some(13));
        assert_eq!(&f[42..], b"hello");
        // RFC 1071 example header, checksum b861.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_checksum(&h), 0xb861);
    }

    #[test]
    fn ipv4_endpoints_table() {
        let eth = udp_frame(A, B, 1, 2, b"x");
        let ip = eth[14..].to_vec();
        let mut vlan = eth[..12].to_vec();
        vlan.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
        vlan.extend_from_slice(&eth[12..]);
        let mut qinq = eth[..12].to_vec();
        qinq.extend_from_slice(&[0x88, 0xa8, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x64]);
        qinq.extend_from_slice(&eth[12..]);
        let mut sll = vec![0, 0, 0x03, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(&ip);
        let mut sll2 = vec![
            0x08, 0x00, 0, 0, 0, 0, 0, 1, 0x03, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        sll2.extend_from_slice(&ip);
        let mut arp = eth.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let mut ipv6 = ip.clone();
        ipv6[0] = 0x60;
        let mut sll_v6 = sll.clone();
        sll_v6[14..16].copy_from_slice(&[0x86, 0xdd]);
        let some = Some((A, B));
        type Ends = Option<(Ipv4Addr, Ipv4Addr)>;
        let cases: Vec<(u32, &[u8], Ends)> = vec![
            (LINKTYPE_ETHERNET, &eth, some),
            (LINKTYPE_ETHERNET, &vlan, some),
            (LINKTYPE_ETHERNET, &qinq, some),
            (LINKTYPE_ETHERNET, &arp, None),
            (LINKTYPE_ETHERNET, &eth[..30], None),
            (LINKTYPE_ETHERNET, &[], None),
            (LINKTYPE_RAW, &ip, some),
            (LINKTYPE_IPV4, &ip, some),
            (LINKTYPE_RAW, &ipv6, None),
            (LINKTYPE_LINUX_SLL, &sll, some),
            (LINKTYPE_LINUX_SLL, &sll_v6, None),
            (LINKTYPE_LINUX_SLL2, &sll2, some),
            (LINKTYPE_LINUX_SLL2, &sll2[..25], None),
            (LINKTYPE_LINUX_SLL, &eth, None),
            (105, &eth, None),
        ];
        for (i, (lt, frame, want)) in cases.into_iter().enumerate() {
            assert_eq!(ipv4_endpoints(lt, frame), want, "case {i} linktype {lt}");
        }
    }

    #[test]
    fn split_by_ipv4_keeps_each_address_own_packets() {
        let mut f = global_header(LINKTYPE_ETHERNET, 65535).to_vec();
        let pkts = [(LO, A), (A, LO), (LO, B), (B, A), (LO, C), (C, C)];
        for (i, (s, d)) in pkts.iter().enumerate() {
            write_record(&mut f, i as u64, &udp_frame(*s, *d, 1, 9, &[i as u8]));
        }
        let mut arp = udp_frame(A, B, 1, 9, b"");
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        write_record(&mut f, 99, &arp);
        let none = Ipv4Addr::new(127, 0, 1, 99);
        let out = split_by_ipv4(&f, &[A, B, C, none]).unwrap();
        assert_eq!(out.len(), 4);
        let ids = |a: Ipv4Addr| -> Vec<u8> {
            let file = &out[&a];
            assert_eq!(&file[..24], &f[..24]);
            let cap = parse(file).unwrap();
            for p in &cap.packets {
                let (s, d) = ipv4_endpoints(cap.linktype, p.data).unwrap();
                assert!(s == a || d == a);
            }
            cap.packets
                .iter()
                .map(|p| *p.data.last().unwrap())
                .collect()
        };
        assert_eq!(ids(A), vec![0, 1, 3]);
        assert_eq!(ids(B), vec![2, 3]);
        assert_eq!(ids(C), vec![4, 5], "a packet from C to C is written once");
        assert_eq!(out[&none], f[..24].to_vec());
        assert!(split_by_ipv4(&f, &[]).unwrap().is_empty());
    }

    #[test]
    fn split_copies_nanosecond_big_endian_records_verbatim() {
        let base = synthetic(A, B, 4, 7);
        let be_ns = reencode(
            &base,
            Layout {
                big_endian: true,
                nanos: true,
            },
        );
        let out = split_by_ipv4(&be_ns, &[A, C]).unwrap();
        assert_eq!(out[&A], be_ns, "every packet involves A");
        assert_eq!(out[&C], be_ns[..24].to_vec());
    }

    #[test]
    fn synthetic_is_valid_and_alternates() {
        let f = synthetic(A, B, 10, 1_000_000);
        let cap = parse(&f).unwrap();
        assert_eq!(cap.packets.len(), 10);
        for (i, p) in cap.packets.iter().enumerate() {
            assert_eq!(p.ts_micros, 1_000_000 + i as u64 * 1000);
            let want = if i % 2 == 0 { (A, B) } else { (B, A) };
            assert_eq!(ipv4_endpoints(cap.linktype, p.data), Some(want));
            assert_eq!(ipv4_checksum(&p.data[14..34]), 0);
        }
        assert_eq!(parse(&synthetic(A, B, 0, 0)).unwrap().packets.len(), 0);
    }

    #[test]
    fn pad_to_reaches_target_and_stays_parseable() {
        let mut f = synthetic(A, B, 3, 5_000_000);
        let before = f.len();
        pad_to(&mut f, before as u64 - 1, A, B);
        assert_eq!(f.len(), before, "already large enough");
        pad_to(&mut f, 100_000, A, B);
        assert!(
            f.len() >= 100_000 && f.len() < 100_000 + 1416 + 16,
            "{}",
            f.len()
        );
        let cap = parse(&f).unwrap();
        assert!(cap.packets.len() > 70);
        let last_orig = cap.packets[2].ts_micros;
        for (i, p) in cap.packets[3..].iter().enumerate() {
            assert_eq!(p.data.len(), PAD_FRAME_LEN);
            assert_eq!(p.ts_micros, last_orig + (i as u64 + 1) * 100);
            assert_eq!(ipv4_endpoints(cap.linktype, p.data), Some((A, B)));
            assert_eq!(ipv4_checksum(&p.data[14..34]), 0);
        }
        let mut empty = Vec::new();
        pad_to(&mut empty, 5000, A, B);
        assert!(empty.len() >= 5000);
        assert_eq!(parse(&empty).unwrap().linktype, LINKTYPE_ETHERNET);
    }

    #[test]
    fn pad_to_follows_the_file_layout_linktype_and_snaplen() {
        for lt in [LINKTYPE_RAW, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2] {
            let mut f = global_header(lt, 65535).to_vec();
            pad_to(&mut f, 10_000, A, B);
            let cap = parse(&f).unwrap();
            for p in &cap.packets {
                assert_eq!(ipv4_endpoints(lt, p.data), Some((A, B)), "linktype {lt}");
            }
        }
        let mut be_ns = reencode(
            &synthetic(A, B, 1, 3_000_000),
            Layout {
                big_endian: true,
                nanos: true,
            },
        );
        pad_to(&mut be_ns, 10_000, A, B);
        let cap = parse(&be_ns).unwrap();
        assert_eq!(cap.packets[1].ts_micros, 3_000_100);
        let mut small = global_header(LINKTYPE_ETHERNET, 96).to_vec();
        pad_to(&mut small, 1000, A, B);
        let cap = parse(&small).unwrap();
        assert!(cap
            .packets
            .iter()
            .all(|p| p.data.len() == 96 && p.orig_len == PAD_FRAME_LEN as u32));
    }

    #[test]
    fn pad_to_200_mb() {
        let mut f = synthetic(A, B, 1, 0);
        pad_to(&mut f, 200_000_000, A, B);
        assert!(f.len() >= 200_000_000);
        assert!(parse(&f).is_ok());
    }

    #[test]
    #[ignore = "needs capinfos (wireshark-common): cargo test -- --include-ignored"]
    fn capinfos_accepts_synthetic() {
        let capinfos = ["/usr/bin/capinfos", "/usr/local/bin/capinfos"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("capinfos (wireshark-common) is not installed");
        let dir = tempfile::tempdir().unwrap();
        let mut padded = synthetic(A, B, 4, 1_700_000_000_000_000);
        pad_to(&mut padded, 50_000, A, B);
        let padded_count = parse(&padded).unwrap().packets.len();
        for (name, bytes, count) in [
            ("s.pcap", synthetic(A, B, 25, 1_700_000_000_000_000), 25),
            ("p.pcap", padded, padded_count),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let out = std::process::Command::new(capinfos)
                .args(["-c", "-M", "-T"])
                .arg(&path)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "capinfos {name}: {}{stdout}",
                String::from_utf8_lossy(&out.stderr)
            );
            let n: usize = stdout
                .lines()
                .nth(1)
                .and_then(|l| l.rsplit('\t').next())
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            assert_eq!(n, count, "{stdout}");
        }
    }

    #[test]
    fn a_device_clock_moves_every_record() {
        let src = Ipv4Addr::new(10, 0, 0, 1);
        let dst = Ipv4Addr::new(10, 0, 0, 2);
        let file = synthetic(src, dst, 3, 1_000_000_000_000);
        let before = parse(&file).unwrap();
        let t0: Vec<i64> = before.packets.iter().map(|p| p.ts_micros as i64).collect();
        let ref_ns = t0[0] * 1000;
        // (offset, drift ppm, the shift in µs of a record 10.001 s after ref_ns, floored to µs)
        for (offset, ppm, later) in [
            (3_500_000_000i64, 0.0, 3_500_000i64),
            (-250_000_000, 0.0, -250_000),
            (0, 100.0, 1_000),
            (1_000_000_000, -50.0, 999_499),
        ] {
            let mut f = file.clone();
            // A record 10 s later than the first, to see the drift.
            let l = parse_global_header(&f).unwrap().layout;
            let at = GLOBAL_HEADER_LEN + RECORD_HEADER_LEN + before.packets[0].data.len();
            let secs = l.u32_at(&f, at) + 10;
            let mut head = Vec::new();
            l.put_u32(&mut head, secs);
            f[at..at + 4].copy_from_slice(&head);
            let out = shift_clock(&f, offset, ppm, ref_ns).unwrap();
            let got: Vec<i64> = parse(&out)
                .unwrap()
                .packets
                .iter()
                .map(|p| p.ts_micros as i64)
                .collect();
            assert_eq!(got[0] - t0[0], offset / 1000, "{offset} {ppm}");
            assert_eq!(got[1] - (t0[1] + 10_000_000), later, "{offset} {ppm}");
            assert_eq!(out.len(), f.len());
            let data = |b: &[u8]| -> Vec<Vec<u8>> {
                parse(b)
                    .unwrap()
                    .packets
                    .iter()
                    .map(|p| p.data.to_vec())
                    .collect()
            };
            assert_eq!(data(&out), data(&f), "only the times change");
        }
        assert!(shift_clock(&file, -2_000_000_000_000_000_000, 0.0, 0).is_err());
        assert!(shift_clock(b"junk", 0, 0.0, 0).is_err());
    }
}
