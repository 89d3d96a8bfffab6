//! Every system call `tc` makes beyond `std`, through `rustix` (safe wrappers, maintained), so
//! that no other module needs `unsafe`. One call rustix does not wrap, `sync_file_range`, is
//! here too: the crate's only `unsafe` block.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use rustix::process::{Pid, Resource, Signal};

/// Running as root (effective user 0).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// SIGTERM to `pid` (a child we started, or one checked through /proc).
pub fn terminate(pid: u32) -> io::Result<()> {
    send_signal(pid, Signal::TERM)
}

/// SIGKILL to `pid`.
pub fn kill(pid: u32) -> io::Result<()> {
    send_signal(pid, Signal::KILL)
}

fn send_signal(pid: u32, sig: Signal) -> io::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no pid {pid}")))?;
    rustix::process::kill_process(pid, sig).map_err(io::Error::from)
}

/// A process with this PID exists (signal 0: EPERM means it exists and is another user's).
pub fn process_exists(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

/// An exclusive advisory lock on `f`, or false at once if another process holds it.
pub fn try_lock(f: &File) -> bool {
    matches!(lock_exclusive(f), Ok(true))
}

/// An exclusive advisory lock on `f`: false only when another holds it (EWOULDBLOCK); any other
/// failure is the error itself, not a holder that does not exist.
pub fn lock_exclusive(f: &File) -> io::Result<bool> {
    match rustix::fs::flock(f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Gives the calling thread, and only it (Linux keeps a nice value per thread), `nice` as its
/// CPU priority; a failure leaves it as it was.
pub fn set_thread_nice(nice: i32) {
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice) {
        log::debug!("setting this thread's nice value to {nice}: {e}");
    }
}

/// Lift the soft limit on open descriptors to the hard one (a listener and its connections per
/// emulated device; a connection per device fetch).
pub fn raise_fd_limit() {
    let mut r = rustix::process::getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (r.current, r.maximum) {
        if cur < max {
            r.current = Some(max);
            if let Err(e) = rustix::process::setrlimit(Resource::Nofile, r) {
                log::debug!("raising the open-file limit: {e}");
            }
        }
    }
}

/// Bytes an unprivileged writer (tcpdump after -Z) may still use on `path`'s filesystem.
pub fn free_bytes(path: &std::path::Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(path).map_err(io::Error::from)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Random bytes from the kernel, without waiting for the entropy pool (false: none to be had).
pub fn random(buf: &mut [u8]) -> bool {
    matches!(
        rustix::rand::getrandom(&mut *buf, rustix::rand::GetRandomFlags::NONBLOCK),
        Ok(n) if n == buf.len()
    )
}

/// Start writing `f`'s dirty pages back now rather than when the kernel gets to them: a 200 MB
/// download then ends with little left to flush. Advice only; errors do not matter.
pub fn start_writeback(f: &File) {
    use std::os::fd::AsRawFd;
    let fd = f.as_fd().as_raw_fd();
    // rustix does not wrap sync_file_range(2).
    // SAFETY: a plain system call on a descriptor `f` keeps open; no memory is passed.
    #[allow(unsafe_code)]
    unsafe {
        libc::sync_file_range(fd, 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// SIGINT and SIGTERM set the returned flag (for commands that poll it between steps); a second
/// one exits at once with 130.
pub fn install_signals() -> crate::error::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&flag))
            .and_then(|_| signal_hook::flag::register(sig, Arc::clone(&flag)))
            .map_err(|e| crate::error::Error::failed(format!("installing signal handlers: {e}")))?;
    }
    Ok(flag)
}

/// A user's uid and gid from /etc/passwd (the lab's and the agent's system users are local).
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd_entry(&passwd, name)
}

/// A group's gid, by name from /etc/group or as a number.
pub fn group_id(name: &str) -> Option<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Some(gid);
    }
    let group = std::fs::read_to_string("/etc/group").ok()?;
    group.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[0] == name)
            .then(|| f[2].parse().ok())
            .flatten()
    })
}

fn passwd_entry(passwd: &str, name: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == name)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    })
}

/// Runs `f` on a new thread that has entered the network namespace at `ns` (e.g.
/// `/run/netns/NAME`): sockets it creates belong to that namespace for their whole life, so the
/// lab's process serves devices in another namespace without moving itself.
pub fn in_net_namespace<T: Send>(
    ns: &std::path::Path,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    let file =
        File::open(ns).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", ns.display())))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            rustix::thread::move_into_link_name_space(
                file.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review of issue 17, item 10: only EWOULDBLOCK is "held by another"; any other flock
    /// error (here EBADF, from a descriptor that cannot be locked) is reported as itself.
    #[test]
    fn a_lock_error_is_not_a_holder() {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = File::create(&path).unwrap();
        assert!(lock_exclusive(&first).unwrap());
        let second = File::open(&path).unwrap();
        assert!(!lock_exclusive(&second).unwrap(), "held by the first");
        let no_lock = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(&path)
            .unwrap();
        let e = lock_exclusive(&no_lock).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{e}");
    }

    #[test]
    fn passwd_lines() {
        let p = "root:x:0:0:root:/root:/bin/bash\n\
                 tcpdump:x:104:110::/nonexistent:/usr/sbin/nologin\n\
                 broken:x:notanumber:1::/:/bin/false\n";
        assert_eq!(passwd_entry(p, "tcpdump"), Some((104, 110)));
        assert_eq!(passwd_entry(p, "root"), Some((0, 0)));
        assert_eq!(passwd_entry(p, "broken"), None);
        assert_eq!(passwd_entry(p, "tcp"), None);
    }

    #[test]
    fn signals_and_locks() {
        assert!(
            send_signal(0, Signal::TERM).is_err(),
            "pid 0 is the group: refused"
        );
        let f = tempfile::tempfile().unwrap();
        assert!(try_lock(&f));
        let mut b = [0u8; 16];
        assert!(random(&mut b));
    }

    /// The nice value of the calling thread, from /proc (field 19 of its stat).
    fn own_nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[test]
    fn a_thread_lowers_its_own_priority_only() {
        let before = own_nice();
        let inside = std::thread::spawn(|| {
            let start = own_nice();
            set_thread_nice(start + 3);
            (start, own_nice())
        })
        .join()
        .unwrap();
        assert_eq!(inside.1, (inside.0 + 3).min(19), "the thread itself");
        assert_eq!(own_nice(), before, "not the thread that spawned it");
    }
}
