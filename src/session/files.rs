//! What `tc session` keeps on disk, and how it keeps it honest:
//! - the out dir is locked (flock on `.tc-session/lock`, which holds the PID) for the session's
//!   life, so that a second session, `--resume` or not, cannot drive the same devices and append
//!   to the same journal;
//! - the report and the journal are append-only line files whose lines are written whole or not
//!   at all: a failed write (a full disk) is cut back to where it began and retried at the next
//!   turn, so the report always parses;
//! - at each write turn the files are checked to still be the ones in `--out` (device and inode):
//!   if the directory was deleted or replaced, that is said loudly and both files are written
//!   again from what the session holds in memory, with the gap recorded.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::core::Journal;
use crate::error::{Error, Result};
use crate::util::Modes;

/// The CSV report's first line.
pub const REPORT_HEADER: &str = "time,device,task,status,code,description,file,verdict\n";

/// A file of lines, appended whole or not at all.
pub struct Lines {
    path: PathBuf,
    file: File,
    /// (device, inode) of the file this session writes: another one at `path` means ours is gone.
    id: (u64, u64),
    /// Lines not yet written whole, oldest first.
    pending: VecDeque<Vec<u8>>,
    /// A write failed and has not succeeded since (said once, and once when it recovers).
    failing: bool,
    modes: Modes,
}

fn file_id(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

impl Lines {
    /// Opens `path` for appending; a last line a crash cut short is cut off first, or the next
    /// line would be glued to it (and both lost).
    pub fn open(path: &Path, modes: Modes) -> std::io::Result<Lines> {
        let file = modes.open_append(path)?;
        cut_partial_line(&file, path)?;
        let id = file_id(&file.metadata()?);
        Ok(Lines {
            path: path.to_path_buf(),
            file,
            id,
            pending: VecDeque::new(),
            failing: false,
            modes,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues `line` and writes what is queued.
    pub fn push(&mut self, line: Vec<u8>) {
        self.pending.push_back(line);
        self.flush();
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Lines not yet written.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Writes the queued lines, each whole or not at all; stops at the first that fails (it is
    /// tried again next time, so lines stay in order).
    pub fn flush(&mut self) {
        while let Some(line) = self.pending.front() {
            match append_whole(&mut self.file, line) {
                Ok(()) => {
                    self.pending.pop_front();
                }
                Err(e) => {
                    if !self.failing {
                        crate::logging::warn_user(&format!(
                            "writing {}: {e}; the line is kept and written when it can be",
                            self.path.display()
                        ));
                        self.failing = true;
                    }
                    return;
                }
            }
        }
        if std::mem::take(&mut self.failing) {
            crate::logging::warn_user(&format!(
                "{}: written again, nothing lost",
                self.path.display()
            ));
        }
    }

    /// The file at `path` is no longer the one this session writes (deleted, or replaced).
    pub fn replaced(&self) -> bool {
        std::fs::metadata(&self.path).map_or(true, |m| file_id(&m) != self.id)
    }

    /// A new file at `path` holding `content`, then what was queued. Written beside it under
    /// another name, synced, and renamed into place: killed at any moment, `path` holds either
    /// what was there or the whole new file, never nothing or a part.
    pub fn recreate(&mut self, content: &[u8]) -> std::io::Result<()> {
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir {
            self.modes.create_dir_all(dir)?;
        }
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".new-{}", std::process::id()));
        let tmp = self.path.with_file_name(name);
        // Left by a session killed here before: ours to replace.
        let _ = std::fs::remove_file(&tmp);
        let mut fresh = Lines::open(&tmp, self.modes)?;
        let written = append_whole(&mut fresh.file, content)
            .and_then(|_| fresh.file.sync_all())
            .and_then(|_| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        if let Some(dir) = dir {
            // The rename itself durable; advice only, the file is whole either way.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        fresh.path = self.path.clone();
        fresh.pending = std::mem::take(&mut self.pending);
        *self = fresh;
        self.flush();
        Ok(())
    }
}

/// Cuts `f` back to just after its last newline (to nothing if it has none).
fn cut_partial_line(f: &File, path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let len = f.metadata()?.len();
    let mut end = len;
    let mut buf = [0u8; 4096];
    while end > 0 {
        let n = end.min(buf.len() as u64) as usize;
        let at = end - n as u64;
        f.read_exact_at(&mut buf[..n], at)?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            end = at + i as u64 + 1;
            break;
        }
        end = at;
    }
    if end < len {
        crate::logging::warn_user(&format!(
            "{}: its last line was cut short (a crash?): {} byte(s) removed",
            path.display(),
            len - end
        ));
        f.set_len(end)?;
    }
    Ok(())
}

/// One write of `line` at the end of `f`; on failure the file is cut back to where it was.
fn append_whole(f: &mut File, line: &[u8]) -> std::io::Result<()> {
    let at = f.seek(SeekFrom::End(0))?;
    match f.write_all(line).and_then(|_| f.flush()) {
        Ok(()) => Ok(()),
        Err(e) => {
            if let Err(cut) = f.set_len(at) {
                log::error!("cutting back a partial line: {cut}");
            }
            Err(e)
        }
    }
}

/// The report: its CSV lines, and all of them in memory to write it again if it is lost.
pub struct Report {
    pub lines: Lines,
    /// Everything the file holds (its header, the rows of earlier runs, this run's).
    text: Vec<u8>,
}

impl Report {
    pub fn open(path: &Path, modes: Modes) -> Result<Report> {
        let err =
            |e: std::io::Error| Error::usage(format!("opening report {}: {e}", path.display()));
        let mut lines = Lines::open(path, modes).map_err(err)?;
        let mut text = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut text))
            .map_err(err)?;
        if text.is_empty() {
            text.extend_from_slice(REPORT_HEADER.as_bytes());
            lines.push(REPORT_HEADER.as_bytes().to_vec());
        }
        Ok(Report { lines, text })
    }

    /// One CSV row (the fields as the csv crate quotes them).
    pub fn row(&mut self, fields: [&str; 8]) {
        let mut w = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(Vec::new());
        let line = w
            .write_record(fields)
            .map_err(|e| e.to_string())
            .and_then(|_| w.into_inner().map_err(|e| e.to_string()));
        match line {
            Ok(line) => {
                self.text.extend_from_slice(&line);
                self.lines.push(line);
            }
            Err(e) => log::error!("formatting a report row: {e}"),
        }
    }

    /// Everything the report holds, as written (or still to be written).
    pub fn text(&self) -> &[u8] {
        &self.text
    }

    pub fn recreate(&mut self) -> std::io::Result<()> {
        // What is queued is in `text` already.
        self.lines.pending.clear();
        let text = std::mem::take(&mut self.text);
        let r = self.lines.recreate(&text);
        self.text = text;
        r
    }
}

/// The journal's records (`--resume`); a line a crash cut short is skipped.
pub fn read_journal(path: &Path) -> Result<Vec<Journal>> {
    let f = File::open(path)
        .map_err(|e| Error::usage(format!("--resume: no journal at {}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| Error::usage(format!("{}: {e}", path.display())))?;
        match serde_json::from_str::<Journal>(&line) {
            Ok(j) => out.push(j),
            // A crash can cut the last line short; everything before it is good.
            Err(e) => log::warn!("{} line {}: skipped ({e})", path.display(), i + 1),
        }
    }
    Ok(out)
}

pub fn journal_line(j: &Journal) -> Vec<u8> {
    let mut line = serde_json::to_vec(j).unwrap_or_default();
    line.push(b'\n');
    line
}

/// The out dir's lock: held (flock) for the session's life; the file says by whom.
pub struct Lock {
    path: PathBuf,
    _file: File,
    /// (device, inode) of the file locked: another one at `path` is not our lock.
    id: (u64, u64),
}

impl Lock {
    /// Takes the lock, or says which process holds it.
    pub fn take(path: &Path, modes: Modes) -> Result<Lock> {
        let err = |e: std::io::Error| Error::usage(format!("opening {}: {e}", path.display()));
        let mut file = modes.open_append(path).map_err(err)?;
        let locked = crate::sys::lock_exclusive(&file)
            .map_err(|e| Error::usage(format!("locking {}: {e}", path.display())))?;
        if !locked {
            let mut holder = String::new();
            let _ = File::open(path).and_then(|mut f| f.read_to_string(&mut holder));
            let pid = holder.trim();
            let pid = if pid.is_empty() { "unknown" } else { pid };
            return Err(Error::usage(format!(
                "{} is in use by another tc session (pid {pid}): one session per --out, with or \
                 without --resume",
                path.parent()
                    .and_then(Path::parent)
                    .unwrap_or(path)
                    .display()
            )));
        }
        file.set_len(0)
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .map_err(err)?;
        let id = file_id(&file.metadata().map_err(err)?);
        Ok(Lock {
            path: path.to_path_buf(),
            _file: file,
            id,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file at the lock's path is still the one this session locked.
    pub fn intact(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| file_id(&m) == self.id)
    }

    /// The lock file was deleted (alone, or with the out dir) or replaced: takes the one at the
    /// path now, creating it (and its directory) if none is there. An error means another
    /// session holds it: the out dir is not this session's any more.
    pub fn retake(&mut self, modes: Modes) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            modes
                .create_dir_all(dir)
                .map_err(|e| Error::usage(format!("creating {}: {e}", dir.display())))?;
        }
        *self = Lock::take(&self.path, modes)?;
        Ok(())
    }
}

/// The file in the state directory that says how the session lays out its files: a
/// `--resume` with the other layout would look for its files in the wrong place.
const LAYOUT_FILE: &str = "layout";

fn layout_name(per_round: bool) -> &'static str {
    if per_round {
        "per-round (--collect-ovoc)\n"
    } else {
        "flat\n"
    }
}

pub fn write_layout(state: &Path, per_round: bool, modes: Modes) -> Result<()> {
    let path = state.join(LAYOUT_FILE);
    let _ = std::fs::remove_file(&path);
    modes
        .open_append(&path)
        .and_then(|mut f| f.write_all(layout_name(per_round).as_bytes()))
        .map_err(|e| Error::usage(format!("writing {}: {e}", path.display())))
}

/// `--resume` keeps the layout the session began with (a session older than this file was
/// flat).
pub fn check_layout(state: &Path, per_round: bool) -> Result<()> {
    let path = state.join(LAYOUT_FILE);
    let was = match std::fs::read_to_string(&path) {
        Ok(t) => t == layout_name(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(Error::usage(format!("reading {}: {e}", path.display()))),
    };
    if was == per_round {
        return Ok(());
    }
    Err(Error::usage(format!(
        "this session began {} --collect-ovoc (its files are laid out for that): resume it {} \
         --collect-ovoc",
        if was { "with" } else { "without" },
        if was { "with" } else { "without" }
    )))
}

/// Who holds the out dir's lock, found without touching it (`tc session status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    /// As /proc/locks names it (0 when the holder is in a PID namespace this one cannot see).
    pub pid: u32,
}

/// The live holder of the lock at `path`, if any: a process holding flock(LOCK_EX) on that very
/// file, as the kernel's /proc/locks lists it.
///
/// Why /proc/locks and not a lock of our own: taking the lock, even shared and for a moment,
/// would make a session that starts at that moment fail its non-blocking LOCK_EX ("in use by
/// another tc session"), and the PID in the file alone says nothing once that PID is reused.
/// /proc/locks is world-readable (a member of `--group` can ask), needs no file descriptor of
/// the holder's (/proc/PID/fdinfo would need ptrace rights), and an entry is there exactly as
/// long as the lock is held: a session killed with -9 leaves none. Only where /proc/locks cannot
/// be read does the PID in the file stand in, if such a process exists, with a warning.
pub fn lock_holder(path: &Path) -> Result<Option<Holder>> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        // No lock file: no session ever ran here, or its .tc-session was deleted.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::usage(format!("{}: {e}", path.display()))),
    };
    let pid_in_file = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok());
    let dev = meta.dev();
    let file = LockedFile {
        major: u64::from(rustix::fs::major(dev)),
        minor: u64::from(rustix::fs::minor(dev)),
        ino: meta.ino(),
        pid_in_file,
    };
    match std::fs::read_to_string("/proc/locks") {
        Ok(text) => Ok(flock_holder(&text, &file)),
        Err(e) => {
            let alive = pid_in_file.filter(|&p| crate::sys::process_exists(p));
            crate::logging::warn_user(&format!(
                "reading /proc/locks: {e}; {}",
                match alive {
                    Some(p) => format!(
                        "taking process {p}, named in {}, as the session",
                        path.display()
                    ),
                    None => format!("no process named in {} is alive", path.display()),
                }
            ));
            Ok(alive.map(|pid| Holder { pid }))
        }
    }
}

/// The lock file as /proc/locks names files, and the PID it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockedFile {
    pub major: u64,
    pub minor: u64,
    pub ino: u64,
    pub pid_in_file: Option<u32>,
}

/// The holder of an exclusive flock on `file` in the text of /proc/locks, whose lines read
/// `1: FLOCK  ADVISORY  WRITE 5864 fe:00:10010739 0 EOF` (device numbers in hex, the inode in
/// decimal); `1: -> FLOCK ...` lines are waiters, not holders. On overlayfs the kernel names the
/// file of the layer below, whose device differs from what stat says: an entry with the file's
/// inode and the PID the file holds is taken then too.
pub fn flock_holder(proc_locks: &str, file: &LockedFile) -> Option<Holder> {
    proc_locks.lines().find_map(|l| {
        let mut w = l.split_whitespace().skip(1);
        let (kind, _, mode, pid, id) = (w.next()?, w.next()?, w.next()?, w.next()?, w.next()?);
        if kind != "FLOCK" || mode != "WRITE" {
            return None;
        }
        let mut id = id.split(':');
        let major = u64::from_str_radix(id.next()?, 16).ok()?;
        let minor = u64::from_str_radix(id.next()?, 16).ok()?;
        let ino: u64 = id.next()?.parse().ok()?;
        let pid = pid
            .parse::<i64>()
            .ok()
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0);
        let same_file = (major, minor, ino) == (file.major, file.minor, file.ino);
        let same_inode_and_pid = ino == file.ino && pid != 0 && Some(pid) == file.pid_in_file;
        (same_file || same_inode_and_pid).then_some(Holder { pid })
    })
}

/// The journal's records in `text` (a file read while a session may be appending to it): a
/// last line not yet ended is left out, a line that does not parse is skipped.
pub fn parse_journal(text: &[u8]) -> Vec<Journal> {
    whole_lines(text)
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect()
}

/// `text` up to its last newline: what was written whole.
pub fn whole_lines(text: &[u8]) -> &[u8] {
    let end = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    &text[..end]
}

/// Where a round's files go: `OUT` itself, or with `--collect-ovoc` `OUT/<device>/<round>/`,
/// the CPE file, the OVOC files and the analysis together.
#[derive(Debug, Clone)]
pub struct Layout {
    pub out: PathBuf,
    pub per_round: bool,
}

impl Layout {
    /// `round` counts from 1. Device names are checked at the inventory: no `/`, no `..`.
    pub fn round_dir(&self, device: &str, round: u32) -> PathBuf {
        if self.per_round {
            self.out.join(device).join(round.to_string())
        } else {
            self.out.clone()
        }
    }
    /// As `round_dir`, for a device name read back from the report or the journal (files
    /// anyone with access to `--out` can edit): None for a name that is not one plain path
    /// component, which would lead out of `--out`.
    pub fn round_dir_checked(&self, device: &str, round: u32) -> Option<PathBuf> {
        is_plain_name(device).then(|| self.round_dir(device, round))
    }
}

/// One normal path component: not empty, `.` or `..`, no `/` or NUL.
pub fn is_plain_name(name: &str) -> bool {
    !matches!(name, "" | "." | "..") && !name.contains(['/', '\0'])
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_resume_keeps_the_layout_it_began_with() {
        let dir = tempfile::tempdir().unwrap();
        // Before the layout file existed: flat.
        assert!(check_layout(dir.path(), false).is_ok());
        assert!(check_layout(dir.path(), true).is_err());
        for began in [false, true] {
            write_layout(dir.path(), began, Modes::private()).unwrap();
            assert!(check_layout(dir.path(), began).is_ok());
            let e = check_layout(dir.path(), !began).unwrap_err().to_string();
            assert!(e.contains("--collect-ovoc"), "{e}");
        }
    }

    use super::*;

    #[test]
    fn a_second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".tc-session/lock");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let held = Lock::take(&path, Modes::private()).unwrap();
        let e = Lock::take(&path, Modes::private()).err().unwrap();
        let want = format!(
            "{} is in use by another tc session (pid {}): one session per --out, with or without --resume",
            dir.path().display(),
            std::process::id()
        );
        assert_eq!(e.to_string(), want);
        drop(held);
        assert!(Lock::take(&path, Modes::private()).is_ok(), "released");
    }

    /// Review of issue 17, item 4: a lock file deleted is taken again; one replaced by another
    /// session's is not taken, and the error says so; an intact one is never taken twice
    /// (a second flock in the same process is refused: it named the session's own PID).
    #[test]
    fn a_lost_lock_is_retaken_unless_another_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".tc-session/lock");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut ours = Lock::take(&path, Modes::private()).unwrap();
        assert!(ours.intact());
        std::fs::remove_file(&path).unwrap();
        assert!(!ours.intact());
        ours.retake(Modes::private()).unwrap();
        assert!(ours.intact());
        let pid = std::fs::read_to_string(&path).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        // The whole out dir gone: the directory and a new lock.
        std::fs::remove_dir_all(dir.path().join(".tc-session")).unwrap();
        assert!(!ours.intact());
        ours.retake(Modes::private()).unwrap();
        assert!(ours.intact());
        // Another session's lock renamed over ours.
        let other_path = dir.path().join(".tc-session/other");
        let other = Lock::take(&other_path, Modes::private()).unwrap();
        std::fs::rename(&other_path, &path).unwrap();
        assert!(!ours.intact());
        let e = ours.retake(Modes::private()).err().unwrap().to_string();
        assert!(e.contains("is in use by another tc session"), "{e}");
        drop(other);
    }

    #[test]
    fn the_holder_is_read_from_proc_locks() {
        let file = LockedFile {
            major: 0xfe,
            minor: 0,
            ino: 10010739,
            pid_in_file: Some(5864),
        };
        let table: &[(&str, Option<u32>)] = &[
            (
                "1: FLOCK  ADVISORY  WRITE 5864 fe:00:10010739 0 EOF\n",
                Some(5864),
            ),
            // Another file, or a shared lock, or a waiter: not the holder.
            (
                "1: FLOCK  ADVISORY  WRITE 5864 fe:00:10010740 0 EOF\n",
                None,
            ),
            ("1: FLOCK  ADVISORY  READ 5864 fe:00:10010739 0 EOF\n", None),
            (
                "1: POSIX  ADVISORY  WRITE 5864 fe:00:10010739 0 EOF\n",
                None,
            ),
            (
                "1: -> FLOCK  ADVISORY  WRITE 77 fe:00:10010739 0 EOF\n",
                None,
            ),
            // Among others; the PID as the kernel says, even when the file names another.
            (
                "1: POSIX  ADVISORY  WRITE 1 08:01:5 0 EOF\n\
                 2: FLOCK  ADVISORY  WRITE 99 fe:00:10010739 0 EOF\n",
                Some(99),
            ),
            // overlayfs: the layer below's device, the same inode, the PID the file names.
            (
                "1: FLOCK  ADVISORY  WRITE 5864 00:2f:10010739 0 EOF\n",
                Some(5864),
            ),
            ("1: FLOCK  ADVISORY  WRITE 12 00:2f:10010739 0 EOF\n", None),
            // A holder in a PID namespace this one cannot see.
            (
                "1: FLOCK  ADVISORY  WRITE 0 fe:00:10010739 0 EOF\n",
                Some(0),
            ),
            ("", None),
            ("garbage\n1:\n", None),
        ];
        for (text, want) in table {
            assert_eq!(flock_holder(text, &file).map(|h| h.pid), *want, "{text:?}");
        }
    }

    /// `tc session status` asks while sessions come and go: it never makes a session's lock
    /// fail (it takes none), and it sees the holder exactly while one holds it.
    #[test]
    fn asking_for_the_holder_never_stands_in_a_sessions_way() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".tc-session/lock");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        assert_eq!(lock_holder(&path).unwrap(), None, "no lock file yet");
        assert!(!path.exists(), "asking made the lock file");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let asker = {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut asked = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = lock_holder(&path).unwrap();
                    asked += 1;
                }
                asked
            })
        };
        for _ in 0..200 {
            let held = Lock::take(&path, Modes::private()).expect("the lock, whatever is asked");
            let pid = std::process::id();
            assert_eq!(lock_holder(&path).unwrap(), Some(Holder { pid }));
            drop(held);
            assert_eq!(lock_holder(&path).unwrap(), None);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(asker.join().unwrap() > 0);
    }

    #[test]
    fn a_journal_being_written_is_read_to_its_last_whole_line() {
        let line = |d: &str| {
            let j = Journal {
                device: d.into(),
                step: super::super::core::Step::Armed,
                rounds: 0,
                cpe_capturing: true,
                filename: None,
            };
            String::from_utf8(journal_line(&j)).unwrap()
        };
        let (a, b) = (line("a"), line("b"));
        let table: &[(String, &[&str])] = &[
            (String::new(), &[]),
            (format!("{a}{b}"), &["a", "b"]),
            (format!("{a}{}", &b[..10]), &["a"]),
            (format!("{a}not json\n{b}"), &["a", "b"]),
            // A whole line cut short by a crash, then written on after it.
            (format!("{}\n{b}", &a[..10]), &["b"]),
        ];
        for (text, want) in table {
            let got: Vec<String> = parse_journal(text.as_bytes())
                .into_iter()
                .map(|j| j.device)
                .collect();
            assert_eq!(&got, want, "{text:?}");
        }
        assert!(is_plain_name("10.0.0.1") && is_plain_name("sbc-1.example.com"));
        for bad in ["", ".", "..", "a/b", "../x", "a\0b"] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
    }

    /// Review of issue 17, item 9: a line a crash cut short is cut off when the file is opened
    /// again (it was kept, and the next line glued to it).
    #[test]
    fn a_cut_last_line_is_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        // (file as the crash left it, after open and one line more)
        let long = "x".repeat(10_000);
        let table: &[(String, String)] = &[
            ("a\nb\n".into(), "a\nb\nc\n".into()),
            ("a\nb\n{\"dev".into(), "a\nb\nc\n".into()),
            ("{\"dev".into(), "c\n".into()),
            (format!("a\n{long}"), "a\nc\n".into()),
            (String::new(), "c\n".into()),
        ];
        for (before, after) in table {
            std::fs::write(&path, before).unwrap();
            let mut l = Lines::open(&path, Modes::private()).unwrap();
            l.push(b"c\n".to_vec());
            assert_eq!(
                &std::fs::read_to_string(&path).unwrap(),
                after,
                "{before:?}"
            );
        }
    }

    #[test]
    fn a_deleted_file_is_noticed_and_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let path = out.join("report.csv");
        let mut r = {
            std::fs::create_dir_all(&out).unwrap();
            Report::open(&path, Modes::private()).unwrap()
        };
        r.row(["t", "10.0.0.1", "register", "ok", "200", "200 OK", "", ""]);
        assert!(!r.lines.replaced());
        std::fs::remove_dir_all(&out).unwrap();
        assert!(r.lines.replaced());
        r.row([
            "t",
            "10.0.0.1",
            "cpe_start",
            "ok",
            "",
            "a, \"quoted\" text",
            "",
            "",
        ]);
        r.recreate().unwrap();
        assert!(!r.lines.replaced());
        // Written under another name and renamed into place: nothing else is left there.
        let names: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["report.csv"]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!(
                "{REPORT_HEADER}t,10.0.0.1,register,ok,200,200 OK,,\n\
                 t,10.0.0.1,cpe_start,ok,,\"a, \"\"quoted\"\" text\",,\n"
            )
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
