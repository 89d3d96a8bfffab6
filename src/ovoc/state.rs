//! The agent's state on disk: `DIR/.tc/state.json`, written atomically (temporary file, fsync,
//! rename) so a crash leaves either the old or the new state, never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::core::Persisted;

pub fn path(dir: &Path) -> PathBuf {
    dir.join(".tc").join("state.json")
}

/// Write `p` unless it is what was written last (`last`): most requests change nothing, and an
/// fsync per request would cost milliseconds on a busy disk.
pub fn save(dir: &Path, p: &Persisted, last: &mut Vec<u8>) -> Result<(), String> {
    let text = encode(p)?;
    if *last == text {
        return Ok(());
    }
    write(dir, &text)?;
    *last = text;
    Ok(())
}

pub fn encode(p: &Persisted) -> Result<Vec<u8>, String> {
    serde_json::to_vec_pretty(p).map_err(|e| e.to_string())
}

/// Writes encoded state: temporary file, fsync, rename.
pub fn write(dir: &Path, text: &[u8]) -> Result<(), String> {
    let target = path(dir);
    let tmp = target.with_extension("json.tmp");
    let mut f =
        std::fs::File::create(&tmp).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    f.write_all(text)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &target).map_err(|e| format!("renaming to {}: {e}", target.display()))
}

/// None when there is no state yet; an unreadable file is an error (never silently dropped:
/// it may describe running captures).
pub fn load(dir: &Path) -> Result<Option<Persisted>, String> {
    let p = path(dir);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            format!(
                "{} is not valid agent state ({e}); move it aside to start afresh",
                p.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading {}: {e}", p.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join(".tc")).unwrap();
        assert_eq!(load(d.path()).unwrap(), None);
        let p = Persisted {
            next_id: 7,
            ..Persisted::default()
        };
        let mut last = Vec::new();
        save(d.path(), &p, &mut last).unwrap();
        std::fs::remove_file(path(d.path())).unwrap();
        save(d.path(), &p, &mut last).unwrap();
        assert!(
            !path(d.path()).exists(),
            "unchanged state is not written again"
        );
        last.clear();
        save(d.path(), &p, &mut last).unwrap();
        assert_eq!(load(d.path()).unwrap(), Some(p));
        std::fs::write(path(d.path()), "{garbage").unwrap();
        assert!(load(d.path())
            .unwrap_err()
            .contains("not valid agent state"));
    }
}
