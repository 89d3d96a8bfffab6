//! Capture files for `tc analyze`, streamed through a bounded buffer (pcap-parser's circular
//! reader): a file of any size costs the same memory. Classic pcap (either byte order, µs or ns)
//! and pcapng (any number of sections and interfaces, each with its own link type, time
//! resolution and offset). A frame's timestamp is nanoseconds since the epoch in the file's
//! own clock.

use std::fs::File;
use std::path::{Path, PathBuf};

use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{PcapBlockOwned, PcapError};

/// Read size: large reads keep the system-call count per gigabyte low; two of these (one per
/// side) are most of what `tc analyze` holds, whatever the file size. A record larger than this
/// is garbage, not a packet (libpcap's own limit is 256 KiB of snaplen): pcap-parser refuses it
/// (BufferTooSmall), and the file is unreadable.
const BUFFER: usize = 4 << 20;

/// One captured frame, borrowed from the reader's buffer until the next call.
pub struct Frame<'a> {
    pub ts_ns: i64,
    pub linktype: u32,
    pub data: &'a [u8],
    pub orig_len: u32,
}

/// What was read of one file, for `analyze.input`.
#[derive(Debug, Clone, Default)]
pub struct FileStats {
    pub path: PathBuf,
    /// `pcap` or `pcapng`
    pub format: &'static str,
    pub link_types: Vec<u32>,
    /// Time resolutions seen, units per second (1e6, 1e9, ...).
    pub resolutions: Vec<u64>,
    pub packets: u64,
    pub first_ns: Option<i64>,
    pub last_ns: Option<i64>,
    /// The file ended inside a record (a capture cut by a kill or a full disk).
    pub truncated: bool,
    /// The largest snap length its headers declare (0: none declared).
    pub snaplen: u32,
    /// Frames shorter than they were on the wire (cut by the snap length).
    pub snapped: u64,
    /// Packets the capture itself dropped, by its pcapng statistics (the last `isb_ifdrop` plus
    /// `isb_osdrop` of each interface); None when the file has none (classic pcap has none).
    pub capture_drops: Option<u64>,
    /// Records skipped for a timestamp that is not a time (before 1970, beyond 2116, a
    /// fraction of a second larger than a second).
    pub bad_time: u64,
}

#[derive(Clone, Copy)]
struct Iface {
    linktype: u32,
    /// Units per second.
    resolution: u64,
    offset_s: i64,
}

/// A streaming reader of one file.
pub struct Reader {
    inner: Box<dyn PcapReaderIterator + Send>,
    /// Bytes of the block last returned, consumed at the next call.
    pending: usize,
    st: State,
}

/// What the blocks read so far say about the ones to come.
struct State {
    /// Classic pcap: the file's link type and resolution; pcapng: the current section's interfaces.
    legacy: Option<Iface>,
    ifaces: Vec<Iface>,
    current: (i64, u32, u32, std::ops::Range<usize>),
    /// Per interface of the current section, its drops by the last statistics block.
    drops: Vec<Option<u64>>,
    /// Drops of the sections before.
    drops_before: Option<u64>,
    stats: FileStats,
}

/// Timestamps beyond this (2116) are not times: every difference of two stays far from
/// overflowing.
pub const MAX_TS: i64 = 1 << 62;

/// A classic pcap record's time, or None for one that is not a time.
fn legacy_ns(sec: u32, frac: u32, resolution: u64) -> Option<i64> {
    if u64::from(frac) >= resolution {
        return None;
    }
    let ns =
        i64::from(sec) * 1_000_000_000 + (u64::from(frac) * (1_000_000_000 / resolution)) as i64;
    (ns < MAX_TS).then_some(ns)
}

/// A pcapng packet's time from its units, resolution and interface offset, or None.
fn ng_ns(units: u64, resolution: u64, offset_s: i64) -> Option<i64> {
    let ns = units_to_ns(units, resolution)?.checked_add(offset_s.checked_mul(1_000_000_000)?)?;
    (0..MAX_TS).contains(&ns).then_some(ns)
}

/// The error in words; never the bytes a parse error carries (they can be the whole buffer).
fn describe(e: &PcapError<&[u8]>) -> String {
    match e {
        PcapError::HeaderNotRecognized => "not a pcap or pcapng file".into(),
        PcapError::ReadError => "read error".into(),
        PcapError::Eof => "empty file".into(),
        PcapError::BufferTooSmall => format!(
            "a record longer than any capture has (over {} MiB: corrupt)",
            BUFFER >> 20
        ),
        PcapError::UnexpectedEof | PcapError::Incomplete(_) => {
            "the file ends inside a record".into()
        }
        PcapError::NomError(_, kind) | PcapError::OwnedNomError(_, kind) => {
            format!("a malformed record ({kind:?})")
        }
    }
}

impl Reader {
    pub fn open(path: &Path) -> Result<Reader, String> {
        let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let inner = pcap_parser::create_reader(BUFFER, f)
            .map_err(|e| format!("{}: {}", path.display(), describe(&e)))?;
        Ok(Reader {
            inner,
            pending: 0,
            st: State {
                legacy: None,
                ifaces: Vec::new(),
                current: (0, 0, 0, 0..0),
                drops: Vec::new(),
                drops_before: None,
                stats: FileStats {
                    path: path.to_path_buf(),
                    ..FileStats::default()
                },
            },
        })
    }

    pub fn into_stats(mut self) -> FileStats {
        self.st.stats.capture_drops = self.st.all_drops();
        self.st.stats
    }

    /// Moves to the next frame; false at the end of the file.
    pub fn advance(&mut self) -> Result<bool, String> {
        loop {
            if self.pending > 0 {
                // Without the shift: `consume` moves the rest of the buffer to its start each
                // time half of it was read, copying every byte once more; `refill` moves only
                // the partial record left at the end.
                self.inner.consume_noshift(self.pending);
                self.pending = 0;
            }
            // `next` parses in place: the buffer does not move until `consume` or `refill`.
            let base = self.inner.data().as_ptr() as usize;
            match self.inner.next() {
                Ok((len, block)) => {
                    self.pending = len;
                    if let Some(frame) = self.st.block(block, base) {
                        let ts = frame.0;
                        let stats = &mut self.st.stats;
                        if ts == BAD_TIME {
                            stats.bad_time += 1;
                            continue;
                        }
                        stats.snapped += u64::from((frame.3.len() as u64) < u64::from(frame.2));
                        self.st.current = frame;
                        stats.packets += 1;
                        stats.first_ns.get_or_insert(ts);
                        stats.last_ns = Some(ts);
                        return Ok(true);
                    }
                }
                Err(PcapError::Eof) => return Ok(false),
                // The reader's own word for a record cut short at the end of the file.
                Err(PcapError::UnexpectedEof) => {
                    self.st.stats.truncated = true;
                    return Ok(false);
                }
                Err(PcapError::Incomplete(_)) => {
                    if self.inner.reader_exhausted() {
                        // Records cut short at the end: what was read stays valid.
                        self.st.stats.truncated = !self.inner.data().is_empty();
                        return Ok(false);
                    }
                    // The parser says Incomplete only when the rest of the record fits in the
                    // buffer (else BufferTooSmall, an error below): refilling always helps.
                    self.inner.refill().map_err(|e| {
                        format!("{}: {}", self.st.stats.path.display(), describe(&e))
                    })?;
                }
                Err(e) => {
                    return Err(format!(
                        "{}: {} after {} packets",
                        self.st.stats.path.display(),
                        describe(&e),
                        self.st.stats.packets
                    ))
                }
            }
        }
    }

    /// The current frame (after `advance` returned true).
    pub fn frame(&self) -> Frame<'_> {
        let (ts_ns, linktype, orig_len, range) = self.st.current.clone();
        Frame {
            ts_ns,
            linktype,
            data: &self.inner.data()[range],
            orig_len,
        }
    }
}

/// The time of a record whose timestamp is not a time: the record is skipped, counted.
const BAD_TIME: i64 = i64::MIN;

impl State {
    /// Drops by the statistics blocks of every section so far, None without any.
    fn all_drops(&self) -> Option<u64> {
        let now = self
            .drops
            .iter()
            .flatten()
            .copied()
            .reduce(u64::saturating_add);
        match (self.drops_before, now) {
            (Some(a), Some(b)) => Some(a.saturating_add(b)),
            (a, b) => a.or(b),
        }
    }

    /// A packet block as (time, link type, original length, range in the buffer); None for the
    /// blocks that describe (headers, interfaces) or that tc has no use for (statistics, names).
    fn block(
        &mut self,
        block: PcapBlockOwned<'_>,
        base: usize,
    ) -> Option<(i64, u32, u32, std::ops::Range<usize>)> {
        let range = |d: &[u8]| {
            let start = d.as_ptr() as usize - base;
            start..start + d.len()
        };
        match block {
            PcapBlockOwned::LegacyHeader(h) => {
                let linktype = h.network.0 as u32;
                let resolution = if h.is_nanosecond_precision() {
                    1_000_000_000
                } else {
                    1_000_000
                };
                self.stats.format = "pcap";
                self.stats.snaplen = self.stats.snaplen.max(h.snaplen);
                self.note_iface(linktype, resolution);
                self.legacy = Some(Iface {
                    linktype,
                    resolution,
                    offset_s: 0,
                });
                None
            }
            PcapBlockOwned::Legacy(b) => {
                let i = self.legacy?;
                let ts = legacy_ns(b.ts_sec, b.ts_usec, i.resolution).unwrap_or(BAD_TIME);
                let data = &b.data[..(b.caplen as usize).min(b.data.len())];
                Some((ts, i.linktype, b.origlen, range(data)))
            }
            PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                self.stats.format = "pcapng";
                self.drops_before = self.all_drops();
                self.drops.clear();
                self.ifaces.clear();
                None
            }
            PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                let linktype = idb.linktype.0 as u32;
                let resolution = idb.ts_resolution().unwrap_or(1_000_000);
                self.stats.snaplen = self.stats.snaplen.max(idb.snaplen);
                self.note_iface(linktype, resolution);
                self.ifaces.push(Iface {
                    linktype,
                    resolution,
                    offset_s: idb.ts_offset(),
                });
                None
            }
            PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                let i = *self.ifaces.get(epb.if_id as usize)?;
                let units = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                let ts = ng_ns(units, i.resolution, i.offset_s).unwrap_or(BAD_TIME);
                let data = &epb.data[..(epb.caplen as usize).min(epb.data.len())];
                Some((ts, i.linktype, epb.origlen, range(data)))
            }
            PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                // No timestamp of its own: it is taken to follow the previous packet.
                let i = *self.ifaces.first()?;
                Some((self.current.0, i.linktype, spb.origlen, range(spb.data)))
            }
            PcapBlockOwned::NG(Block::InterfaceStatistics(isb)) => {
                let n = |v: Option<Result<u64, _>>| v.and_then(Result::ok);
                let drops = match (n(isb.isb_ifdrop()), n(isb.isb_osdrop())) {
                    (None, None) => return None,
                    (a, b) => a.unwrap_or(0).saturating_add(b.unwrap_or(0)),
                };
                let i = isb.if_id as usize;
                if i < self.ifaces.len() {
                    self.drops.resize(self.ifaces.len(), None);
                    self.drops[i] = Some(drops);
                }
                None
            }
            PcapBlockOwned::NG(_) => None,
        }
    }

    fn note_iface(&mut self, linktype: u32, resolution: u64) {
        if !self.stats.link_types.contains(&linktype) {
            self.stats.link_types.push(linktype);
        }
        if !self.stats.resolutions.contains(&resolution) {
            self.stats.resolutions.push(resolution);
        }
    }
}

/// Nanoseconds of `units` at `resolution` units per second; None beyond an i64.
pub fn units_to_ns(units: u64, resolution: u64) -> Option<i64> {
    let ns = match resolution {
        1_000_000_000 => u128::from(units),
        1_000_000 => u128::from(units) * 1000,
        r => u128::from(units) * 1_000_000_000 / u128::from(r.max(1)),
    };
    i64::try_from(ns).ok()
}

/// Several files read as one capture, in the order given (a ring already put in time order).
pub struct Source {
    files: Vec<PathBuf>,
    next_file: usize,
    reader: Option<Reader>,
    pub done: Vec<FileStats>,
    /// Frames read so far: the index of the current frame is `frames - 1`.
    pub frames: u64,
}

impl Source {
    pub fn new(files: Vec<PathBuf>) -> Source {
        Source {
            files,
            next_file: 0,
            reader: None,
            done: Vec::new(),
            frames: 0,
        }
    }

    pub fn advance(&mut self) -> Result<bool, String> {
        loop {
            if let Some(r) = self.reader.as_mut() {
                if r.advance()? {
                    self.frames += 1;
                    return Ok(true);
                }
                let r = self.reader.take().expect("just used");
                self.done.push(r.into_stats());
            }
            let Some(path) = self.files.get(self.next_file) else {
                return Ok(false);
            };
            self.next_file += 1;
            self.reader = Some(Reader::open(path)?);
        }
    }

    pub fn frame(&self) -> Frame<'_> {
        self.reader.as_ref().expect("advance returned true").frame()
    }

    /// Records skipped so far for their timestamps, in every file.
    pub fn bad_time(&self) -> u64 {
        let now = self.reader.as_ref().map_or(0, |r| r.st.stats.bad_time);
        self.done.iter().map(|d| d.bad_time).sum::<u64>() + now
    }

    /// The index (in the order given) of the file the current frame is from.
    pub fn file_index(&self) -> usize {
        self.next_file.saturating_sub(1)
    }
}

/// The first packet's time of a file (None for a capture without packets), and the snap length
/// its headers up to there declare.
pub fn head(path: &Path) -> Result<(Option<i64>, u32), String> {
    let mut r = Reader::open(path)?;
    let t = if r.advance()? {
        Some(r.frame().ts_ns)
    } else {
        None
    };
    Ok((t, r.st.stats.snaplen))
}

/// The number a ring file carries in its name: `...-N.pcap` (renamed by STOP) or `....pcapN`
/// (tcpdump's own, before STOP).
pub fn ring_number(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    if let Some(stem) = name.strip_suffix(".pcap") {
        let (_, n) = stem.rsplit_once('-')?;
        return n.parse().ok();
    }
    let (_, n) = name.rsplit_once(".pcap")?;
    (!n.is_empty()).then(|| n.parse().ok()).flatten()
}

/// The ring in time order, and whether it wrapped: tcpdump `-W` reuses its files in turn, so a
/// ring that wrapped has its oldest packets in a file whose number is not the lowest.
pub fn order_ring(files: &[(PathBuf, Option<i64>)]) -> (Vec<PathBuf>, bool) {
    let mut by_time: Vec<&(PathBuf, Option<i64>)> = files.iter().collect();
    // Empty files (no first time) go last: they hold nothing to order.
    by_time.sort_by_key(|(p, t)| (t.is_none(), *t, ring_number(p)));
    let numbers: Vec<Option<u32>> = by_time
        .iter()
        .filter(|(_, t)| t.is_some())
        .map(|(p, _)| ring_number(p))
        .collect();
    let wrapped = numbers.iter().all(Option::is_some) && numbers.windows(2).any(|w| w[0] > w[1]);
    (
        by_time.into_iter().map(|(p, _)| p.clone()).collect(),
        wrapped,
    )
}

/// The pcap name of a link type, as tshark and tcpdump print it.
pub fn linktype_name(lt: u32) -> String {
    match lt {
        0 => "NULL".into(),
        1 => "EN10MB".into(),
        101 => "RAW".into(),
        108 => "LOOP".into(),
        113 => "LINUX_SLL".into(),
        228 => "IPV4".into(),
        229 => "IPV6".into(),
        276 => "LINUX_SLL2".into(),
        n => format!("LINKTYPE_{n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_numbers_from_both_namings() {
        let cases: &[(&str, Option<u32>)] = &[
            (
                "OVOC_device_10.0.0.1_2026-01-02T03.04.05.000006-2.pcap",
                Some(2),
            ),
            (
                "OVOC_device_10.0.0.1_2026-01-02T03.04.05.000006-0.pcap",
                Some(0),
            ),
            (
                "tmp_device_10.0.0.1_2026-01-02T03.04.05.000006.pcap1",
                Some(1),
            ),
            ("tmp_device_10.0.0.1_2026-01-02T03.04.05.000006.pcap", None),
            ("capture.pcap", None),
            ("x.pcapng", None),
        ];
        for (name, want) in cases {
            assert_eq!(ring_number(Path::new(name)), *want, "{name}");
        }
    }

    #[test]
    fn rings_are_put_in_time_order_and_a_wrap_is_seen() {
        let f = |n: u32, t: Option<i64>| (PathBuf::from(format!("OVOC_d_x-{n}.pcap")), t);
        // (files as given, expected order of numbers, wrapped)
        type Case = (Vec<(PathBuf, Option<i64>)>, &'static [u32], bool);
        let cases: &[Case] = &[
            (
                vec![f(0, Some(1)), f(1, Some(2)), f(2, Some(3))],
                &[0, 1, 2],
                false,
            ),
            (
                vec![f(2, Some(3)), f(0, Some(1)), f(1, Some(2))],
                &[0, 1, 2],
                false,
            ),
            // File 0 was reused after file 2: its packets are the newest.
            (
                vec![f(0, Some(30)), f(1, Some(10)), f(2, Some(20))],
                &[1, 2, 0],
                true,
            ),
            (
                vec![f(2, Some(5)), f(0, Some(9)), f(1, Some(1))],
                &[1, 2, 0],
                true,
            ),
            // An empty last file says nothing about the order.
            (vec![f(1, None), f(0, Some(1))], &[0, 1], false),
        ];
        for (files, want, wrapped) in cases {
            let (order, w) = order_ring(files);
            let got: Vec<u32> = order.iter().map(|p| ring_number(p).unwrap()).collect();
            assert_eq!((&got[..], w), (*want, *wrapped), "{files:?}");
        }
    }

    #[test]
    fn errors_are_words_not_bytes() {
        let junk = [0u8; 4096];
        let e = describe(&PcapError::NomError(
            &junk[..],
            pcap_parser::nom::error::ErrorKind::Verify,
        ));
        assert_eq!(e, "a malformed record (Verify)");
        assert_eq!(
            describe(&PcapError::HeaderNotRecognized),
            "not a pcap or pcapng file"
        );
    }

    #[test]
    fn units_convert_to_nanoseconds() {
        assert_eq!(units_to_ns(1_500_000, 1_000_000), Some(1_500_000_000));
        assert_eq!(units_to_ns(7, 1_000_000_000), Some(7));
        assert_eq!(units_to_ns(3, 1000), Some(3_000_000));
        assert_eq!(units_to_ns(1 << 20, 1 << 20), Some(1_000_000_000));
        assert_eq!(units_to_ns(u64::MAX, 1_000_000), None);
        assert_eq!(units_to_ns(u64::MAX, 1_000_000_000), None);
    }

    /// Timestamps that are not times are refused (the record is skipped and counted), never
    /// wrapped or a panic.
    #[test]
    fn timestamps_out_of_range_are_refused() {
        let us = 1_000_000;
        let cases: &[(u32, u32, u64, Option<i64>)] = &[
            (1, 500_000, us, Some(1_500_000_000)),
            (
                u32::MAX,
                999_999,
                us,
                Some(i64::from(u32::MAX) * 1_000_000_000 + 999_999_000),
            ),
            (5, 1_000_000, us, None),
            (5, u32::MAX, us, None),
            (5, 999_999_999, 1_000_000_000, Some(5_999_999_999)),
            (5, 1_000_000_000, 1_000_000_000, None),
        ];
        for &(sec, frac, res, want) in cases {
            assert_eq!(legacy_ns(sec, frac, res), want, "{sec} {frac} {res}");
        }
        let ng: &[(u64, u64, i64, Option<i64>)] = &[
            (1_000, us, 0, Some(1_000_000)),
            (u64::MAX, us, 0, None),
            (u64::MAX, 1_000_000_000, 0, None),
            (1 << 62, 1_000_000_000, 0, None),
            (1_000, us, i64::MAX, None),
            (1_000, us, -1, None),
            (1_000, us, 1_700_000_000, Some(1_700_000_000_001_000_000)),
        ];
        for &(units, res, off, want) in ng {
            assert_eq!(ng_ns(units, res, off), want, "{units} {res} {off}");
        }
    }
}
