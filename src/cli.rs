//! The command line, as plain data (clap derive only). `--help` and `--version` never touch the
//! environment; the fallible step that reads files, env vars and prompts lives with each command.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Output: one JSON object per line on stdout (see the README's event schema); diagnostics on stderr.
Exit codes: 0 all requested work succeeded, 1 some device or operation failed, 2 usage or
configuration error, 3 `tc session status`: the session is still running, 130 interrupted.
Secrets never go on the command line: TC_CPE_PASSWORD, TC_OVOC_PASSWORD, TC_SNMP_AUTH_KEY and
TC_SNMP_PRIV_KEY come from the environment, from --password-file, or from a terminal prompt.";

#[derive(Debug, Parser)]
#[command(
    name = "tc",
    version = crate_version(),
    about = "Synchronized traffic captures for AudioCodes CPEs and OVOC servers",
    long_about = "Synchronized traffic captures for AudioCodes CPEs (MSBR, Mediant gateways and SBCs) and \
the OVOC servers that manage them: start and stop the device's own debug capture over its REST API, \
fetch the pcap over SFTP, and keep the evidence of which side of the WAN dropped the traffic.\n\n\
Not iproute2's traffic-control tool (also named tc, usually /sbin/tc).",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Progress on stderr (transfers, the session's status line): `auto` when stderr is a
    /// terminal, never in pipes or logs.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto, global = true, value_name = "WHEN")]
    pub progress: ProgressMode,
    #[command(subcommand)]
    pub command: Command,
}

fn crate_version() -> &'static str {
    concat!(env!("CARGO_PKG_VERSION"), " (", env!("TC_GIT_COMMIT"), ")")
}

// Parsed once per run; the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Drive a CPE's own debug capture over its REST API and fetch the pcap over SFTP.
    #[command(subcommand)]
    Cpe(CpeCommand),
    /// The capture agent on each OVOC server, and a client to talk to it.
    #[command(subcommand)]
    Ovoc(OvocCommand),
    /// Receive OVOC's forwarded alarms (syslog over UDP) as JSON lines.
    #[command(subcommand)]
    Alarm(AlarmCommand),
    /// The whole capture workflow for a fleet, unattended: capture both sides until OVOC reports
    /// Connection Lost, then collect and name the evidence; repeat up to --max-events.
    #[command(
        after_help = "Example:\n  \
  tc session --devices fleet.csv --out /srv/captures --max-events 2 --snmp-user CaptureScript \\\n  \
    | jq -c 'select(.type==\"session.task\" and .status!=\"ok\")'\n\n  \
  # both sides in OUT/<device>/<round>/ and a verdict per round\n  \
  tc session --devices fleet.csv --out /srv/captures --collect-ovoc \\\n    \
  --ovoc-ssh-key ~/.ssh/id_ed25519 --ovoc-dir /var/lib/tc-ovoc/captures \\\n    \
  | jq -r 'select(.task==\"analyze\") | \"\\(.device) \\(.verdict)\"'\n\n\
The CSV report (--report, default OUT/report.csv) gets one row per task per device as it finishes.\n\
After a crash or reboot, the same command with --resume continues from OUT/.tc-session/journal.\n\
`tc session status --out OUT` says how a running or finished session stands.",
        args_conflicts_with_subcommands = true,
        subcommand_negates_reqs = true
    )]
    Session(SessionArgs),
    /// Say which side of the WAN lost the traffic: match the CPE's capture against the OVOC
    /// capture of the same device, correct the clocks, and report what never arrived.
    #[command(after_help = "Example:\n  \
  tc analyze --cpe CPE_device_192.0.2.10_2026-11-27T07.42.13.899869.pcap \\\n  \
    --ovoc OVOC_device_192.0.2.10_2026-11-27T07.42.13.899869-0.pcap \\\n  \
    --ovoc OVOC_device_192.0.2.10_2026-11-27T07.42.13.899869-1.pcap --plot timeline.svg \\\n  \
    | jq -r 'select(.type==\"analyze.verdict\").text'\n\n\
Exit codes: 0 the analysis ran (whatever the verdict), 1 an input could not be read, 2 usage.")]
    Analyze(AnalyzeArgs),
    /// One self-contained HTML file for an incident from a session's --out: the devices and
    /// their verdicts, each round's timeline, loss windows, clock offset and files (with
    /// sha256), and the task log.
    #[command(after_help = "Example:\n  \
  tc report --out /srv/captures --html incident-4711.html | jq -r .path\n\n\
The file fetches nothing (no scripts, fonts, stylesheets or links outside it): it can be mailed or
attached to a ticket and opened offline. It can be made while the session runs; it then shows the
session as it stood.

Exit codes: 0 written, 1 it could not be written, 2 usage (no session at --out).")]
    Report(ReportArgs),
    /// Emulated CPEs and OVOC for rehearsals and tests (no production device is touched).
    #[command(subcommand)]
    Lab(LabCommand),
    /// Write the man pages and shell completions (for packaging; output is committed).
    #[command(hide = true)]
    Generate(GenerateArgs),
}

#[derive(Debug, Clone, Args)]
pub struct AnalyzeArgs {
    /// The CPE's capture (pcap or pcapng), as `tc cpe fetch` names it.
    #[arg(long, value_name = "FILE")]
    pub cpe: PathBuf,
    /// An OVOC-side capture file (repeatable: every file of the agent's ring, in any order;
    /// they are put in time order by their packets).
    #[arg(long, value_name = "FILE", required = true)]
    pub ovoc: Vec<PathBuf>,
    /// The device's address in the OVOC capture (default: from the file names tc writes).
    #[arg(long, value_name = "ADDR")]
    pub device: Option<std::net::IpAddr>,
    /// The OVOC server's address as the CPE sees it, if NAT changes it (default: the CPE-side
    /// peer whose packets match the OVOC capture's).
    #[arg(long, value_name = "ADDR")]
    pub ovoc_addr: Option<std::net::IpAddr>,
    /// CPE clock minus OVOC clock (e.g. 1.5s, -250ms, 0), instead of the estimate.
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true, value_parser = parse_signed_duration)]
    pub offset: Option<i64>,
    /// With --offset: the CPE clock's drift in ppm (default 0).
    #[arg(
        long,
        value_name = "PPM",
        requires = "offset",
        allow_hyphen_values = true
    )]
    pub drift_ppm: Option<f64>,
    /// Write one time-aligned pcapng of both captures (CPE times corrected to the OVOC clock;
    /// packets lost in transit carry a comment).
    #[arg(long, value_name = "OUT.pcapng")]
    pub merge: Option<PathBuf>,
    /// Write a timeline (SVG): packets sent and seen per direction, loss windows shaded.
    #[arg(long, value_name = "OUT.svg")]
    pub plot: Option<PathBuf>,
    /// When OVOC raised the alarm (RFC 3339, OVOC clock), marked on the timeline.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub alarm_at: Option<i64>,
}

/// A duration with an optional sign, in nanoseconds.
pub fn parse_signed_duration(s: &str) -> Result<i64, String> {
    let (neg, rest) = match s.trim().strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.trim().strip_prefix('+').unwrap_or(s.trim())),
    };
    let d = crate::util::parse_duration(rest)?;
    let ns =
        i64::try_from(d.as_nanos()).map_err(|_| format!("invalid duration {s:?}: too large"))?;
    Ok(if neg { -ns } else { ns })
}

/// An RFC 3339 time as nanoseconds since the epoch.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let t: jiff::Timestamp = s
        .parse()
        .map_err(|e| format!("invalid time {s:?} (RFC 3339, e.g. 2026-11-27T07:42:13Z): {e}"))?;
    i64::try_from(t.as_nanosecond()).map_err(|_| format!("invalid time {s:?}"))
}

#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// `man` (man/*.1) or `completions` (bash, zsh, fish).
    #[arg(value_parser = ["man", "completions"])]
    pub what: String,
    /// Output directory.
    pub dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum CpeCommand {
    /// Start the debug capture on each device and confirm it is active.
    #[command(
        after_help = "Example:\n  tc cpe start --devices fleet.csv --snmp-user CaptureScript | jq -c 'select(.type==\"cpe.error\")'"
    )]
    Start(StartArgs),
    /// Stop the debug capture on each device and confirm it is not active.
    Stop(TargetArgs),
    /// Report capture state (active or not), product type, version and serial of each device.
    #[command(
        after_help = "Example:\n  tc cpe status --device 192.0.2.10 | jq -r '\"\\(.device) \\(.active)\"'"
    )]
    Status(TargetArgs),
    /// Download each device's capture file over SFTP (stop the capture first).
    #[command(
        after_help = "Example:\n  tc cpe stop --devices fleet.csv && tc cpe fetch --devices fleet.csv --out captures/ | jq -r 'select(.type==\"cpe.fetched\").path'"
    )]
    Fetch(FetchArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceType {
    /// MSBR router: data-plane capture on the chosen WAN/LAN interfaces.
    Msbr,
    /// Mediant gateway or SBC: VoIP-plane capture on eth-lan.
    Gwsbc,
}

impl DeviceType {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceType::Msbr => "msbr",
            DeviceType::Gwsbc => "gwsbc",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// A device address or host name (repeatable).
    #[arg(
        long = "device",
        value_name = "HOST",
        required_unless_present = "devices"
    )]
    pub device: Vec<String>,
    /// CSV inventory: header device,type,interfaces,username,ovoc[,rest_port,ssh_port,pin_sha256].
    #[arg(long, value_name = "FILE", conflicts_with = "device")]
    pub devices: Option<PathBuf>,
    /// Device type; read from the device's productType when absent.
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    pub device_type: Option<DeviceType>,
    /// MSBR capture interface (repeatable): cellular-wan, fiber-wan, xdsl-wan, shdsl-wan, t1-e1-wan,
    /// eth-wan, eth-lan. Gateways and SBCs always use eth-lan.
    #[arg(long = "interface", value_name = "IF")]
    pub interface: Vec<String>,
    /// Device user (Administrator level for start/stop; the inventory's username column wins).
    #[arg(long, env = "TC_CPE_USER", default_value = "Admin")]
    pub username: String,
    /// Read the device password from FILE (else TC_CPE_PASSWORD, else a terminal prompt).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Device REST API (HTTPS) port, unless the inventory says otherwise.
    #[arg(long, default_value_t = 443)]
    pub rest_port: u16,
    /// Device SSH/SFTP port, unless the inventory says otherwise.
    #[arg(long, default_value_t = 22)]
    pub ssh_port: u16,
    /// Devices worked on at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub jobs: u32,
    /// Retries after a connect error, timeout, 409 or 5xx (never after 400/401/403).
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// Timeout of each request (e.g. 500ms, 10s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// Trust the CA certificates (PEM) in FILE instead of the system's.
    #[arg(long, env = "TC_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Accept only a server certificate whose SHA-256 (hex of the DER) is HEX; suits devices'
    /// self-signed certificates. The inventory's pin_sha256 column sets it per device.
    #[arg(long, value_name = "HEX")]
    pub pin_sha256: Option<String>,
    /// Do not verify TLS certificates at all (warns on stderr).
    #[arg(long, conflicts_with_all = ["ca_cert", "pin_sha256"])]
    pub insecure: bool,
}

#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Also (re)create this SNMPv3 user for probe traffic (keys from TC_SNMP_AUTH_KEY and
    /// TC_SNMP_PRIV_KEY; SHA-1/AES-128). Note that the device's `write` saves its configuration.
    #[arg(long, value_name = "NAME")]
    pub snmp_user: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct FetchArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Directory for the pcaps (CPE_device_<device>_<time>.pcap).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
    /// Remote capture file (default /debug-capture/debug-capture-data.pcap for both types).
    #[arg(long, value_name = "PATH")]
    pub remote_path: Option<String>,
    /// known_hosts file checked (and, with --accept-new-host-key, extended).
    #[arg(long, env = "TC_KNOWN_HOSTS", value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Record the host key of a device never seen before (a changed key is always refused).
    #[arg(long)]
    pub accept_new_host_key: bool,
}

// Parsed once per run; the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum OvocCommand {
    /// Run the capture agent (as root): tcpdump per CPE, OVOC forwarding rules, probes, driven by
    /// the UDP request protocol (REGISTER, CAPTURE, VERIFY, STOP) of trafficCapture 1.0.6.
    #[command(
        after_help = "Example (a systemd unit is in contrib/tc-ovoc.service):\n  \
  TC_OVOC_USER=operator TC_OVOC_PASSWORD=... tc ovoc serve --interface eth0 --allow 10.20.0.0/16 --dir /var/lib/tc-ovoc"
    )]
    Serve(ServeArgs),
    /// Send one request to an agent and print its responses as JSON lines.
    #[command(
        after_help = "Examples:\n  tc ovoc send --server ovoc-1:20001 REGISTER 192.0.2.10\n  \
  tc ovoc send --server ovoc-1 STOP 192.0.2.10 CPE_device_192.0.2.10_2026-11-27T07.42.13.899869.pcap | jq -r .code"
    )]
    Send(SendArgs),
    /// Download one round's OVOC files (every ring file the agent renamed at STOP) from an OVOC
    /// server over SFTP; one `ovoc.fetched` line per file.
    #[command(
        after_help = "The files are the agent's OVOC_<base>-<n>.pcap, where the CPE file is \
CPE_<base>.pcap. A tc ovoc serve agent keeps them in its --dir (default /var/lib/tc-ovoc; the \
systemd unit in contrib/: /var/lib/tc-ovoc/captures); the original trafficCapture agent in \
captures/ under the directory it was started in (give that path, relative to the SSH user's \
home or absolute, as --ovoc-dir).

Examples:
  tc ovoc fetch --server ovoc-1 --ovoc-ssh-key ~/.ssh/id_ed25519 --out cap/ \\
    CPE_device_192.0.2.10_2026-11-27T07.42.13.899869.pcap
  tc ovoc fetch --server ovoc-1 CPE_device_192.0.2.10_2026-11-27T07.42.13.899869.pcap \\
    | jq -r .sha256"
    )]
    Fetch(OvocFetchArgs),
}

/// How the OVOC servers are reached over SSH to collect the agent's files.
#[derive(Debug, Clone, Args)]
pub struct OvocSshArgs {
    /// SSH user on the OVOC servers (it must be able to read the agent's directory: root, or a
    /// member of the tcpdump user's group).
    #[arg(
        long,
        env = "TC_OVOC_SSH_USER",
        default_value = "root",
        value_name = "USER"
    )]
    pub ovoc_ssh_user: String,
    /// SSH port of the OVOC servers.
    #[arg(
        long,
        env = "TC_OVOC_SSH_PORT",
        default_value_t = 22,
        value_name = "PORT"
    )]
    pub ovoc_ssh_port: u16,
    /// Private key for the OVOC login (passphrase from TC_OVOC_SSH_KEY_PASSPHRASE). Without
    /// it: a password from TC_OVOC_SSH_PASSWORD or --ovoc-ssh-password-file, else the
    /// ssh-agent (SSH_AUTH_SOCK), else a prompt on the terminal.
    #[arg(long, env = "TC_OVOC_SSH_KEY", value_name = "FILE")]
    pub ovoc_ssh_key: Option<PathBuf>,
    /// Read the OVOC SSH password from FILE (else TC_OVOC_SSH_PASSWORD).
    #[arg(long, value_name = "FILE")]
    pub ovoc_ssh_password_file: Option<PathBuf>,
    /// The agent's directory on the OVOC servers, as the SSH login sees it: `tc ovoc serve
    /// --dir` (contrib/tc-ovoc.service: /var/lib/tc-ovoc/captures); the original agent's is
    /// `captures` under the directory it was started in.
    #[arg(
        long,
        env = "TC_OVOC_DIR",
        default_value = "/var/lib/tc-ovoc",
        value_name = "DIR"
    )]
    pub ovoc_dir: String,
}

#[derive(Debug, Clone, Args)]
pub struct OvocFetchArgs {
    /// The OVOC server (host name or address) whose agent captured the round.
    #[arg(long, value_name = "HOST")]
    pub server: String,
    /// The round's CPE capture file name (what STOP was sent with).
    #[arg(value_name = "CPE_FILE")]
    pub file: String,
    #[command(flatten)]
    pub ssh: OvocSshArgs,
    /// Directory the files are written to.
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub out: PathBuf,
    /// known_hosts file (default ~/.ssh/known_hosts).
    #[arg(long, env = "TC_KNOWN_HOSTS", value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Record the host key of a server never seen before (a changed key is always refused).
    #[arg(long)]
    pub accept_new_host_key: bool,
    /// Connect and read timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: std::time::Duration,
    /// Attempts after the first, when the server is unreachable or a transfer is cut.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Interface tcpdump captures on (see /proc/net/dev).
    #[arg(long, value_name = "IF")]
    pub interface: String,
    /// UDP address for requests.
    #[arg(long, default_value = "0.0.0.0:20001", value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,
    /// Directory for captures and the agent's state (.tc/).
    #[arg(long, default_value = "/var/lib/tc-ovoc", value_name = "DIR")]
    pub dir: PathBuf,
    /// tcpdump ring: number of files per capture (-W).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub ring_files: u32,
    /// tcpdump ring: size of each file in millions of bytes (-C).
    #[arg(long, default_value_t = 10, value_name = "MB", value_parser = clap::value_parser!(u32).range(1..=100000))]
    pub ring_size: u32,
    /// Kernel capture buffer per capture, in KiB (tcpdump -B). One device's management traffic
    /// needs little; libpcap's 2 MiB default costs 2 GB of kernel memory at 1,000 captures.
    #[arg(long, default_value_t = 512, value_name = "KIB", value_parser = clap::value_parser!(u32).range(64..=1_048_576))]
    pub buffer_size: u32,
    /// Accept requests only from these networks (repeatable, or comma-separated).
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    pub allow: Vec<crate::netaddr::Cidr>,
    /// Accept requests from anywhere (the original's behaviour; the agent runs as root).
    #[arg(long, conflicts_with = "allow")]
    pub allow_any: bool,
    /// OVOC REST API base URL.
    #[arg(
        long,
        env = "TC_OVOC_URL",
        default_value = "https://127.0.0.1/ovoc/v1",
        value_name = "URL"
    )]
    pub ovoc_url: String,
    /// OVOC user (Operator level or above).
    #[arg(long, env = "TC_OVOC_USER", value_name = "USER")]
    pub ovoc_user: Option<String>,
    /// Read the OVOC password from FILE (else TC_OVOC_PASSWORD).
    #[arg(long, value_name = "FILE")]
    pub ovoc_password_file: Option<PathBuf>,
    /// Answer REGISTER without OVOC's REST API (rules set by hand).
    #[arg(long)]
    pub no_ovoc_rules: bool,
    /// Delete a device's forwarding rule after this long without requests and capture.
    #[arg(long, default_value = "2h", value_parser = parse_duration, value_name = "DURATION")]
    pub rule_idle: std::time::Duration,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Probes for VERIFY: any of icmp,snmp,tcp, or all, or none.
    #[arg(long, default_value = "icmp,snmp,tcp", value_name = "LIST")]
    pub probes: String,
    #[command(flatten)]
    pub pacing: ProbePacing,
    /// SNMPv3 user for the probe (keys from TC_SNMP_AUTH_KEY / TC_SNMP_PRIV_KEY).
    #[arg(long, default_value = "CaptureScript", value_name = "NAME")]
    pub snmp_user: String,
    /// tcpdump program.
    #[arg(long, env = "TC_TCPDUMP", value_name = "PATH")]
    pub tcpdump: Option<PathBuf>,
    /// User tcpdump drops privileges to (-Z); DIR is made writable for it. Default: tcpdump if
    /// that user exists, else root.
    #[arg(long, value_name = "USER")]
    pub tcpdump_user: Option<String>,
    /// How long tcpdump may take to report it is capturing.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub start_timeout: std::time::Duration,
    /// From STOP (or the agent's shutdown) to tcpdump's SIGTERM: tcpdump receives packets from
    /// the kernel in blocks handed over up to 1 s after their first packet, so a quicker SIGTERM
    /// loses the capture's last second.
    #[arg(long, default_value = "1500ms", value_parser = parse_duration, value_name = "DURATION")]
    pub stop_flush: std::time::Duration,
    /// After SIGTERM, how long before tcpdump gets SIGKILL.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub stop_grace: std::time::Duration,
    /// Captures at once (starting, running or stopping); CAPTURE past it is answered 503.
    #[arg(long, default_value_t = 1024, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_captures: u32,
    /// Refuse new captures (503) when DIR's filesystem has less free than this. Running
    /// captures end when it is full (tcpdump cannot write).
    #[arg(long, default_value = "1GiB", value_parser = parse_size, value_name = "SIZE")]
    pub min_free: u64,
    /// Refuse new captures (503) when DIR's captures, with every running capture and the new
    /// one at their largest ring, would use more than this. Default: no budget.
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub disk_budget: Option<u64>,
    /// Requests per second from one source address (a burst of twice that is allowed); past
    /// it datagrams are dropped and counted.
    #[arg(long, default_value_t = 1000, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_limit: u32,
    /// VERIFY probe runs at once (all sources); past it VERIFY is answered 503.
    #[arg(long, default_value_t = 32, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_verifies: u32,
    /// New VERIFY probe runs per second (all sources; a burst of --max-verifies is allowed).
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub verify_rate: u32,
    /// Shared key: requests must carry its HMAC-SHA256 (README: authentication), answers to
    /// them carry one too. The file holds at least 16 bytes; it must not be readable by others.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// With --key-file: plain 1.0.6 requests are still accepted from these networks (original
    /// controllers in a mixed fleet). Repeatable, or comma-separated.
    #[arg(
        long,
        value_name = "CIDR",
        value_delimiter = ',',
        requires = "key_file"
    )]
    pub allow_unauthenticated: Vec<crate::netaddr::Cidr>,
}

#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    /// The agent: HOST or HOST:PORT (default port 20001).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub server: String,
    /// REGISTER, CAPTURE, VERIFY or STOP.
    #[arg(value_name = "REQUEST", value_parser = ["REGISTER", "CAPTURE", "VERIFY", "STOP"], ignore_case = true)]
    pub request: String,
    /// The CPE address or host name.
    pub device: String,
    /// STOP only: the CPE capture's file name.
    pub filename: Option<String>,
    /// Local address to send from (the agent answers there; REGISTER points OVOC's rule at it).
    #[arg(long, default_value = "0.0.0.0:0", value_name = "ADDR:PORT")]
    pub bind: std::net::SocketAddr,
    /// How long to wait for the final response.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: std::time::Duration,
    /// The agent's shared key (tc ovoc serve --key-file): the request is signed and only
    /// answers carrying a valid MAC are taken.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// The session's --out.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The HTML file to write.
    #[arg(long, value_name = "FILE.html")]
    pub html: PathBuf,
    /// The session's CSV report, if it was not OUT/report.csv (`tc session --report`).
    #[arg(long, value_name = "FILE.csv")]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum SessionCommand {
    /// How a running or finished session stands, per device: its step, round, when its
    /// captures started, the alarm, its files so far and the verdict. Reads the journal and the
    /// report only: the session is never disturbed.
    #[command(after_help = "Examples:\n  \
  tc session status --out /srv/captures            # a table on a terminal\n  \
  tc session status --out /srv/captures | jq -r 'select(.type==\"session.status\") | .device + \" \" + .step'\n  \
  while tc session status --out /srv/captures >/dev/null; [ $? -eq 3 ]; do sleep 60; done\n\n\
On a terminal an aligned table, else JSON lines: one session.status per device, then a
session.status_summary.

Exit codes: 0 finished, every device done; 1 finished with failures (a device aborted or failed,
or the session was killed before the end); 2 usage (no session at --out); 3 the session is
running.")]
    Status(SessionStatusArgs),
}

#[derive(Debug, Clone, Args)]
pub struct SessionStatusArgs {
    /// The session's --out.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The session's CSV report, if it was not OUT/report.csv (`tc session --report`).
    #[arg(long, value_name = "FILE.csv")]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct SessionArgs {
    #[command(subcommand)]
    pub command: Option<SessionCommand>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// UDP address for agent responses and forwarded alarms (one socket for both).
    #[arg(long, default_value = "0.0.0.0:20001", value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,
    /// The agents' UDP port, unless the inventory's ovoc column names one.
    #[arg(long, default_value_t = 20001)]
    pub ovoc_port: u16,
    /// Agent for devices whose inventory row has no ovoc column value.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub ovoc: Option<String>,
    /// Capture rounds per device (0 = until interrupted).
    #[arg(long, default_value_t = 1)]
    pub max_events: u32,
    /// The shared key of an agent run with --key-file: its requests are signed and only its
    /// signed answers taken (repeatable; agents without one get plain 1.0.6 datagrams).
    #[arg(long, value_name = "AGENT=FILE")]
    pub agent_key: Vec<String>,
    /// REGISTER sends before a device is given up (a REGISTER a tc agent acknowledged is given
    /// up only 60 s after its first `101`, however many sends that takes).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub register_attempts: u32,
    /// `never`: skip REGISTER and start with CAPTURE, for OVOC forwarding rules set by hand and
    /// for 1.0.1 agents, which ignore REGISTER.
    #[arg(long, value_enum, default_value_t = Register::Always)]
    pub register: Register,
    /// Wait between attempts to stop or fetch from an unreachable device.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub fetch_retry_interval: std::time::Duration,
    /// Wait before resending an unanswered request to an agent, doubled per resend up to 8x. A
    /// request answered `100 Trying` is never resent while its final answer may still come
    /// (60 s, VERIFY 120 s; 15 s and twice the probe time from an agent seen to be `tc`).
    #[arg(long, default_value = "3s", value_parser = parse_duration, value_name = "DURATION")]
    pub resend: std::time::Duration,
    /// Most devices whose alarm is handled at once (CPE stop and probes; threads start when
    /// alarms arrive and end when idle). --jobs bounds starts and fetches only.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub alarm_jobs: u32,
    /// Directory for the CPE captures, the journal and (by default) the report.
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub out: PathBuf,
    /// CSV report, appended as tasks finish (default OUT/report.csv).
    #[arg(long, value_name = "FILE.csv")]
    pub report: Option<PathBuf>,
    /// Probes on Connection Lost, from the agent and from here: any of icmp,snmp,tcp, all, none.
    #[arg(long, default_value = "icmp,snmp,tcp", value_name = "LIST")]
    pub probes: String,
    #[command(flatten)]
    pub pacing: ProbePacing,
    /// SNMPv3 user created on each CPE at start and used by the probes (keys from
    /// TC_SNMP_AUTH_KEY / TC_SNMP_PRIV_KEY).
    #[arg(long, value_name = "NAME")]
    pub snmp_user: Option<String>,
    /// known_hosts file for the SFTP fetch.
    #[arg(long, env = "TC_KNOWN_HOSTS", value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Record host keys of devices never seen before (a changed key is always refused).
    #[arg(long)]
    pub accept_new_host_key: bool,
    /// Remote capture file on the devices.
    #[arg(long, value_name = "PATH")]
    pub remote_path: Option<String>,
    /// Continue the session journaled in OUT after a crash or reboot.
    #[arg(long)]
    pub resume: bool,
    /// Who may send alarms (repeatable): a CIDR, or `ovoc` for the addresses of the inventory's
    /// ovoc column (the default when not given). Alarms from anyone else change nothing.
    #[arg(long, value_name = "CIDR|ovoc")]
    pub alarm_from: Vec<String>,
    /// After SIGINT/SIGTERM/SIGHUP, how long stopping captures, fetching, STOP (and with
    /// --collect-ovoc collecting and analysing) may take; then the session exits 130 and says
    /// what is left, which --resume finishes.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub wind_down: std::time::Duration,
    /// Make the captures, report and journal readable by this group (0640, directories 0750)
    /// instead of the owner alone (0600, 0700).
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// After each round's STOP, download its OVOC files from the device's OVOC server over
    /// SFTP and analyse both sides: OUT/<device>/<round>/ holds the CPE file, the OVOC files,
    /// analysis.jsonl, merged.pcapng and timeline.svg; the verdict is in the report.
    #[arg(long)]
    pub collect_ovoc: bool,
    #[command(flatten)]
    pub ovoc_ssh: OvocSshArgs,
}

/// How the probes of a VERIFY are spread: they exist to put traffic into both captures after
/// the alarm, so they keep going for a while (the original: 10 of each kind, one a second).
#[derive(Debug, Clone, Args)]
pub struct ProbePacing {
    /// Probes of each kind per VERIFY.
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub probe_count: u32,
    /// Between two probes of one kind; each waits for its answer until the next is due (the last
    /// one 2 s).
    #[arg(long, default_value = "1s", value_parser = parse_probe_interval, value_name = "DURATION")]
    pub probe_interval: std::time::Duration,
}

fn parse_probe_interval(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(s)?;
    if d < std::time::Duration::from_millis(10) || d > std::time::Duration::from_secs(60) {
        return Err(format!("{s:?}: give 10ms to 60s"));
    }
    Ok(d)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Register {
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum AlarmCommand {
    /// Listen for forwarded alarms; print each as an `alarm` line (others as `syslog.unparsed`).
    #[command(after_help = "Examples:\n  \
  # wait for the first Connection Lost of one device, then stop its capture\n  \
  tc alarm listen --device 192.0.2.10 --alarm 'Connection Alarm' --description 'Connection Lost' --count 1 --timeout 2h \\\n  \
    && tc cpe stop --device 192.0.2.10\n\n  \
  # every alarm of the fleet, one line each\n  \
  tc alarm listen --from 10.0.0.5 | jq -r '\"\\(.device) \\(.alarm) \\(.description)\"'")]
    Listen(AlarmListenArgs),
}

#[derive(Debug, Clone, Args)]
pub struct AlarmListenArgs {
    /// UDP address to receive syslog on (OVOC's forwarding rule points here).
    #[arg(long, default_value = "0.0.0.0:20001", value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,
    /// Only alarms with this name, case-insensitive (repeatable).
    #[arg(long, value_name = "NAME")]
    pub alarm: Vec<String>,
    /// Only alarms with this description, case-insensitive (repeatable).
    #[arg(long, value_name = "TEXT")]
    pub description: Vec<String>,
    /// Only alarms for this device address (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub device: Vec<String>,
    /// Accept datagrams only from these networks (repeatable, or comma-separated); others are
    /// counted and dropped.
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    pub from: Vec<crate::netaddr::Cidr>,
    /// Exit 0 after N matching alarms.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Exit 1 if fewer than --count (or no) alarms matched within DURATION.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// Count lines that are not alarms instead of printing them.
    #[arg(long)]
    pub quiet_unparsed: bool,
    /// Benchmark baseline: receive and count datagrams without parsing or printing them.
    #[arg(long, hide = true)]
    pub bare: bool,
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Serve emulated CPEs (REST over HTTPS, SFTP via a real sshd) until SIGINT/SIGTERM.
    #[command(
        after_help = "Example:\n  sudo tc lab up --dir /var/lib/tc-lab --devices 3 &\n  . /var/lib/tc-lab/env && tc cpe status --devices /var/lib/tc-lab/devices.csv"
    )]
    Up(LabUpArgs),
    /// Make the lab's emulated OVOC forward an alarm for DEVICE to the destination of the rule an
    /// agent registered for it ("Connection Lost", or "Connection established" with --clear).
    #[command(after_help = "Example:\n  tc lab alarm --dir /tmp/tc-lab 127.0.1.1")]
    Alarm(LabAlarmArgs),
    /// A complete session in one command: emulated CPEs behind a real router, the emulated OVOC
    /// polling them, a real agent with real tcpdump, `tc session`, traffic, a fault injected on
    /// the WAN, OVOC's Connection Lost, and each device's verdict. Needs root.
    #[command(
        after_help = "Examples:\n  sudo tc lab demo --devices 3   # then look in the directory it names\n  sudo tc lab demo --fault cpe-to-ovoc --nat --clock-offset 3.5s"
    )]
    Demo(LabDemoArgs),
    /// Make an emulated device's REST API unreachable for a while (requests get no answer)
    /// (fault injection for rehearsals).
    Down(LabDownArgs),
    /// Inject a fault on a `tc lab up --wan` lab: drop at its router what OVOC sends to DEVICE,
    /// what DEVICE sends, or both, or silence DEVICE's SNMP agent; for a while or until
    /// --restore. Needs root, like the lab.
    #[command(
        after_help = "Examples:\n  tc lab wan --dir /tmp/tc-lab 198.19.1.1 --drop to-device --for 20s\n  tc lab wan --dir /tmp/tc-lab 198.19.1.1 --silent\n  tc lab wan --dir /tmp/tc-lab 198.19.1.1 --restore"
    )]
    Wan(LabWanArgs),
    /// Remove what a `tc lab up` that was killed left on the system: its system user, and with
    /// --dir its chroots, its WAN (namespaces, links, rules, the processes in them) and the
    /// directory.
    Cleanup(LabCleanupArgs),
    /// Write a generated pair of captures (OVOC side and CPE side) and what `tc analyze`
    /// should find in them (truth.json): for tests and benchmarks.
    #[command(hide = true)]
    Captures(Box<LabCapturesArgs>),
}

#[derive(Debug, Clone, Args)]
pub struct LabCapturesArgs {
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Simulated duration.
    #[arg(long, default_value_t = 120.0)]
    pub seconds: f64,
    /// Traffic rate multiplier (1 = an SNMP poll a second, syslog twice a second, ...).
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Start of the simulated time (OVOC clock).
    #[arg(long, default_value = "2026-11-27T07:42:13Z", value_parser = parse_time)]
    pub start: i64,
    /// CPE clock minus OVOC clock at the start.
    #[arg(long, default_value = "0", allow_hyphen_values = true, value_parser = parse_signed_duration)]
    pub offset: i64,
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    pub drift_ppm: f64,
    /// Minimum one-way delay OVOC to CPE (and CPE to OVOC unless --delay-up-ms), ms.
    #[arg(long, default_value_t = 20.0)]
    pub delay_ms: f64,
    #[arg(long)]
    pub delay_up_ms: Option<f64>,
    /// Largest queueing delay above the minimum, ms.
    #[arg(long, default_value_t = 8.0)]
    pub jitter_ms: f64,
    /// The CPE behind NAT: other addresses for itself and OVOC, client ports rewritten.
    #[arg(long)]
    pub nat: bool,
    #[arg(long)]
    pub ipv6: bool,
    /// Drop packets in transit in this direction (ovoc_to_cpe, cpe_to_ovoc, both).
    #[arg(long, value_parser = ["ovoc_to_cpe", "cpe_to_ovoc", "both"])]
    pub drop: Option<String>,
    /// Only packets of this class (snmp, icmp, tcp:443, syslog, snmp_trap).
    #[arg(long)]
    pub drop_class: Option<String>,
    /// Seconds after the start.
    #[arg(long, default_value_t = 0.0)]
    pub drop_from: f64,
    #[arg(long)]
    pub drop_until: Option<f64>,
    /// The CPE sends nothing from this second on (requests still arrive).
    #[arg(long)]
    pub cpe_silent_from: Option<f64>,
    /// OVOC sends nothing to the CPE from this second on.
    #[arg(long)]
    pub ovoc_silent_from: Option<f64>,
    /// Capture windows, seconds after the start.
    #[arg(long, default_value_t = 0.0)]
    pub cpe_start: f64,
    #[arg(long)]
    pub cpe_end: Option<f64>,
    #[arg(long, default_value_t = 0.0)]
    pub ovoc_start: f64,
    #[arg(long)]
    pub ovoc_end: Option<f64>,
    /// pcap (µs), pcap-ns, or pcapng (two interfaces: LAN on Ethernet, WAN on Linux cooked v2).
    #[arg(long, default_value = "pcap", value_parser = ["pcap", "pcap-ns", "pcapng"])]
    pub cpe_format: String,
    /// OVOC's capture as tcpdump's `-C BYTES -W 3` ring.
    #[arg(long, value_name = "BYTES")]
    pub ring_bytes: Option<u64>,
    /// The CPE's classic pcap cut to this snap length (tcpdump -s), and declaring it.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(64..))]
    pub cpe_snaplen: Option<u32>,
    /// The CPE's clock steps by this much (an NTP step) at --cpe-step-at.
    #[arg(long, default_value = "0", allow_hyphen_values = true, value_parser = parse_signed_duration)]
    pub cpe_step: i64,
    /// Seconds after the start.
    #[arg(long, default_value_t = 0.0)]
    pub cpe_step_at: f64,
    /// With --cpe-format pcapng: the drops its capture statistics state (isb_ifdrop).
    #[arg(long, value_name = "N")]
    pub cpe_capture_drops: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct LabDemoArgs {
    /// Where the lab, the captures and the report go (default: a new directory under /tmp).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Number of emulated devices (alternating MSBR and gateway/SBC).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub devices: u32,
    /// The fault the router injects a few seconds into the captures, on every device: OVOC's
    /// traffic dropped on the way to the device, the device's dropped on the way to OVOC, the
    /// device's SNMP agent silent, or none (then the demo raises Connection Lost itself).
    #[arg(long, value_enum, default_value_t = DemoFault::OvocToCpe)]
    pub fault: DemoFault,
    /// The devices behind a NAT router (other addresses and ports on the OVOC side).
    #[arg(long)]
    pub nat: bool,
    /// The devices' clocks, and so their captures' timestamps, this far from the host's.
    #[arg(long, value_name = "DURATION", default_value = "0", allow_hyphen_values = true, value_parser = parse_signed_duration)]
    pub clock_offset: i64,
    /// ... and running this many parts per million fast (negative: slow).
    #[arg(
        long,
        value_name = "PPM",
        default_value_t = 0.0,
        allow_hyphen_values = true
    )]
    pub clock_drift: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemoFault {
    OvocToCpe,
    CpeToOvoc,
    CpeSilent,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WanDrop {
    /// What OVOC (and the controller) send to the device.
    ToDevice,
    /// What the device sends.
    FromDevice,
    Both,
}

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["drop", "silent", "restore"])))]
pub struct LabWanArgs {
    /// The lab directory given to `tc lab up --wan`.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The device's address, as in the lab's inventory.
    pub device: String,
    /// Drop this traffic at the router (an nftables rule: the packets really never arrive).
    #[arg(long, value_enum)]
    pub drop: Option<WanDrop>,
    /// The device's SNMP agent stops answering; requests still arrive (its capture shows them).
    #[arg(long)]
    pub silent: bool,
    /// End every fault on the device.
    #[arg(long)]
    pub restore: bool,
    /// End the fault after this long (the kernel ends it, whatever happens to this command);
    /// default: until --restore.
    #[arg(long = "for", value_parser = parse_duration, value_name = "DURATION", conflicts_with = "restore")]
    pub duration: Option<std::time::Duration>,
}

#[derive(Debug, Clone, Args)]
pub struct LabDownArgs {
    /// The lab directory given to `tc lab up`.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The emulated device's address.
    pub device: String,
    /// How long (e.g. 90s); 0 brings it back at once.
    #[arg(long = "for", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: std::time::Duration,
}

#[derive(Debug, Clone, Args)]
pub struct LabAlarmArgs {
    /// The lab directory given to `tc lab up`.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The emulated device's address.
    pub device: String,
    /// Send the clear ("Connection established") instead.
    #[arg(long)]
    pub clear: bool,
}

#[derive(Debug, Clone, Args)]
pub struct LabUpArgs {
    /// Lab directory (inventory, env file, certificates, sshd config, capture files).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Number of emulated devices (alternating MSBR and gateway/SBC).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub devices: u32,
    /// Added delay before every REST answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Answer the first N cliScript requests of each device with 409 Busy.
    #[arg(long, default_value_t = 0)]
    pub busy_first: u32,
    /// Third octet of the first device address (127.0.<N>.1; with --wan 198.19.<N>.1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=200))]
    pub subnet: u8,
    /// REST port of every device (0 picks a free one). Tools that hard-code the real devices'
    /// ports, such as the original controller (443 and 22), need `--rest-port 443 --ssh-port 22`.
    #[arg(long, default_value_t = 0)]
    pub rest_port: u16,
    /// SSH port of every device (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    pub ssh_port: u16,
    /// Size of each device's capture file; padded with generated packets after the real ones.
    #[arg(long, default_value_t = 0, value_name = "BYTES")]
    pub capture_bytes: u64,
    /// Cut each device's first SFTP connection after this many bytes (fault injection).
    #[arg(long, value_name = "BYTES")]
    pub cut_sftp_after: Option<u64>,
    /// The only SSH ciphers the lab's sshd offers (sshd_config's Ciphers, comma-separated), to
    /// rehearse a device or server that knows only some, e.g. aes128-ctr or aes256-cbc.
    #[arg(long, value_name = "CIPHERS", conflicts_with = "no_sftp")]
    pub ssh_ciphers: Option<String>,
    /// While a device's capture is active, record the traffic to it with tcpdump and serve that
    /// as its capture file when the capture stops (as a real device does).
    #[arg(long)]
    pub live_captures: bool,
    /// Do not start sshd (REST only; no root needed).
    #[arg(long)]
    pub no_sftp: bool,
    /// Print a lab.request line for every REST request answered.
    #[arg(long)]
    pub log_requests: bool,
    /// System user the lab creates for SFTP logins (and uses as the REST admin); removed on exit
    /// if the lab created it.
    #[arg(long, default_value = "tclab")]
    pub user: String,
    /// Root-owned directory for the per-device SFTP chroots (sshd refuses group/world-writable
    /// path components such as /tmp).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/tc-lab")]
    pub sftp_root: PathBuf,
    /// Put a real router between this host (the OVOC side) and the devices: network namespaces
    /// and veth pairs, devices at 198.19.<subnet>.N, the agent's interface tclab<subnet>-o, the
    /// emulated OVOC polling each device over SNMP. Implies --live-captures; at most 100 devices.
    #[arg(long)]
    pub wan: bool,
    /// With --wan: the devices behind a 1:1 NAT router (own addresses 100.64.<subnet>.N; OVOC
    /// sees 198.19.<subnet>.N, and connections the devices open from other source ports).
    #[arg(long, requires = "wan")]
    pub nat: bool,
    /// With --wan: the devices' clocks, and so their captures' timestamps, this far from the
    /// host's (e.g. 3.5s, -200ms).
    #[arg(long, value_name = "DURATION", default_value = "0", allow_hyphen_values = true, value_parser = parse_signed_duration, requires = "wan")]
    pub clock_offset: i64,
    /// With --wan: ... running this many parts per million fast (negative: slow).
    #[arg(
        long,
        value_name = "PPM",
        default_value_t = 0.0,
        allow_hyphen_values = true,
        requires = "wan"
    )]
    pub clock_drift: f64,
    /// With --wan: the emulated OVOC's SNMP poll of each device.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration, requires = "wan")]
    pub poll_interval: std::time::Duration,
    /// With --wan: missed polls in a row that make OVOC raise Connection Lost.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100), requires = "wan")]
    pub poll_misses: u32,
}

#[derive(Debug, Clone, Args)]
pub struct LabCleanupArgs {
    /// The lab's system user to remove.
    #[arg(long, default_value = "tclab")]
    pub user: String,
    /// Also delete this lab directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// A size: bytes, or with a unit k/K/KiB, M/MiB, G/GiB, T/TiB (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let err = || format!("invalid size {s:?}: expected e.g. 0, 512MiB, 1G or 2TiB");
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let n: u64 = t[..digits].parse().map_err(|_| err())?;
    let unit: u64 = match t[digits..].trim() {
        "" | "B" => 1,
        "k" | "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        _ => return Err(err()),
    };
    n.checked_mul(unit).ok_or_else(err)
}

pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::util::parse_duration(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn command_lines() {
        let ok: &[&[&str]] = &[
            &["tc", "cpe", "status", "--device", "10.0.0.1"],
            &[
                "tc",
                "cpe",
                "start",
                "--devices",
                "f.csv",
                "--interface",
                "eth-wan",
                "--snmp-user",
                "CaptureScript",
            ],
            &[
                "tc", "cpe", "fetch", "--device", "a", "--device", "b", "--out", "/tmp",
            ],
            &[
                "tc",
                "lab",
                "up",
                "--dir",
                "/x",
                "--devices",
                "50",
                "--latency-ms",
                "100",
            ],
        ];
        let analyze: &[&str] = &[
            "tc",
            "analyze",
            "--cpe",
            "c.pcap",
            "--ovoc",
            "o-1.pcap",
            "--ovoc",
            "o-0.pcap",
            "--offset",
            "-1.5s",
            "--drift-ppm",
            "-3.5",
            "--alarm-at",
            "2026-11-27T07:42:13.5Z",
        ];
        match Cli::try_parse_from(analyze).map(|c| c.command) {
            Ok(Command::Analyze(a)) => {
                assert_eq!(a.ovoc.len(), 2);
                assert_eq!(a.offset, Some(-1_500_000_000));
                assert_eq!(a.drift_ppm, Some(-3.5));
                assert_eq!(a.alarm_at, Some(1_795_765_333_500_000_000));
            }
            other => panic!("{other:?}"),
        }
        for argv in ok {
            if let Err(e) = Cli::try_parse_from(*argv) {
                panic!("{argv:?}: {e}");
            }
        }
        // `tc session` takes `status` as a subcommand and is otherwise as it was.
        match Cli::try_parse_from(["tc", "session", "status", "--out", "/srv/c"]).map(|c| c.command)
        {
            Ok(Command::Session(SessionArgs {
                command: Some(SessionCommand::Status(s)),
                ..
            })) => assert_eq!(s.out, PathBuf::from("/srv/c")),
            other => panic!("{other:?}"),
        }
        match Cli::try_parse_from(["tc", "session", "--devices", "f.csv", "--out", "/srv/c"])
            .map(|c| c.command)
        {
            Ok(Command::Session(a)) => {
                assert!(a.command.is_none());
                assert_eq!(a.target.devices, Some(PathBuf::from("f.csv")));
                assert_eq!(a.out, PathBuf::from("/srv/c"));
            }
            other => panic!("{other:?}"),
        }
        match Cli::try_parse_from(["tc", "report", "--out", "o", "--html", "r.html"])
            .map(|c| c.command)
        {
            Ok(Command::Report(r)) => assert_eq!(r.html, PathBuf::from("r.html")),
            other => panic!("{other:?}"),
        }
        let bad: &[(&[&str], &str)] = &[
            (&["tc", "cpe", "status"], "--device"),
            (
                &["tc", "cpe", "status", "--device", "a", "--password", "x"],
                "--password",
            ),
            (
                &["tc", "cpe", "status", "--device", "a", "--timeout", "10x"],
                "invalid duration",
            ),
            (
                &[
                    "tc",
                    "cpe",
                    "status",
                    "--device",
                    "a",
                    "--insecure",
                    "--pin-sha256",
                    "ab",
                ],
                "cannot be used",
            ),
            (
                &["tc", "cpe", "status", "--device", "a", "--type", "router"],
                "router",
            ),
            (
                &["tc", "cpe", "status", "--device", "a", "--jobs", "0"],
                "0",
            ),
            (&["tc", "analyze", "--cpe", "c.pcap"], "--ovoc"),
            (&["tc", "session"], "--device"),
            (&["tc", "session", "status"], "--out"),
            (
                &[
                    "tc",
                    "session",
                    "--devices",
                    "f.csv",
                    "status",
                    "--out",
                    "o",
                ],
                "cannot be used with",
            ),
            (&["tc", "report", "--out", "o"], "--html"),
            (
                &[
                    "tc",
                    "analyze",
                    "--cpe",
                    "c",
                    "--ovoc",
                    "o",
                    "--drift-ppm",
                    "3",
                ],
                "--offset",
            ),
            (
                &[
                    "tc", "analyze", "--cpe", "c", "--ovoc", "o", "--offset", "3x",
                ],
                "invalid duration",
            ),
            (
                &[
                    "tc", "analyze", "--cpe", "c", "--ovoc", "o", "--device", "host",
                ],
                "invalid IP address",
            ),
            (
                &[
                    "tc",
                    "analyze",
                    "--cpe",
                    "c",
                    "--ovoc",
                    "o",
                    "--alarm-at",
                    "noon",
                ],
                "invalid time",
            ),
        ];
        for (argv, needle) in bad {
            let e = Cli::try_parse_from(*argv).unwrap_err().to_string();
            assert!(e.contains(needle), "{argv:?}: {e}");
        }
    }
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn sizes() {
        let ok: &[(&str, u64)] = &[
            ("0", 0),
            ("512", 512),
            ("1k", 1024),
            ("10MiB", 10 << 20),
            ("1G", 1 << 30),
            ("2 TiB", 2 << 40),
        ];
        for (s, want) in ok {
            assert_eq!(super::parse_size(s), Ok(*want), "{s}");
        }
        for bad in ["", "G", "1.5G", "-1", "1GB", "99999999999T"] {
            assert_eq!(
                super::parse_size(bad),
                Err(format!(
                    "invalid size {bad:?}: expected e.g. 0, 512MiB, 1G or 2TiB"
                ))
            );
        }
    }
}
