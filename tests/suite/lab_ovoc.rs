//! `tc lab up` as an OVOC server to fetch from: the agent's directory is one more chroot of the
//! lab's sshd, reached at the agent's address with the lab's generated key and nothing else.

use std::io::Read;
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::ovoc::{cpe_name, final_code, ovoc_files, Agent};
use crate::harness::*;

/// OpenSSH's `sftp` running `batch`, as a script would: the lab's key, its known_hosts and
/// nothing from the machine's SSH configuration.
fn sftp(lab: &Lab, addr: &str, port: &str, batch: &str, work: &Path) -> Run {
    let batch_file = work.join(format!("batch-{}", unique()));
    std::fs::write(&batch_file, batch).unwrap();
    let mut c = Command::new("sftp");
    c.args(["-F", "/dev/null", "-i"])
        .arg(&lab.env["TC_OVOC_SSH_KEY"]);
    for opt in [
        format!("UserKnownHostsFile={}", lab.env["TC_KNOWN_HOSTS"]),
        "GlobalKnownHostsFile=/dev/null".into(),
        "StrictHostKeyChecking=yes".into(),
        "IdentitiesOnly=yes".into(),
        "BatchMode=yes".into(),
        "ConnectTimeout=10".into(),
    ] {
        c.arg("-o").arg(opt);
    }
    c.args(["-P", port, "-b"]).arg(&batch_file);
    c.arg(format!("{}@{addr}", lab.env["TC_OVOC_SSH_USER"]));
    c.env("HOME", work);
    run_text(c)
}

/// A libssh2 session (the fetch's library) to `addr`, before authentication.
fn session(addr: &str, port: &str) -> ssh2::Session {
    let tcp = TcpStream::connect(format!("{addr}:{port}")).unwrap();
    let mut s = ssh2::Session::new().unwrap();
    s.set_timeout(10_000);
    s.set_tcp_stream(tcp);
    s.handshake().unwrap();
    s
}

fn sftp_get(s: &ssh2::Session, remote: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    s.sftp()
        .unwrap()
        .open(remote)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, sftp): as root, cargo test -- --include-ignored"]
fn lab_serves_the_agents_captures_over_sftp_by_key_only() {
    require_lab();
    require("sftp");
    let mut lab = Lab::up(1, &[]);
    let work = tempfile::tempdir().unwrap();
    let agent_dir = lab.agent_dir();
    let agent_ip = lab.ovoc_agent_addr();
    let chroot = Path::new(lab.ready["sftp_root"].as_str().unwrap()).join(&agent_ip);
    assert_eq!(agent_dir, chroot.join("captures"));
    assert_eq!(lab.env["TC_LAB_AGENT_DIR"], agent_dir.display().to_string());
    assert_eq!(lab.env["TC_OVOC_DIR"], "/captures");
    assert_eq!(lab.env["TC_OVOC_SSH_USER"], lab.user);
    let key = PathBuf::from(&lab.env["TC_OVOC_SSH_KEY"]);
    assert!(key.starts_with(lab.path()), "{}", key.display());
    assert_eq!(std::fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
    let port = lab.env["TC_OVOC_SSH_PORT"].clone();
    assert_eq!(port, lab.ready["ssh_port"].to_string());
    let md = std::fs::metadata(&chroot).unwrap();
    assert_eq!(
        (md.uid(), md.mode() & 0o7777),
        (0, 0o755),
        "sshd's chroot rule"
    );

    // A real capture: the agent gives its DIR to tcpdump's user, tcpdump writes the file.
    let mut agent = Agent::start(&lab, &agent_dir, &[]);
    let dev = lab.devices()[0].clone();
    for verb in ["REGISTER", "CAPTURE", "VERIFY"] {
        assert_eq!(
            final_code(&agent.send(&lab, verb, &dev, None)),
            200,
            "{verb}"
        );
    }
    let stop = agent.send(&lab, "STOP", &dev, Some(&cpe_name(&dev, 1)));
    assert_eq!(final_code(&stop), 200, "{}", stop.dump());
    let files = ovoc_files(&agent_dir, &dev);
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
    let on_host = std::fs::read(&files[0]).unwrap();
    assert!(capinfos_packets(&files)[0] > 0);
    let dir_md = std::fs::metadata(&agent_dir).unwrap();
    let file_md = std::fs::metadata(&files[0]).unwrap();
    if have("tcpdump")
        && Command::new("id")
            .arg("tcpdump")
            .output()
            .unwrap()
            .status
            .success()
    {
        assert_eq!(dir_md.mode() & 0o777, 0o750, "the agent's DIR");
        assert_ne!(dir_md.uid(), 0, "DIR belongs to tcpdump's user");
        assert_eq!(file_md.uid(), dir_md.uid(), "tcpdump wrote the file");
    }

    // OpenSSH's sftp with the lab's key and known_hosts (host key checked): the same bytes.
    let local = work.path().join("fetched.pcap");
    let r = sftp(
        &lab,
        &agent_ip,
        &port,
        &format!("get /captures/{name} {}\n", local.display()),
        work.path(),
    );
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(std::fs::read(&local).unwrap(), on_host);

    // libssh2, as tc's fetch logs in: the key file, no passphrase.
    let user = &lab.env["TC_OVOC_SSH_USER"];
    let s = session(&agent_ip, &port);
    assert_eq!(s.auth_methods(user).unwrap(), "publickey");
    s.userauth_pubkey_file(user, None, &key, None).unwrap();
    assert_eq!(sftp_get(&s, &Path::new("/captures").join(&name)), on_host);

    // The device password opens no OVOC login.
    let s = session(&agent_ip, &port);
    let err = s
        .userauth_password(user, &lab.env["TC_CPE_PASSWORD"])
        .unwrap_err();
    assert!(!s.authenticated(), "{err}");

    // The OVOC key opens no device, where the password still does.
    let r = sftp(&lab, &dev, &port, "ls /\n", work.path());
    assert_ne!(r.code, 0, "{}", r.dump());
    assert!(r.stderr.contains("Permission denied"), "{}", r.dump());
    let s = session(&dev, &port);
    assert!(s.userauth_pubkey_file(user, None, &key, None).is_err());
    let s = session(&dev, &port);
    s.userauth_password(user, &lab.env["TC_CPE_PASSWORD"])
        .unwrap();
    assert!(!sftp_get(&s, Path::new("/debug-capture/debug-capture-data.pcap")).is_empty());

    // Stopping the lab removes the chroot with the captures and the key.
    assert_eq!(agent.terminate(), 0);
    lab.stop();
    assert!(!chroot.exists(), "{}", chroot.display());
    assert!(!key.exists(), "{}", key.display());
    assert!(!Path::new(lab.ready["sftp_root"].as_str().unwrap()).exists());
}

#[test]
#[ignore = "needs root and the lab's tools (sshd, tcpdump, tshark, snmpd, sftp): as root, cargo test -- --include-ignored"]
fn lab_ovoc_login_goes_around_the_cutting_proxy() {
    require_lab();
    require("sftp");
    let lab = Lab::up(1, &["--cut-sftp-after", "100000"]);
    let work = tempfile::tempdir().unwrap();
    // The proxy forwards the devices' addresses only: the OVOC login uses sshd's own port, and
    // known_hosts names the agent's address at that port.
    let port = lab.env["TC_OVOC_SSH_PORT"].clone();
    assert_ne!(port, lab.ready["ssh_port"].to_string());
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(lab.agent_dir().join("OVOC_x-0.pcap"), &bytes).unwrap();
    let local = work.path().join("x.pcap");
    let r = sftp(
        &lab,
        &lab.ovoc_agent_addr(),
        &port,
        &format!("get /captures/OVOC_x-0.pcap {}\n", local.display()),
        work.path(),
    );
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(std::fs::read(&local).unwrap(), bytes, "not cut");
}
