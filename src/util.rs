//! Small pure helpers: durations, hex, base64, sha256.

use std::time::Duration;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

/// Parse `500ms`, `30s`, `5m`, `2h`, `1d` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 500ms, 30s, 5m, 2h"))?;
    let mult = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => {
            return Err(format!(
                "invalid duration {s:?}: unknown unit {unit:?} (ms, s, m, h, d)"
            ))
        }
    };
    let secs = n * mult;
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("invalid duration {s:?}: too large"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Parse hex, tolerating `:` separators (as `openssl x509 -fingerprint` prints them).
pub fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let clean: String = s.chars().filter(|&c| c != ':').collect();
    if clean.len() % 2 != 0 || clean.is_empty() {
        return None;
    }
    (0..clean.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(clean.get(i..i + 2)?, 16).ok())
        .collect()
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Standard alphabet, padded (RFC 4648 section 4).
pub fn base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Padding optional, and bits left over in the last character ignored: what clients send in
/// Basic credentials varies that much, and no more (no whitespace, no URL-safe alphabet).
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    LENIENT.decode(s.trim_end_matches('=')).ok()
}

/// Non-cryptographic-use random number (boundaries, jitter) from the OS generator.
pub fn random_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u64::from_le_bytes(b)
}

/// A xorshift generator for the randomized tests: the same inputs on every run.
#[cfg(test)]
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review of issue 17, item 5: every directory the call creates gets the mode and the
    /// group (only the last one did); one that existed is left alone.
    #[test]
    #[ignore = "needs root (chown to another group): as root, cargo test -- --include-ignored"]
    fn every_created_dir_gets_the_group() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        assert!(crate::sys::is_root(), "chown to another group needs root");
        let top = tempfile::tempdir().unwrap();
        let before = std::fs::metadata(top.path()).unwrap();
        let deep = top.path().join("a/b/c");
        Modes::group(1).create_dir_all(&deep).unwrap();
        for d in ["a", "a/b", "a/b/c"] {
            let m = std::fs::metadata(top.path().join(d)).unwrap();
            assert_eq!((m.gid(), m.permissions().mode() & 0o777), (1, 0o750), "{d}");
        }
        let after = std::fs::metadata(top.path()).unwrap();
        assert_eq!((after.gid(), after.mode()), (before.gid(), before.mode()));
    }

    #[test]
    fn durations() {
        let ok: &[(&str, u64)] = &[
            ("500ms", 500),
            ("30s", 30_000),
            ("30", 30_000),
            ("5m", 300_000),
            ("2h", 7_200_000),
            ("1.5s", 1500),
        ];
        for &(s, ms) in ok {
            assert_eq!(parse_duration(s).unwrap().as_millis() as u64, ms, "{s}");
        }
        for bad in ["", "s", "10x", "-1s", "1e999"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("invalid duration"), "{bad}: {e}");
        }
    }

    #[test]
    fn base64_round_trips_rfc4648_vectors() {
        let t: &[(&str, &str)] = &[
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for &(plain, enc) in t {
            assert_eq!(base64(plain.as_bytes()), enc);
            assert_eq!(base64_decode(enc).unwrap(), plain.as_bytes());
        }
        assert!(base64_decode("Z").is_none());
        assert!(base64_decode("Zm9v!").is_none());
    }

    /// Decoding is as lenient as a Basic credential from any client needs, and no more.
    #[test]
    fn base64_decode_edges() {
        let t: &[(&str, Option<&[u8]>)] = &[
            ("Zg", Some(b"f")),
            ("Zm8", Some(b"fo")),
            ("Zg===", Some(b"f")),
            ("Zh==", Some(b"f")),
            ("Zm9=", Some(b"fo")),
            ("=", Some(b"")),
            ("Zm9vY", None),
            ("Zg==Zg==", None),
            (" Zg==", None),
            ("Zg==\n", None),
            ("Zm9v-_", None),
            ("Zm9v/+", Some(b"foo\xff")),
        ];
        for &(enc, want) in t {
            assert_eq!(base64_decode(enc).as_deref(), want, "{enc:?}");
        }
    }

    #[test]
    fn hex_parsing() {
        assert_eq!(parse_hex("0aFF").unwrap(), vec![0x0a, 0xff]);
        assert_eq!(parse_hex("0a:ff").unwrap(), vec![0x0a, 0xff]);
        assert!(parse_hex("0af").is_none());
        assert!(parse_hex("zz").is_none());
        assert!(parse_hex("").is_none());
        assert_eq!(hex(&[0, 0xab]), "00ab");
    }
}

/// Who may read what `tc` writes: the owner alone (files 0600, directories 0700), or also one
/// group (0640, 0750, that group's). Device traffic is not for every user of a shared host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes {
    pub file: u32,
    pub dir: u32,
    pub gid: Option<u32>,
}

impl Modes {
    pub fn private() -> Modes {
        Modes {
            file: 0o600,
            dir: 0o700,
            gid: None,
        }
    }

    pub fn group(gid: u32) -> Modes {
        Modes {
            file: 0o640,
            dir: 0o750,
            gid: Some(gid),
        }
    }

    /// `dir` and its missing parents, created with the directory mode and group, each of them
    /// (`--out` itself is often a missing parent of the state dir); existing ones are left as
    /// they are: they are not ours.
    pub fn create_dir_all(&self, dir: &std::path::Path) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        let missing: Vec<&std::path::Path> = dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && !d.is_dir())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(self.dir)
            .create(dir)?;
        // Outermost first, so the group can enter each before the next is reached.
        for d in missing.into_iter().rev() {
            self.own(d, self.dir)?;
        }
        Ok(())
    }

    /// Opens `path` for appending (and reading), created with the file mode if missing.
    pub fn open_append(&self, path: &std::path::Path) -> std::io::Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        let existed = path.exists();
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(self.file)
            .open(path)?;
        if !existed {
            self.own(path, self.file)?;
        }
        Ok(f)
    }

    /// The group and the exact mode (the umask may have taken group bits away).
    pub fn own(&self, path: &std::path::Path, mode: u32) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        if let Some(gid) = self.gid {
            std::os::unix::fs::chown(path, None, Some(gid))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    }
}
