//! Every record `tc` writes to stdout. This file is the JSON schema: each variant is one `type`,
//! each field one key. `emit` adds `ts` (RFC 3339 UTC, microseconds) in front of every record.
//! The integration tests deserialize every line they see into these types with
//! `deny_unknown_fields`, so the schema cannot drift silently. Absent optional values are `null`.

use serde::{Deserialize, Serialize};

/// What one probe type (ICMP echo, SNMPv3 GET, TCP connect) got from a device.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProbeCounts {
    pub sent: u32,
    pub answered: u32,
    /// Why probes could not be sent or were not answered, if known.
    pub error: Option<String>,
}

/// The probes of one VERIFY; a type not enabled is `null`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProbeReport {
    pub icmp: Option<ProbeCounts>,
    pub snmp: Option<ProbeCounts>,
    pub tcp: Option<ProbeCounts>,
}

impl ProbeReport {
    /// Every enabled probe type got at least one answer.
    pub fn ok(&self) -> bool {
        [&self.icmp, &self.snmp, &self.tcp]
            .iter()
            .all(|c| c.as_ref().is_none_or(|c| c.answered > 0))
    }
}

/// One direction's one-way delays under the clock estimate, milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DelayMs {
    pub min: f64,
    pub mean: f64,
    pub max: f64,
}

/// `analyze.clock`'s delays per direction; a direction without matched packets is `null`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OneWayDelays {
    pub ovoc_to_cpe: Option<DelayMs>,
    pub cpe_to_ovoc: Option<DelayMs>,
}

// Records are built once and written at once; their size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum Event {
    /// `tc cpe status`: the device's capture state and identity.
    #[serde(rename = "cpe.status")]
    CpeStatus {
        device: String,
        /// `msbr` or `gwsbc`
        device_type: String,
        active: bool,
        product_type: Option<String>,
        version: Option<String>,
        serial: Option<String>,
    },
    /// `tc cpe start`: the device confirmed its capture is active.
    #[serde(rename = "cpe.capture_started")]
    CpeCaptureStarted {
        device: String,
        device_type: String,
        interfaces: Vec<String>,
        snmp_user: Option<String>,
        /// REST requests this took, retries included.
        requests: u32,
    },
    /// `tc cpe stop`: the device confirmed its capture is not active.
    #[serde(rename = "cpe.capture_stopped")]
    CpeCaptureStopped {
        device: String,
        device_type: String,
        requests: u32,
    },
    /// `tc cpe fetch`: the capture file is complete on local disk.
    #[serde(rename = "cpe.fetched")]
    CpeFetched {
        device: String,
        path: String,
        remote_path: String,
        bytes: u64,
        sha256: String,
        seconds: f64,
        /// SFTP sessions this took (1 unless a transfer was cut and retried).
        attempts: u32,
    },
    /// Any `tc cpe` operation that failed for one device; the others go on.
    #[serde(rename = "cpe.error")]
    CpeError {
        device: String,
        op: String,
        error: String,
    },
    /// `tc lab up`: the emulated fleet is serving.
    #[serde(rename = "lab.ready")]
    LabReady {
        dir: String,
        devices: u32,
        inventory: String,
        env: String,
        rest_port: u16,
        ssh_port: Option<u16>,
        sftp_root: Option<String>,
        /// The agent's `--dir` for SFTP fetches from the OVOC address (with the SFTP side).
        agent_dir: Option<String>,
        ca_cert: String,
        pid: u32,
    },
    /// `tc lab up --log-requests`: one REST request the emulator answered.
    #[serde(rename = "lab.request")]
    LabRequest {
        device: String,
        method: String,
        path: String,
        status: u16,
        user: Option<String>,
        /// When the whole request had arrived, before the lab's `--latency-ms` (`ts` is when it
        /// was answered): what a benchmark of the client times.
        received: String,
    },
    /// `tc lab up --wan`: the emulated OVOC's polls of a device stopped or started being
    /// answered, and the alarm it forwarded for that.
    #[serde(rename = "lab.connection")]
    LabConnection {
        device: String,
        /// `lost` (Connection Lost raised) or `established` (cleared).
        state: String,
        /// Polls missed in a row, when lost.
        missed: Option<u32>,
        /// Where the alarm went (the rule an agent registered), or why it went nowhere.
        forwarded_to: Option<String>,
        error: Option<String>,
    },
    /// `tc lab wan` and `tc lab demo`: a fault injected on a WAN lab's router (or ended).
    #[serde(rename = "lab.fault")]
    LabFault {
        device: String,
        /// `to_device`, `from_device`, `both`, `silent` or `restored`.
        fault: String,
        /// How long the kernel keeps it; null: until restored.
        seconds: Option<f64>,
    },
    /// `tc lab up`: the lab shut down.
    #[serde(rename = "lab.stopped")]
    LabStopped {
        requests: u64,
        signal: Option<String>,
    },
    /// `tc alarm listen`: an OVOC alarm forwarded as syslog that passed the filters.
    #[serde(rename = "alarm")]
    Alarm {
        /// The device address (`IP Address:` field), when the alarm names one.
        device: Option<String>,
        alarm: String,
        description: Option<String>,
        /// OVOC severity word (Critical, Major, Minor, Warning, Indeterminate, Clear).
        severity: Option<String>,
        /// Syslog severity from the PRI (emerg ... debug).
        syslog_severity: Option<String>,
        device_name: Option<String>,
        source: Option<String>,
        tenant: Option<String>,
        region: Option<String>,
        device_type: Option<String>,
        device_serial: Option<String>,
        device_description: Option<String>,
        /// Fields of no known name, as sent.
        extra: std::collections::BTreeMap<String, String>,
        /// True for the trigger: Connection Alarm / Connection Lost.
        connection_lost: bool,
        /// `new-alarm` (what servers send) or `template` (the manual's wording).
        wording: String,
        /// `rfc3164`, `rfc5424`, `pri-only` or `none`.
        framing: String,
        hostname: Option<String>,
        /// ADDR:PORT the datagram came from.
        sender: String,
        raw: String,
    },
    /// `tc alarm listen`: a datagram that is not an OVOC alarm.
    #[serde(rename = "syslog.unparsed")]
    SyslogUnparsed {
        sender: String,
        framing: String,
        raw: String,
    },
    /// `tc alarm listen`: last line, on exit.
    #[serde(rename = "alarm.summary")]
    AlarmSummary {
        received: u64,
        matched: u64,
        /// Alarms that did not pass --alarm/--description/--device.
        filtered: u64,
        unparsed: u64,
        /// Datagrams from senders outside --from.
        refused: u64,
        /// Datagrams the kernel dropped on this socket (from /proc/net/udp), if known.
        dropped_kernel: Option<u64>,
        seconds: f64,
        /// `count`, `timeout`, `signal` or `stdout-closed`.
        reason: String,
    },
    /// `tc ovoc serve`: the agent is listening.
    #[serde(rename = "ovoc.listening")]
    OvocListening {
        listen: String,
        interface: String,
        dir: String,
        allow: Vec<String>,
        ovoc_rules: bool,
        /// Captures of an earlier run found still running and taken over.
        adopted: u32,
        /// Captures of an earlier run whose tcpdump was gone; their files are kept.
        closed_out: u32,
        pid: u32,
    },
    /// `tc ovoc serve`: a request that parsed.
    #[serde(rename = "ovoc.request")]
    OvocRequest {
        device: String,
        request: String,
        filename: Option<String>,
        from: String,
    },
    /// `tc ovoc serve`: a response sent (`detail` is not on the wire, e.g. tcpdump's error).
    #[serde(rename = "ovoc.response")]
    OvocResponse {
        device: String,
        request: String,
        code: u16,
        reason: String,
        to: String,
        detail: Option<String>,
    },
    /// `tc ovoc serve`: tcpdump is capturing and its file exists.
    #[serde(rename = "ovoc.capture_started")]
    OvocCaptureStarted {
        device: String,
        pid: u32,
        file: String,
        interface: String,
    },
    /// `tc ovoc serve`: a capture was stopped by STOP and its files renamed to match the CPE file.
    #[serde(rename = "ovoc.capture_stopped")]
    OvocCaptureStopped {
        device: String,
        filename: String,
        files: Vec<String>,
        packets_captured: Option<u64>,
        packets_received: Option<u64>,
        packets_dropped_kernel: Option<u64>,
        /// tcpdump reported 0 packets dropped by the kernel; false when it reported drops or
        /// could not report (killed): the capture is incomplete evidence.
        complete: bool,
    },
    /// `tc ovoc serve`: a capture ended without STOP (tcpdump died, agent shutdown, found dead at
    /// start); its files are kept under their `tmp_device_` names until a STOP renames them.
    #[serde(rename = "ovoc.capture_ended")]
    OvocCaptureEnded {
        device: String,
        reason: String,
        files: Vec<String>,
        packets_captured: Option<u64>,
        packets_dropped_kernel: Option<u64>,
        /// Complete packets in the files (counted when tcpdump could not write: its own count
        /// then includes packets it failed to write).
        packets_on_disk: Option<u64>,
    },
    /// `tc ovoc serve`: a tcpdump of an earlier run was found running and taken over.
    #[serde(rename = "ovoc.capture_adopted")]
    OvocCaptureAdopted {
        device: String,
        pid: u32,
        file: String,
    },
    /// `tc ovoc serve`: the probes of a VERIFY.
    #[serde(rename = "ovoc.verify")]
    OvocVerify {
        device: String,
        ok: bool,
        probes: ProbeReport,
    },
    /// `tc ovoc serve`: an OVOC alarm-forwarding rule created, updated, deleted, or a failure.
    #[serde(rename = "ovoc.rule")]
    OvocRule {
        device: String,
        action: String,
        rule_id: Option<u64>,
        dest: Option<String>,
        error: Option<String>,
    },
    /// `tc ovoc serve`: last line, on exit.
    #[serde(rename = "ovoc.summary")]
    OvocSummary {
        requests: u64,
        responses: u64,
        /// Malformed, oversized or binary datagrams.
        dropped: u64,
        /// Datagrams from sources outside --allow.
        refused: u64,
        captures_started: u64,
        captures_stopped: u64,
        /// Requests about a device owned by another source (answered 403).
        forbidden: u64,
        /// Datagrams over --rate-limit (dropped unanswered).
        limited: u64,
        /// Requests refused by --key-file (answered 401, or dropped when the MAC was wrong).
        unauthenticated: u64,
        seconds: f64,
        reason: String,
    },
    /// `tc ovoc serve`: a source went over the per-source request rate (once each time it does;
    /// its datagrams are dropped until it slows down).
    #[serde(rename = "ovoc.limited")]
    OvocLimited { from: String, limit: String },
    /// `tc ovoc send`: a response received from an agent.
    #[serde(rename = "ovoc.reply")]
    OvocReply {
        server: String,
        device: String,
        request: Option<String>,
        code: u16,
        reason: String,
        is_final: bool,
    },
    /// `tc ovoc fetch` (and `tc session --collect-ovoc`): one of a round's OVOC files complete
    /// on disk.
    #[serde(rename = "ovoc.fetched")]
    OvocFetched {
        server: String,
        device: String,
        path: String,
        remote_path: String,
        bytes: u64,
        sha256: String,
        seconds: f64,
        /// Attempts this took (1 unless a transfer was cut and retried; 0: the file was
        /// already here, from an earlier run).
        attempts: u32,
    },
    /// `tc ovoc fetch` failed.
    #[serde(rename = "ovoc.fetch_error")]
    OvocFetchError {
        server: String,
        file: String,
        error: String,
    },
    /// `tc session`: started (or resumed from its journal).
    #[serde(rename = "session.started")]
    SessionStarted {
        devices: u32,
        listen: String,
        out: String,
        report: String,
        resumed: bool,
        max_events: u32,
    },
    /// `tc session`: one task of one device finished; the same row goes to the CSV report.
    #[serde(rename = "session.task")]
    SessionTask {
        device: String,
        /// register, cpe_start, capture, alarm, verify, cpe_stop, fetch, stop, collect,
        /// analyze, done, abort
        task: String,
        /// ok, failed, retry, skipped
        status: String,
        /// The agent's response code, where there is one.
        code: Option<u16>,
        description: String,
        file: Option<String>,
        /// Completed capture rounds of this device so far.
        round: u32,
        /// The `analyze` task's verdict (`tc analyze`'s), else null.
        verdict: Option<String>,
    },
    /// `tc session`: a datagram that changed nothing (alarm for a device not capturing or not in
    /// the inventory, a stray response).
    #[serde(rename = "session.ignored")]
    SessionIgnored {
        device: Option<String>,
        reason: String,
        sender: String,
    },
    /// `tc session`: last line.
    #[serde(rename = "session.summary")]
    SessionSummary {
        devices: u32,
        completed: u32,
        aborted: u32,
        /// Captured, but STOP was never confirmed by the agent (`--resume` retries it).
        failed: u32,
        rounds: u32,
        /// Datagrams that changed nothing (`session.ignored` lines: at most 10 a second per
        /// sender are shown, all are counted).
        ignored: u32,
        /// Of those, alarms from senders that are not OVOC servers (`--alarm-from`).
        refused: u32,
        /// Rounds analysed (`--collect-ovoc`), by verdict.
        verdicts: std::collections::BTreeMap<String, u32>,
        /// Rounds whose collection or analysis failed (then the exit code is 1).
        unanalysed: u32,
        seconds: f64,
        /// `done`, `interrupted`, `wind_down_expired` (`--wind-down` ran out: see the
        /// `session.unfinished` lines), or `out_dir_taken` (another session holds the out
        /// dir's lock now: this one stopped at once, exit 2).
        reason: String,
    },
    /// `tc session`: a device left unfinished when the wind-down ran out (`--resume` finishes it).
    #[serde(rename = "session.unfinished")]
    SessionUnfinished {
        device: String,
        /// The journal's step: what `--resume` does next.
        step: String,
        /// The CPE capture still runs on the device.
        capturing: bool,
        /// The CPE file, if fetched already.
        file: Option<String>,
    },
    /// `tc session`: the report or the journal was deleted or replaced while the session ran;
    /// both were written again from memory.
    #[serde(rename = "session.gap")]
    SessionGap { file: String, reason: String },
    /// `tc session status`: one device of a running or finished session, as its journal and
    /// report say.
    #[serde(rename = "session.status")]
    SessionStatus {
        device: String,
        /// The journal's step (`unknown`: the report names the device, the journal does not).
        step: String,
        /// Completed rounds.
        rounds: u32,
        /// The round shown, from 1 (OUT/<device>/<round>/): the one under way, else the last.
        round: u32,
        /// RFC 3339: the round's first `capture ok` (both captures running).
        capture_started: Option<String>,
        /// RFC 3339: the round's Connection Lost (its `alarm ok` row).
        alarm: Option<String>,
        /// The round's files so far: the CPE file, then the OVOC files in its directory.
        files: Vec<String>,
        /// The round's verdict, once analysed (`--collect-ovoc`).
        verdict: Option<String>,
        /// The device's last report row: task, status, and its time (RFC 3339).
        last_task: Option<String>,
        last_status: Option<String>,
        updated: Option<String>,
    },
    /// `tc session status`: last line.
    #[serde(rename = "session.status_summary")]
    SessionStatusSummary {
        out: String,
        /// `running` (exit 3), `finished` (every device done: exit 0) or `failed` (a device
        /// aborted, failed or left unfinished, or the report was lost: exit 1).
        state: String,
        /// The running session's PID (from /proc/locks), else null.
        pid: Option<u32>,
        devices: u32,
        done: u32,
        aborted: u32,
        failed: u32,
        /// Neither done, aborted nor failed: under way, or left so by a session killed.
        unfinished: u32,
    },
    /// `tc analyze`: one input file, as read.
    #[serde(rename = "analyze.input")]
    AnalyzeInput {
        /// `cpe` or `ovoc`
        side: String,
        file: String,
        /// `pcap` or `pcapng`
        format: String,
        /// pcap link type name(s), comma-separated when a pcapng has several (EN10MB, LINUX_SLL2...).
        link_type: String,
        packets: u64,
        /// Packets between the device and OVOC, the ones analysed.
        selected: u64,
        /// First and last packet, RFC 3339, in the file's own clock.
        first: Option<String>,
        last: Option<String>,
        /// OVOC ring files: position in time order (0 = oldest); `null` for the CPE file.
        ring_position: Option<u32>,
        /// The OVOC ring wrapped (its oldest packets were overwritten): the window starts later.
        wrapped: bool,
        /// The file ended inside a record (cut short); what came before was read.
        truncated: bool,
        /// Frames shorter than on the wire (the snap length cut them).
        snapped: u64,
        /// Packets the capture itself dropped, by its pcapng statistics (`isb_ifdrop` plus
        /// `isb_osdrop`); `null` when the file has none (classic pcap never has).
        capture_drops: Option<u64>,
        /// Records skipped for a timestamp that is not a time.
        bad_time: u64,
        /// Frames that are not IP, or whose headers do not parse.
        not_ip: u64,
        /// Fragmented datagrams given up (timed out, or beyond the reassembly bounds).
        fragments_given_up: u64,
    },
    /// `tc analyze`: the CPE clock against the OVOC clock.
    #[serde(rename = "analyze.clock")]
    AnalyzeClock {
        /// CPE clock minus OVOC clock at `at`.
        offset_ms: f64,
        drift_ppm: f64,
        /// Half the gap between the two delay envelopes: the offset's error if the minimum
        /// one-way delays were not equal; `null` when only one direction matched.
        uncertainty_ms: Option<f64>,
        /// RFC 3339, OVOC clock: where `offset_ms` holds (the start of the common window).
        at: String,
        one_way_delay_ms: OneWayDelays,
        /// Packets found in both captures.
        matched: u64,
        /// `estimated`, or `given` (--offset).
        method: String,
        /// The OVOC server's address in the CPE capture, and whether it was `given` or `found`.
        ovoc_addr: Option<String>,
        ovoc_addr_source: String,
        /// The CPE clock stepped (against OVOC's) by this much at `step_at` (RFC 3339, OVOC
        /// clock): one offset and drift do not describe it; `null` when it did not.
        step_ms: Option<f64>,
        step_at: Option<String>,
    },
    /// `tc analyze`: one direction and traffic class.
    #[serde(rename = "analyze.flow")]
    AnalyzeFlow {
        /// `ovoc_to_cpe` or `cpe_to_ovoc`
        direction: String,
        /// `snmp`, `snmp_trap`, `icmp`, `tcp:<port>`, `syslog` or `other`
        class: String,
        /// In the sender's capture.
        sent: u64,
        /// Of those, in the receiver's capture.
        seen: u64,
        /// Sent while the receiver's capture ran, never seen there.
        lost: u64,
        /// Sent before the receiver's capture started or as it ended: not counted as loss.
        outside_window: u64,
        /// Sent, neither seen nor lost: cut by a snap length below what matching covers, near
        /// such a packet of the receiver's, or beyond the matcher's bounds.
        unmatchable: u64,
        /// Received with no copy in the sender's capture (it missed them), or duplicated.
        unexpected: u64,
    },
    /// `tc analyze`: a run of lost packets of one direction and class.
    #[serde(rename = "analyze.loss")]
    AnalyzeLoss {
        direction: String,
        class: String,
        /// RFC 3339, first and last lost packet's send time in the CPE clock and the OVOC clock.
        start_cpe: String,
        end_cpe: String,
        start_ovoc: String,
        end_ovoc: String,
        packets: u64,
    },
    /// `tc analyze`: requests of one kind and direction, and their answers, as each capture
    /// saw them (requests whose answer could have come after a capture ended are left out).
    #[serde(rename = "analyze.requests")]
    AnalyzeRequests {
        /// The requests' direction: `ovoc_to_cpe` = OVOC asks, the CPE answers.
        direction: String,
        /// `snmp`, `icmp_echo` or `tcp_handshake`
        kind: String,
        /// In the requester's capture: requests, and those whose answer came back.
        sent: u64,
        answers_received: u64,
        /// In the responder's capture: requests that arrived, and those it answered.
        arrived: u64,
        answered: u64,
        /// Arrived and unanswered in a row at the end, in the responder's capture.
        unanswered_at_end: u64,
    },
    /// `tc analyze`: last line.
    #[serde(rename = "analyze.verdict")]
    AnalyzeVerdict {
        device: String,
        /// `no_loss`, `wan_loss_ovoc_to_cpe`, `wan_loss_cpe_to_ovoc`, `wan_loss_both`,
        /// `cpe_silent`, `ovoc_silent` or `inconclusive`
        verdict: String,
        /// One plain sentence (for `inconclusive`, why).
        text: String,
    },
    /// `tc report`: the HTML file is written.
    #[serde(rename = "report.written")]
    ReportWritten {
        path: String,
        devices: u32,
        /// Rounds shown, over every device.
        rounds: u32,
        bytes: u64,
        /// The session's state as the page shows it: `running`, `finished` or `failed`.
        state: String,
    },
    /// Last line of every batch command.
    #[serde(rename = "summary")]
    Summary {
        command: String,
        ok: u32,
        failed: u32,
        seconds: f64,
    },
}
