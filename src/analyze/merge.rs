//! `--merge OUT.pcapng`: both captures in one file, in OVOC time, for Wireshark. Every frame of
//! both inputs is written (so its packet count is theirs); the CPE's timestamps are corrected
//! by the clock model that the section header's comment states; each packet lost in transit
//! carries a comment saying so (`frame.comment` in Wireshark). One more streaming pass: memory
//! stays the reader buffers and the list of lost frames.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use pcap_parser::pcapng::{EnhancedPacketBlock, InterfaceDescriptionBlock, SectionHeaderBlock};
use pcap_parser::{Linktype, OptionCode, PcapNGOption, ToVec};

use super::clock::Model;
use super::core::{CPE, OVOC};
use super::read::{linktype_name, Source};
use super::{Config, Report};

pub const LOST_OVOC: &str = "tc analyze: lost in transit: sent by OVOC, never seen by the CPE";
pub const LOST_CPE: &str = "tc analyze: lost in transit: sent by the CPE, never seen by OVOC";

/// A text option. Its length field has 16 bits: a longer text (a header comment naming many
/// ring files) is cut at the last whole character that fits, never given a wrapped length.
fn option(code: OptionCode, text: &str) -> PcapNGOption<'_> {
    let mut end = text.len().min(usize::from(u16::MAX));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let text = &text[..end];
    PcapNGOption {
        code,
        len: u16::try_from(text.len()).expect("cut to fit"),
        value: Cow::Borrowed(text.as_bytes()),
    }
}

fn block(mut b: impl ToVec) -> Result<Vec<u8>, String> {
    b.to_vec().map_err(|e| format!("encoding pcapng: {e:?}"))
}

/// The section header's comment: what was done to the CPE's timestamps, and from which files.
pub fn header_comment(cfg: &Config, r: &Report) -> String {
    let m = r.model();
    let how = match &r.clock {
        Some(c) if c.given => "given with --offset".to_string(),
        Some(c) => format!(
            "estimated from {} matched packets{}",
            c.matched,
            c.estimate.uncertainty.map_or(String::new(), |u| format!(
                ", uncertainty ±{:.3} ms",
                u / 1e6
            ))
        ),
        None => "none could be estimated; CPE times are as captured".into(),
    };
    let ovoc: Vec<String> = r
        .ovoc_files
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    format!(
        "tc analyze, device {}: CPE timestamps corrected to the OVOC clock with offset \
         (CPE minus OVOC) {:+.3} ms at {} and drift {:+.3} ppm ({how}). Interface CPE: {}. \
         Interface OVOC: {}. Verdict: {} - {}",
        r.device,
        m.offset / 1e6,
        super::rfc3339(m.at),
        m.drift * 1e6,
        cfg.cpe.display(),
        ovoc.join(", "),
        r.verdict.verdict,
        r.verdict.text
    )
}

pub fn write(cfg: &Config, r: &Report, out: &Path) -> Result<(), String> {
    let file = File::create(out).map_err(|e| e.to_string())?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let io = |e: std::io::Error| e.to_string();
    let comment = header_comment(cfg, r);
    w.write_all(&block(SectionHeaderBlock {
        block_type: 0,
        block_len1: 0,
        bom: 0,
        major_version: 1,
        minor_version: 0,
        section_len: -1,
        options: vec![option(OptionCode::Comment, &comment)],
        block_len2: 0,
    })?)
    .map_err(io)?;
    let model = r.model();
    let mut src = [
        Source::new(r.ovoc_files.clone()),
        Source::new(vec![cfg.cpe.clone()]),
    ];
    let mut has = [src[0].advance()?, src[1].advance()?];
    // (side, link type) -> interface id, declared when first needed.
    let mut ifaces: HashMap<(usize, u32), u32> = HashMap::new();
    let mut lost_at = [0usize; 2];
    loop {
        let t = [0, 1].map(|s| has[s].then(|| time(&model, s, src[s].frame().ts_ns)));
        let side = match t {
            [Some(a), Some(b)] => usize::from(b < a),
            [Some(_), None] => OVOC,
            [None, Some(_)] => CPE,
            [None, None] => break,
        };
        let f = src[side].frame();
        let id = interface(&mut w, &mut ifaces, side, f.linktype)?;
        let frame = src[side].frames - 1;
        let lost = &r.lost_frames[side];
        while lost_at[side] < lost.len() && lost[lost_at[side]] < frame {
            lost_at[side] += 1;
        }
        let is_lost = lost.get(lost_at[side]) == Some(&frame);
        let text = if side == OVOC { LOST_OVOC } else { LOST_CPE };
        let ts = t[side].expect("picked").max(0) as u64;
        w.write_all(&block(EnhancedPacketBlock {
            block_type: 0,
            block_len1: 0,
            if_id: id,
            ts_high: (ts >> 32) as u32,
            ts_low: ts as u32,
            caplen: f.data.len() as u32,
            origlen: f.orig_len,
            data: f.data,
            options: if is_lost {
                vec![option(OptionCode::Comment, text)]
            } else {
                Vec::new()
            },
            block_len2: 0,
        })?)
        .map_err(io)?;
        has[side] = src[side].advance()?;
    }
    w.flush().map_err(io)
}

/// The interface id of a side's frames of one link type, declared (an IDB) when first needed:
/// one per side, named CPE and OVOC, unless a side has several link types (a pcapng of several
/// interfaces), whose others get the link type in their name.
fn interface(
    w: &mut impl Write,
    ifaces: &mut HashMap<(usize, u32), u32>,
    side: usize,
    linktype: u32,
) -> Result<u32, String> {
    if let Some(id) = ifaces.get(&(side, linktype)) {
        return Ok(*id);
    }
    let first = !ifaces.keys().any(|(s, _)| *s == side);
    let base = if side == CPE { "CPE" } else { "OVOC" };
    let name = if first {
        base.to_string()
    } else {
        format!("{base} {}", linktype_name(linktype))
    };
    w.write_all(&block(InterfaceDescriptionBlock {
        block_type: 0,
        block_len1: 0,
        linktype: Linktype(linktype as i32),
        reserved: 0,
        snaplen: 0,
        options: vec![option(OptionCode::IfName, &name)],
        block_len2: 0,
        if_tsresol: 9,
        if_tsoffset: 0,
    })?)
    .map_err(|e| e.to_string())?;
    let id = ifaces.len() as u32;
    ifaces.insert((side, linktype), id);
    Ok(id)
}

fn time(model: &Model, side: usize, native: i64) -> i64 {
    if side == OVOC {
        native
    } else {
        model.to_ovoc(native)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_comments_are_cut_to_what_the_length_field_holds() {
        let cases = [
            ("a".repeat(10), 10),
            ("a".repeat(70_000), 65_535),
            // A two-byte character across the limit is left out whole.
            (format!("{}é", "a".repeat(65_534)), 65_534),
        ];
        for (text, want) in cases {
            let o = option(OptionCode::Comment, &text);
            assert_eq!((usize::from(o.len), o.value.len()), (want, want));
            assert!(std::str::from_utf8(&o.value).is_ok());
        }
    }
}
