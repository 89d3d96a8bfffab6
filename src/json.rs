//! JSON strings written the way serde_json writes them, checked for bytes to escape 16 bytes at a
//! time (8 off x86-64); those with nothing to escape are copied without calls to memcpy.
//! `tc alarm listen` writes its `alarm` line by hand with these (about 800 bytes of strings per
//! alarm); serde_json looks at every byte on its own, and that was the largest part of the
//! listener's own time.
//! Pure; held to serde_json's output by tests.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// True when one of the eight bytes needs an escape: a control byte, `"` or `\`. Each term is
/// the classic "some byte is zero / below n" test, exact for the question "is there one".
fn word_needs_escape(w: u64) -> bool {
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    let q = w ^ (ONES * u64::from(b'"'));
    let quote = q.wrapping_sub(ONES) & !q;
    let b = w ^ (ONES * u64::from(b'\\'));
    let backslash = b.wrapping_sub(ONES) & !b;
    (control | quote | backslash) & HIGHS != 0
}

fn escape(byte: u8) -> Option<&'static [u8]> {
    Some(match byte {
        b'"' => b"\\\"",
        b'\\' => b"\\\\",
        b'\n' => b"\\n",
        b'\r' => b"\\r",
        b'\t' => b"\\t",
        0x08 => b"\\b",
        0x0c => b"\\f",
        0..=0x1f => &CONTROL[byte as usize],
        _ => return None,
    })
}

/// `\u00XX` for every control byte, lower-case hex as serde_json writes it.
const CONTROL: [[u8; 6]; 32] = {
    let hex = b"0123456789abcdef";
    let mut t = [[0u8; 6]; 32];
    let mut i = 0;
    while i < 32 {
        t[i] = [b'\\', b'u', b'0', b'0', hex[i >> 4], hex[i & 15]];
        i += 1;
    }
    t
};

/// Appends `s` as a JSON string.
pub fn string(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    out.reserve(b.len() + 2);
    out.push(b'"');
    if needs_escape(b) {
        escaped(out, b);
    } else {
        copy(out, b);
    }
    out.push(b'"');
}

/// `out.extend_from_slice(b)`, in pieces of fixed size that the compiler copies inline. The
/// static build's C library is musl, whose memcpy starts every copy with `rep movsq`, slow to get
/// going: a call for each of an alarm line's two dozen short strings was a sixth of the
/// listener's time (perf), against 3 % with glibc's.
fn copy(out: &mut Vec<u8>, b: &[u8]) {
    out.reserve(b.len());
    let mut rest = b;
    while piece::<16>(out, &mut rest) {}
    piece::<8>(out, &mut rest);
    piece::<4>(out, &mut rest);
    piece::<2>(out, &mut rest);
    piece::<1>(out, &mut rest);
}

/// Moves the first `N` bytes of `rest` to `out`, if it has that many.
fn piece<const N: usize>(out: &mut Vec<u8>, rest: &mut &[u8]) -> bool {
    match rest.split_first_chunk::<N>() {
        Some((c, r)) => {
            out.extend_from_slice(c);
            *rest = r;
            true
        }
        None => false,
    }
}

/// Whether any byte of `b` needs an escape. Sixteen bytes at a time with SSE2 (part of every
/// x86-64), else eight at a time in a `u64`; the answers are or-ed (no branch per block) and the
/// last block overlaps the one before it. A string shorter than a word (`Major`, `crit`) is
/// looked at a byte at a time.
fn needs_escape(b: &[u8]) -> bool {
    if b.len() < 8 {
        return b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
    }
    #[cfg(target_arch = "x86_64")]
    if b.len() >= 16 {
        return sse2::needs_escape(b);
    }
    let word = |c: &[u8]| u64::from_le_bytes(c.try_into().expect("eight bytes"));
    let mut any = word_needs_escape(word(&b[b.len() - 8..]));
    for c in b.chunks_exact(8) {
        any |= word_needs_escape(word(c));
    }
    any
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };

    /// `super::needs_escape` for at least 16 bytes.
    pub fn needs_escape(b: &[u8]) -> bool {
        assert!(b.len() >= 16);
        // SAFETY: SSE2 is in every x86-64 CPU. Every load is an unaligned 16-byte read that
        // starts at `i <= len - 16`, inside `b`.
        unsafe {
            let quote = _mm_set1_epi8(b'"' as i8);
            let backslash = _mm_set1_epi8(b'\\' as i8);
            let control = _mm_set1_epi8(0x1f);
            let flags = |i: usize| {
                let v = _mm_loadu_si128(b.as_ptr().add(i) as *const __m128i);
                // Unsigned v <= 0x1f exactly when max(v, 0x1f) == 0x1f.
                let low = _mm_cmpeq_epi8(_mm_max_epu8(v, control), control);
                _mm_or_si128(
                    low,
                    _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                )
            };
            let mut any = flags(b.len() - 16);
            let mut i = 0;
            while i + 16 <= b.len() {
                any = _mm_or_si128(any, flags(i));
                i += 16;
            }
            _mm_movemask_epi8(any) != 0
        }
    }
}

/// The rare string with something to escape, a byte at a time; plain runs are copied whole.
fn escaped(out: &mut Vec<u8>, b: &[u8]) {
    let mut run = 0;
    for (i, &c) in b.iter().enumerate() {
        if let Some(e) = escape(c) {
            out.extend_from_slice(&b[run..i]);
            out.extend_from_slice(e);
            run = i + 1;
        }
    }
    out.extend_from_slice(&b[run..]);
}

/// A string, or `null`.
pub fn opt_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(s: &str) -> String {
        let mut out = b"x".to_vec();
        string(&mut out, s);
        String::from_utf8(out[1..].to_vec()).expect("UTF-8 in, UTF-8 out")
    }

    #[test]
    fn every_byte_as_serde_json_writes_it() {
        for c in 0..=0x7fu8 {
            let s = (c as char).to_string();
            let long = "abcdefghijklmnopqrstuvwxyz0123456789".repeat(2);
            let mut texts = vec![s.clone(), format!("abcdefgh{s}"), format!("{s}abcdefghij")];
            // Every position of a 72-byte string: each lane of the 16- and 8-byte blocks.
            for at in 0..=long.len() {
                texts.push(format!("{}{s}{}", &long[..at], &long[at..]));
            }
            for text in texts {
                assert_eq!(ours(&text), serde_json::to_string(&text).unwrap(), "{c:#x}");
            }
        }
        for s in [
            "",
            "é",
            "\u{fffd}",
            "日本語テキスト",
            "\u{7f}\u{80}\u{10ffff}",
        ] {
            assert_eq!(ours(s), serde_json::to_string(s).unwrap(), "{s:?}");
        }
        assert_eq!(
            {
                let mut o = Vec::new();
                opt_string(&mut o, None);
                o
            },
            b"null"
        );
    }

    #[test]
    fn random_strings_as_serde_json_writes_them() {
        let alphabet: Vec<char> = "ab \"\\\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}é€😀,:{}"
            .chars()
            .collect();
        let mut next = crate::util::xorshift(0x9e37_79b9_7f4a_7c15u64);
        let mut checked = 0;
        for _ in 0..50_000 {
            let len = (next() % 80) as usize;
            let s: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            assert_eq!(ours(&s), serde_json::to_string(&s).unwrap(), "{s:?}");
            checked += 1;
        }
        assert_eq!(checked, 50_000);
    }

    #[test]
    fn the_word_test_finds_a_byte_in_any_lane() {
        for lane in 0..8 {
            for c in [0u8, 0x1f, b'"', b'\\'] {
                let mut w = *b"abcdefgh";
                w[lane] = c;
                assert!(word_needs_escape(u64::from_le_bytes(w)), "{c:#x} in {lane}");
            }
            for c in [0x20u8, 0x7f, 0x80, 0xff, b'!', b'#', b'[', b']'] {
                let mut w = *b"abcdefgh";
                w[lane] = c;
                assert!(
                    !word_needs_escape(u64::from_le_bytes(w)),
                    "{c:#x} in {lane}"
                );
            }
        }
    }
}
