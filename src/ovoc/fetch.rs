//! `tc ovoc fetch` and the session's collection: a round's OVOC files (`OVOC_<base>-<n>.pcap`,
//! every file of the agent's ring) downloaded from the OVOC server over SFTP, with a key (or an
//! ssh-agent, or a password), by the same fetch as a CPE's capture (`crate::sftp`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::{OvocFetchArgs, OvocSshArgs};
use crate::emit::emit;
use crate::error::{Error, ExitCode, Result};
use crate::event::Event;
use crate::secret::{self, Secret};
use crate::sftp::{self, Auth};
use crate::util::Modes;

/// How the OVOC server is logged in to, resolved once.
pub enum Login {
    Key {
        path: PathBuf,
        passphrase: Option<Secret>,
    },
    Agent,
    Password(Secret),
}

impl Login {
    fn auth(&self) -> Auth<'_> {
        match self {
            Login::Key { path, passphrase } => Auth::Key {
                path,
                passphrase: passphrase.as_ref(),
            },
            Login::Agent => Auth::Agent,
            Login::Password(p) => Auth::Password(p),
        }
    }
}

/// Where a round's OVOC files are, and how to fetch them (one per OVOC server).
pub struct Source {
    pub user: String,
    pub port: u16,
    pub login: Login,
    /// The agent's directory as the SFTP login sees it.
    pub dir: String,
    pub known_hosts: PathBuf,
    pub accept_new: bool,
    pub timeout: Duration,
    /// Attempts after the first, per listing and per file.
    pub retries: u32,
    pub modes: Modes,
}

/// The login, in order: `--ovoc-ssh-key` (its passphrase from TC_OVOC_SSH_KEY_PASSPHRASE), a
/// password given by file or TC_OVOC_SSH_PASSWORD, the ssh-agent (SSH_AUTH_SOCK), a password
/// typed at the terminal.
pub fn resolve_login(a: &OvocSshArgs, env: &secret::Env) -> Result<Login> {
    if let Some(path) = &a.ovoc_ssh_key {
        // Read now, not at the first collection hours later (whether its passphrase is right
        // only a login can tell).
        std::fs::File::open(path)
            .map_err(|e| Error::usage(format!("--ovoc-ssh-key {}: {e}", path.display())))?;
        return Ok(Login::Key {
            path: path.clone(),
            passphrase: env.secret("TC_OVOC_SSH_KEY_PASSPHRASE"),
        });
    }
    let given = a.ovoc_ssh_password_file.is_some() || env.var("TC_OVOC_SSH_PASSWORD").is_some();
    if !given && env.var("SSH_AUTH_SOCK").is_some_and(|s| !s.is_empty()) {
        return Ok(Login::Agent);
    }
    let src = secret::Source {
        what: "OVOC SSH password",
        file: a.ovoc_ssh_password_file.as_deref(),
        env: "TC_OVOC_SSH_PASSWORD",
        file_flag: "--ovoc-ssh-password-file",
    };
    secret::resolve(&src, env)
        .map(Login::Password)
        .map_err(|e| {
            if given {
                // A password file that cannot be read, an empty variable: that is the problem.
                return e;
            }
            Error::usage(
                "no OVOC SSH login: give --ovoc-ssh-key FILE, run an ssh-agent (SSH_AUTH_SOCK), \
             or give a password (TC_OVOC_SSH_PASSWORD, --ovoc-ssh-password-file FILE, or a \
             terminal to be prompted)",
            )
        })
}

/// The remote directory as given: absolute or relative to the login's home (the original agent
/// writes to `./captures` of wherever it was started), never with control characters.
pub fn validate_dir(dir: &str) -> std::result::Result<(), String> {
    if dir.is_empty() || dir.len() > 4096 {
        return Err(format!("--ovoc-dir {dir:?}: give a directory"));
    }
    if dir.chars().any(char::is_control) {
        return Err(format!("--ovoc-dir {dir:?}: control characters"));
    }
    Ok(())
}

/// Whether `name` is one of the ring files the agent made of `base` at STOP:
/// `OVOC_<base>-<n>.pcap`, n decimal.
pub fn is_ring_file(name: &str, base: &str) -> bool {
    name.strip_prefix("OVOC_")
        .and_then(|r| r.strip_prefix(base))
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|r| r.strip_suffix(".pcap"))
        .is_some_and(|n| !n.is_empty() && n.len() <= 6 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The ring files' names in ring order (by their number).
fn ring_order(mut names: Vec<String>) -> Vec<String> {
    let number = |n: &String| {
        n.rsplit('-')
            .next()
            .and_then(|t| t.strip_suffix(".pcap"))
            .and_then(|t| t.parse::<u32>().ok())
            .unwrap_or(u32::MAX)
    };
    names.sort_by_key(|n| (number(n), n.clone()));
    names
}

/// The device a CPE file name names: `CPE_device_<device>_<time>.pcap`.
pub fn device_of_file(cpe_file: &str) -> Option<&str> {
    let rest = cpe_file.strip_prefix("CPE_device_")?;
    rest.rsplit_once('_')
        .map(|(d, _)| d)
        .filter(|d| !d.is_empty())
}

fn join_remote(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Every OVOC file of the round whose CPE file is `cpe_file`, from `server` into `out`: one
/// `ovoc.fetched` event each, in ring order. An error says whether trying again may help
/// (`(true, why)`: the server was unreachable) or not (`(false, why)`: refused, or no such files:
/// the agent renamed them at STOP, before this is asked).
pub fn collect(
    src: &Source,
    server: &str,
    device: &str,
    cpe_file: &str,
    out: &Path,
) -> std::result::Result<Vec<Event>, (bool, String)> {
    crate::proto::validate_filename(cpe_file).map_err(|e| (false, e))?;
    let base = crate::proto::ovoc_base(cpe_file);
    // One login for the listing and every file (a retry of a file logs in afresh).
    let listing = spec(src, (server, device), out, "", sftp::Local::Cpe, None);
    let (sess, names) = list_with_retries(&listing, src, &base)?;
    if names.is_empty() {
        return Err((
            false,
            format!(
                "{server}: no OVOC files OVOC_{base}-<n>.pcap in {}",
                src.dir
            ),
        ));
    }
    let mut events = Vec::new();
    // Given up once a file needed another attempt: that session may be what failed.
    let mut shared = Some(&sess);
    for name in ring_order(names) {
        let remote = join_remote(&src.dir, &name);
        let one = spec(
            src,
            (server, device),
            out,
            &remote,
            sftp::Local::Named(&name),
            shared,
        );
        let f = sftp::fetch_or_why(&one)?;
        if f.attempts > 1 {
            shared = None;
        }
        sftp::Fetched::done(&f.part);
        events.push(Event::OvocFetched {
            server: server.to_string(),
            device: device.to_string(),
            path: f.path.display().to_string(),
            remote_path: remote.clone(),
            bytes: f.bytes,
            sha256: f.sha256,
            seconds: f.seconds,
            attempts: f.attempts,
        });
    }
    let _ = sess.disconnect(None, "done", None);
    Ok(events)
}

fn spec<'a>(
    src: &'a Source,
    (server, device): (&'a str, &'a str),
    out: &'a Path,
    remote: &'a str,
    local: sftp::Local<'a>,
    session: Option<&'a ssh2::Session>,
) -> sftp::Spec<'a> {
    sftp::Spec {
        session,
        host: server,
        label: device,
        port: src.port,
        user: &src.user,
        auth: src.login.auth(),
        remote,
        local,
        out_dir: out,
        known_hosts: &src.known_hosts,
        accept_new: src.accept_new,
        timeout: src.timeout,
        retries: src.retries,
        modes: src.modes,
    }
}

fn list_with_retries(
    spec: &sftp::Spec,
    src: &Source,
    base: &str,
) -> std::result::Result<(ssh2::Session, Vec<String>), (bool, String)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let listed = sftp::connect(spec).and_then(|sess| {
            let names = sftp::list(&sess, spec, &src.dir, |n| is_ring_file(n, base))?;
            Ok((sess, names))
        });
        match listed {
            Ok(found) => return Ok(found),
            Err((true, e)) if attempt <= src.retries => {
                log::info!("{}: listing attempt {attempt}: {e}", spec.host);
                std::thread::sleep(Duration::from_millis(500 * u64::from(attempt.min(8))));
            }
            Err(e) => return Err(e),
        }
    }
}

/// `tc ovoc fetch`: one round's OVOC files of one device.
pub fn run(a: OvocFetchArgs) -> Result<ExitCode> {
    crate::proto::validate_filename(&a.file).map_err(Error::usage)?;
    crate::netaddr::validate_host(&a.server, "--server").map_err(Error::usage)?;
    let server = a.server.clone();
    validate_dir(&a.ssh.ovoc_dir).map_err(Error::usage)?;
    let env = secret::Env::process();
    let src = Source {
        user: a.ssh.ovoc_ssh_user.clone(),
        port: a.ssh.ovoc_ssh_port,
        login: resolve_login(&a.ssh, &env)?,
        dir: a.ssh.ovoc_dir.clone(),
        known_hosts: a
            .known_hosts
            .clone()
            .unwrap_or_else(crate::cpe::run::default_known_hosts),
        accept_new: a.accept_new_host_key,
        timeout: a.timeout,
        retries: a.retries,
        modes: Modes::private(),
    };
    let device = device_of_file(&a.file).unwrap_or_default().to_string();
    let got = collect(&src, &server, &device, &a.file, &a.out);
    crate::progress::finish();
    match got {
        Ok(events) => {
            for e in &events {
                emit(e);
            }
            Ok(ExitCode::Ok)
        }
        Err((_, e)) => {
            emit(&Event::OvocFetchError {
                server: server.clone(),
                file: a.file.clone(),
                error: e.clone(),
            });
            Err(Error::failed(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_files_of_a_round_and_nothing_else() {
        let base = "device_10.0.0.1_2026-12-02T07.42.13.899869";
        let cases = [
            (
                "OVOC_device_10.0.0.1_2026-12-02T07.42.13.899869-0.pcap",
                true,
            ),
            (
                "OVOC_device_10.0.0.1_2026-12-02T07.42.13.899869-12.pcap",
                true,
            ),
            // Another round, another device, the agent's own temporary names.
            (
                "OVOC_device_10.0.0.1_2026-12-02T07.50.00.000000-0.pcap",
                false,
            ),
            (
                "OVOC_device_10.0.0.11_2026-12-02T07.42.13.899869-0.pcap",
                false,
            ),
            (
                "tmp_device_10.0.0.1_2026-12-02T07.42.13.899869.pcap0",
                false,
            ),
            (
                "OVOC_device_10.0.0.1_2026-12-02T07.42.13.899869-.pcap",
                false,
            ),
            (
                "OVOC_device_10.0.0.1_2026-12-02T07.42.13.899869-0x.pcap",
                false,
            ),
            (
                "OVOC_device_10.0.0.1_2026-12-02T07.42.13.899869-0.pcap.part",
                false,
            ),
            (
                "OVOC_device_10.0.0.1_2026-12-02T07.42.13.899869-1234567.pcap",
                false,
            ),
        ];
        for (name, want) in cases {
            assert_eq!(is_ring_file(name, base), want, "{name}");
        }
    }

    #[test]
    fn the_device_of_a_cpe_file() {
        let cases = [
            (
                "CPE_device_10.0.0.1_2026-12-02T07.42.13.899869.pcap",
                Some("10.0.0.1"),
            ),
            (
                "CPE_device_cpe-7.example.net_2026-12-02T07.42.13.899869.pcap",
                Some("cpe-7.example.net"),
            ),
            (
                "CPE_device_2001:db8::1_2026-12-02T07.42.13.899869.pcap",
                Some("2001:db8::1"),
            ),
            ("CPE_device__x.pcap", None),
            ("capture.pcap", None),
        ];
        for (name, want) in cases {
            assert_eq!(device_of_file(name), want, "{name}");
        }
    }

    #[test]
    fn ring_order_is_numeric() {
        let names = ["OVOC_x-10.pcap", "OVOC_x-2.pcap", "OVOC_x-0.pcap"];
        let got = ring_order(names.iter().map(|s| s.to_string()).collect());
        assert_eq!(got, ["OVOC_x-0.pcap", "OVOC_x-2.pcap", "OVOC_x-10.pcap"]);
    }

    #[test]
    fn remote_paths_and_dirs() {
        assert_eq!(join_remote("/captures", "a"), "/captures/a");
        assert_eq!(join_remote("captures/", "a"), "captures/a");
        assert!(validate_dir("/var/lib/tc-ovoc").is_ok());
        assert!(validate_dir("captures").is_ok());
        assert!(validate_dir("").is_err());
        assert!(validate_dir("/tmp/\nx").is_err());
    }

    fn ssh(key: Option<&str>, password_file: Option<&str>) -> OvocSshArgs {
        OvocSshArgs {
            ovoc_ssh_user: "root".into(),
            ovoc_ssh_port: 22,
            ovoc_ssh_key: key.map(PathBuf::from),
            ovoc_ssh_password_file: password_file.map(PathBuf::from),
            ovoc_dir: "/var/lib/tc-ovoc".into(),
        }
    }

    #[test]
    fn the_login_is_chosen_in_order() {
        let key = tempfile::NamedTempFile::new().unwrap();
        let key = key.path().to_str().unwrap();
        let agent = [("SSH_AUTH_SOCK", "/run/agent.sock")];
        let both = [
            ("SSH_AUTH_SOCK", "/run/agent.sock"),
            ("TC_OVOC_SSH_PASSWORD", "pw"),
        ];
        let kind = |l: Result<Login>| match l {
            Ok(Login::Key { .. }) => "key",
            Ok(Login::Agent) => "agent",
            Ok(Login::Password(_)) => "password",
            Err(_) => "error",
        };
        type Case<'a> = (OvocSshArgs, &'a [(&'a str, &'a str)], &'a str);
        let cases: [Case; 5] = [
            (ssh(Some(key), None), &both, "key"),
            (ssh(None, None), &agent, "agent"),
            (ssh(None, None), &both, "password"),
            (ssh(None, None), &[], "error"),
            (ssh(Some("/nonexistent/key"), None), &agent, "error"),
        ];
        for (i, (args, env, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                kind(resolve_login(&args, &secret::Env::of(env))),
                want,
                "case {i}"
            );
        }
    }
}
