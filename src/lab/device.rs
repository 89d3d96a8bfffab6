//! One emulated AudioCodes device (MSBR or gateway/SBC) answering the REST API of
//! `shared/spec/device.md`: status, alarms, and CLI scripts for debug capture and SNMPv3 users.
//!
//! Pure: no I/O, no clock; the lab's HTTP layer owns the sockets and a lock around the state.
//! Scripts are validated as a whole before anything is applied, so a rejected script changes
//! nothing; only runtime failures (which depend on state) stop part-way, as on the real CLI.
//! SNMP keys are secrets: they are stored but never appear in an output or an error description.

use serde_json::json;

use crate::lab::http::{Request, Response};
use crate::secret::Secret;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Msbr,
    Gwsbc,
}

impl Kind {
    fn plane(self) -> &'static str {
        match self {
            Kind::Msbr => "data",
            Kind::Gwsbc => "voip",
        }
    }

    fn interfaces(self) -> &'static [&'static str] {
        match self {
            Kind::Msbr => crate::inventory::MSBR_INTERFACES,
            Kind::Gwsbc => &["eth-lan"],
        }
    }

    fn product_type(self) -> &'static str {
        match self {
            Kind::Msbr => "M500L-MSBR",
            Kind::Gwsbc => "Mediant 800 SBC",
        }
    }

    fn version_id(self) -> &'static str {
        match self {
            Kind::Msbr => "7.20A.258.119",
            Kind::Gwsbc => "7.40A.500.212",
        }
    }
}

#[derive(Clone)]
pub struct Auth {
    pub admin_user: String,
    pub admin_password: Secret,
    pub monitor_user: String,
    pub monitor_password: Secret,
}

/// A configured SNMPv3 user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnmpUser {
    pub name: String,
    pub auth_protocol: String,
    pub priv_protocol: String,
    pub auth_key: Option<Secret>,
    pub priv_key: Option<Secret>,
}

impl SnmpUser {
    /// What `snmp v3-users new` starts from: no protocols until the script sets them.
    fn unnamed() -> SnmpUser {
        SnmpUser {
            name: String::new(),
            auth_protocol: "none".into(),
            priv_protocol: "none".into(),
            auth_key: None,
            priv_key: None,
        }
    }
}

pub struct DeviceState {
    addr: String,
    kind: Kind,
    serial: String,
    busy_first: u32,
    cli_requests: u64,
    requests: u64,
    capture_active: bool,
    interfaces: Vec<String>,
    snmp_users: Vec<SnmpUser>,
    saved: bool,
}

impl DeviceState {
    pub fn new(addr: &str, kind: Kind, serial: &str, busy_first: u32) -> DeviceState {
        DeviceState {
            addr: addr.to_string(),
            kind,
            serial: serial.to_string(),
            busy_first,
            cli_requests: 0,
            requests: 0,
            capture_active: false,
            interfaces: Vec::new(),
            snmp_users: Vec::new(),
            saved: false,
        }
    }

    #[cfg(test)]
    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn capture_active(&self) -> bool {
        self.capture_active
    }

    /// Currently selected capture interfaces, in selection order.
    #[cfg(test)]
    pub fn interfaces(&self) -> Vec<String> {
        self.interfaces.clone()
    }

    /// The configured SNMPv3 users, keys included: what the device's SNMP agent must answer.
    pub fn snmp_config(&self) -> &[SnmpUser] {
        &self.snmp_users
    }

    /// A device as shipped to the lab: its SNMP agent already has these users.
    pub fn with_snmp_users(mut self, users: Vec<SnmpUser>) -> DeviceState {
        self.snmp_users = users;
        self
    }

    #[cfg(test)]
    pub fn snmp_users(&self) -> Vec<String> {
        self.snmp_users.iter().map(|u| u.name.clone()).collect()
    }

    /// The full record of one SNMPv3 user, keys included (for checks against configuration).
    #[cfg(test)]
    pub fn snmp_user(&self, name: &str) -> Option<&SnmpUser> {
        self.snmp_users.iter().find(|u| u.name == name)
    }

    /// Whether `write` was executed.
    #[cfg(test)]
    pub fn saved(&self) -> bool {
        self.saved
    }

    #[cfg(test)]
    pub fn requests(&self) -> u64 {
        self.requests
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Admin,
    Monitor,
}

const STATUS: &str = "/api/v1/status";
const ALARMS: &str = "/api/v1/alarms/active";
const CLI_SCRIPT: &str = "/api/v1/files/cliScript/incremental";

/// Answer one REST request as the device would (per device.md).
pub fn handle(dev: &mut DeviceState, auth: &Auth, req: &Request) -> Response {
    dev.requests += 1;
    let Some(role) = authenticate(auth, req) else {
        return describe(401, "Unauthorized");
    };
    let path = req.path.split(['?', '#']).next().unwrap_or("");
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let admin_only = ["/api/v1/files", "/api/v1/actions"].iter().any(|p| {
        path == *p
            || path
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('/'))
    });
    if admin_only && role != Role::Admin {
        return describe(403, "Forbidden");
    }
    let (allowed, resp): (&str, fn(&mut DeviceState, &Request) -> Response) = match path {
        STATUS => ("GET", status),
        ALARMS => ("GET", |_, _| Response::empty(204)),
        CLI_SCRIPT => ("PUT", cli_script),
        _ => return describe(404, "Not found"),
    };
    if req.method != allowed {
        return describe(405, "Method not allowed");
    }
    resp(dev, req)
}

fn describe(status: u16, description: &str) -> Response {
    Response::json(status, &json!({ "description": description }))
}

fn authenticate(auth: &Auth, req: &Request) -> Option<Role> {
    let (user, password) = req.basic_auth()?;
    if user == auth.admin_user
        && ct_eq(password.as_bytes(), auth.admin_password.expose().as_bytes())
    {
        Some(Role::Admin)
    } else if user == auth.monitor_user
        && ct_eq(
            password.as_bytes(),
            auth.monitor_password.expose().as_bytes(),
        )
    {
        Some(Role::Monitor)
    } else {
        None
    }
}

/// Comparison whose time does not depend on where the inputs differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn status(dev: &mut DeviceState, _: &Request) -> Response {
    Response::json(
        200,
        &json!({
            "productType": dev.kind.product_type(),
            "versionID": dev.kind.version_id(),
            "serialNumber": dev.serial,
            // Grows with traffic, so successive probes see a live device without a clock.
            "systemUpTime": 86_400 + dev.requests,
            "operationalState": "UNLOCKED",
            "ipAddress": dev.addr,
        }),
    )
}

fn cli_script(dev: &mut DeviceState, req: &Request) -> Response {
    dev.cli_requests += 1;
    if dev.cli_requests <= u64::from(dev.busy_first) {
        return describe(409, "Device is busy, try again later");
    }
    let script = match script_from_multipart(req) {
        Ok(s) => s,
        Err(why) => return describe(400, &why),
    };
    let commands = match validate(dev.kind, &script) {
        Ok(c) => c,
        Err(why) => return rejected(&why, ""),
    };
    let mut output = String::new();
    // A user under construction lives only as long as its script: one never `exit`ed is dropped.
    let mut pending = None;
    for (line_no, cmd) in commands {
        if let Err(why) = apply(dev, cmd, &mut pending, &mut output) {
            return rejected(&format!("{why} (line {line_no})"), &output);
        }
    }
    Response::json(
        200,
        &json!({ "status": "success", "description": "CLI script applied", "output": output }),
    )
}

/// A rejected script: real devices say `status` (the original controller reads it), the
/// documentation shows `description`; the output is what the CLI printed before the error.
fn rejected(why: &str, output: &str) -> Response {
    Response::json(
        400,
        &json!({ "status": "failure", "description": why, "output": output }),
    )
}

// ---- multipart/form-data ----

fn script_from_multipart(req: &Request) -> Result<String, String> {
    let ct = req
        .header("content-type")
        .ok_or("Missing Content-Type: expected multipart/form-data")?;
    let (media, params) = parse_params(ct);
    if !media.eq_ignore_ascii_case("multipart/form-data") {
        return Err("Expected multipart/form-data".into());
    }
    let boundary = params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.as_str())
        .ok_or("Missing multipart boundary")?;
    if boundary.is_empty() || boundary.len() > 70 {
        return Err("Bad multipart boundary".into());
    }
    let parts = parse_multipart(&req.body, boundary)?;
    let part = parts
        .iter()
        .find(|p| p.name.as_deref() == Some("file"))
        .ok_or("Missing multipart part 'file'")?;
    String::from_utf8(part.body.to_vec()).map_err(|_| "CLI script is not UTF-8 text".into())
}

/// Splits `type/subtype; k=v; k="quoted \" v"` into the media type and its parameters.
fn parse_params(value: &str) -> (String, Vec<(String, String)>) {
    let mut chars = value.chars().peekable();
    let mut media = String::new();
    while let Some(&c) = chars.peek() {
        if c == ';' {
            break;
        }
        media.push(c);
        chars.next();
    }
    let mut params = Vec::new();
    while chars.next() == Some(';') {
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ';' {
                break;
            }
            key.push(c);
            chars.next();
        }
        let mut val = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                chars.next();
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => val.extend(chars.next()),
                        c => val.push(c),
                    }
                }
                // Skip anything between the closing quote and the next parameter.
                while chars.peek().is_some_and(|c| *c != ';') {
                    chars.next();
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ';' {
                        break;
                    }
                    val.push(c);
                    chars.next();
                }
                val = val.trim().to_string();
            }
        }
        let key = key.trim();
        if !key.is_empty() {
            params.push((key.to_string(), val));
        }
    }
    (media.trim().to_string(), params)
}

struct Part<'a> {
    name: Option<String>,
    body: &'a [u8],
}

/// RFC 7578 / RFC 2046 5.1 body parts. Tolerates a preamble, an epilogue, transport padding after
/// a delimiter and bare LF line ends; requires the closing delimiter.
fn parse_multipart<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, String> {
    let bad = |why: &str| format!("Bad multipart body: {why}");
    let delim = format!("--{boundary}").into_bytes();
    // A delimiter counts only at the start of the body or of a line.
    let find_delim = |from: usize| -> Option<usize> {
        let mut at = from;
        while at + delim.len() <= body.len() {
            let i = at
                + body[at..]
                    .windows(delim.len())
                    .position(|w| w == delim.as_slice())?;
            if i == 0 || body[i - 1] == b'\n' {
                return Some(i);
            }
            at = i + 1;
        }
        None
    };
    let mut at = find_delim(0).ok_or_else(|| bad("no boundary delimiter"))? + delim.len();
    let mut parts = Vec::new();
    loop {
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        let padding = rest
            .iter()
            .take_while(|b| **b == b' ' || **b == b'\t')
            .count();
        let rest = &rest[padding..];
        let eol = if rest.starts_with(b"\r\n") {
            2
        } else if rest.starts_with(b"\n") {
            1
        } else {
            return Err(bad("delimiter not followed by a line end"));
        };
        let part_start = at + padding + eol;
        let next = find_delim(part_start).ok_or_else(|| bad("no closing delimiter"))?;
        // The line end before the delimiter belongs to the delimiter, not to the content.
        let mut content_end = next;
        if content_end > part_start && body[content_end - 1] == b'\n' {
            content_end -= 1;
            if content_end > part_start && body[content_end - 1] == b'\r' {
                content_end -= 1;
            }
        }
        parts.push(parse_part(&body[part_start..content_end.max(part_start)])?);
        at = next + delim.len();
    }
}

fn parse_part(part: &[u8]) -> Result<Part<'_>, String> {
    let bad = |why: &str| format!("Bad multipart body: {why}");
    let mut name = None;
    let mut at = 0;
    loop {
        let nl = part[at..]
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| bad("part headers not terminated"))?;
        let line = &part[at..at + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        at += nl + 1;
        if line.is_empty() {
            break;
        }
        let line = std::str::from_utf8(line).map_err(|_| bad("part header is not UTF-8"))?;
        let (field, value) = line
            .split_once(':')
            .ok_or_else(|| bad("malformed part header"))?;
        if field.trim().eq_ignore_ascii_case("content-disposition") {
            let (disposition, params) = parse_params(value);
            if !disposition.eq_ignore_ascii_case("form-data") {
                return Err(bad("part disposition is not form-data"));
            }
            name = params
                .into_iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("name"))
                .map(|(_, v)| v);
        }
    }
    Ok(Part {
        name,
        body: &part[at..],
    })
}

// ---- CLI script ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Top,
    Config,
    User,
}

#[derive(Debug, PartialEq, Eq)]
enum Cmd {
    CaptureStop,
    CaptureStart,
    CaptureShow,
    CaptureInterface(String),
    ConfigureSystem,
    DeleteSnmpUser(String),
    NewSnmpUser,
    User(String),
    AuthProtocol(String),
    PrivProtocol(String),
    AuthKey(Secret),
    PrivKey(Secret),
    CommitUser,
    ExitConfig,
    Write,
}

const REFUSED: &[&str] = &[
    "copy",
    "reload",
    "ping",
    "traceroute",
    "telnet",
    "ssh",
    "clear-history",
];

/// Checks the whole script against the CLI grammar (modes included) without touching the state.
/// Returns the commands with their 1-based line numbers.
fn validate(kind: Kind, script: &str) -> Result<Vec<(usize, Cmd)>, String> {
    let mut mode = Mode::Top;
    let mut user_named = false;
    let mut cmds = Vec::new();
    for (i, raw) in script.split('\n').enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let n = i + 1;
        let words: Vec<&str> = line.split_whitespace().collect();
        let quoted = redacted(&words);
        if REFUSED.contains(&words[0]) {
            return Err(format!(
                "Interactive or long-running command refused at line {n}: {quoted}"
            ));
        }
        let cmd = match (mode, words.as_slice()) {
            (Mode::Top, ["debug", "capture", plane, "physical", arg]) if *plane == kind.plane() => {
                match *arg {
                    "stop" => Cmd::CaptureStop,
                    "start" => Cmd::CaptureStart,
                    "show" => Cmd::CaptureShow,
                    iface if kind.interfaces().contains(&iface) => {
                        Cmd::CaptureInterface(iface.to_string())
                    }
                    _ => return Err(format!("Invalid command at line {n}: {quoted}")),
                }
            }
            (Mode::Top, ["debug", "capture", plane, "physical", ..]) if *plane == kind.plane() => {
                return Err(format!("Invalid command at line {n}: {quoted}"))
            }
            (Mode::Top, ["configure", "system"]) => Cmd::ConfigureSystem,
            (Mode::Top, ["write"]) => Cmd::Write,
            (Mode::Config, ["no", "snmp", "v3-users", "where", "username", name]) => {
                Cmd::DeleteSnmpUser(name.to_string())
            }
            (Mode::Config, ["snmp", "v3-users", "new"]) => Cmd::NewSnmpUser,
            (Mode::Config, ["exit"]) => Cmd::ExitConfig,
            (Mode::User, ["user", name]) => Cmd::User(name.to_string()),
            (Mode::User, ["auth-protocol", p @ ("sha-1" | "md5" | "none")]) => {
                Cmd::AuthProtocol(p.to_string())
            }
            (Mode::User, ["priv-protocol", p @ ("aes-128" | "des" | "none")]) => {
                Cmd::PrivProtocol(p.to_string())
            }
            (Mode::User, ["auth-key", key]) => Cmd::AuthKey(Secret::new(key.to_string())),
            (Mode::User, ["priv-key", key]) => Cmd::PrivKey(Secret::new(key.to_string())),
            (Mode::User, ["exit"]) => Cmd::CommitUser,
            (
                Mode::User,
                ["user" | "auth-protocol" | "priv-protocol" | "auth-key" | "priv-key", ..],
            ) => return Err(format!("Invalid command at line {n}: {quoted}")),
            _ => return Err(format!("Unknown command at line {n}: {quoted}")),
        };
        match cmd {
            Cmd::ConfigureSystem => mode = Mode::Config,
            Cmd::NewSnmpUser => {
                mode = Mode::User;
                user_named = false;
            }
            Cmd::User(_) => user_named = true,
            Cmd::CommitUser if !user_named => {
                return Err(format!("SNMPv3 user without a name at line {n}"))
            }
            Cmd::CommitUser => mode = Mode::Config,
            Cmd::ExitConfig => mode = Mode::Top,
            _ => {}
        }
        cmds.push((n, cmd));
    }
    Ok(cmds)
}

/// The line as it may appear in a description: key arguments masked.
fn redacted(words: &[&str]) -> String {
    match words.first() {
        Some(&w @ ("auth-key" | "priv-key")) => format!("\"{w} ****\""),
        _ => format!("\"{}\"", words.join(" ")),
    }
}

/// Executes one validated command. Errors are runtime refusals that depend on the state.
fn apply(
    dev: &mut DeviceState,
    cmd: Cmd,
    pending: &mut Option<SnmpUser>,
    output: &mut String,
) -> Result<(), String> {
    // Validation guarantees user-mode commands follow `snmp v3-users new`; the fallback only keeps
    // this total.
    fn user(pending: &mut Option<SnmpUser>) -> &mut SnmpUser {
        pending.get_or_insert_with(SnmpUser::unnamed)
    }
    match cmd {
        Cmd::CaptureStop => {
            dev.capture_active = false;
            dev.interfaces.clear();
        }
        Cmd::CaptureInterface(iface) => {
            if !dev.interfaces.contains(&iface) {
                dev.interfaces.push(iface);
            }
        }
        Cmd::CaptureStart => {
            if dev.interfaces.is_empty() {
                return Err("No capture interface selected".into());
            }
            dev.capture_active = true;
        }
        Cmd::CaptureShow => {
            if dev.capture_active {
                output.push_str("Debug capture physical is active\n");
                output.push_str(&format!("Interfaces: {}\n", dev.interfaces.join(" ")));
            } else {
                output.push_str("Debug capture physical is not active\n");
            }
        }
        Cmd::ConfigureSystem | Cmd::ExitConfig => {}
        Cmd::DeleteSnmpUser(name) => dev.snmp_users.retain(|u| u.name != name),
        Cmd::NewSnmpUser => *pending = Some(SnmpUser::unnamed()),
        Cmd::User(name) => user(pending).name = name,
        Cmd::AuthProtocol(p) => user(pending).auth_protocol = p,
        Cmd::PrivProtocol(p) => user(pending).priv_protocol = p,
        Cmd::AuthKey(k) => user(pending).auth_key = Some(k),
        Cmd::PrivKey(k) => user(pending).priv_key = Some(k),
        Cmd::CommitUser => {
            let Some(user) = pending.take() else {
                return Ok(());
            };
            if dev.snmp_users.iter().any(|u| u.name == user.name) {
                return Err(format!("SNMPv3 user {} already exists", user.name));
            }
            dev.snmp_users.push(user);
        }
        Cmd::Write => dev.saved = true,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::base64;
    use serde_json::Value;

    fn auth() -> Auth {
        Auth {
            admin_user: "Admin".into(),
            admin_password: Secret::new("adm-pw".into()),
            monitor_user: "Mon".into(),
            monitor_password: Secret::new("mon-pw".into()),
        }
    }

    fn request(method: &str, path: &str, user: Option<(&str, &str)>) -> Request {
        let mut headers = vec![("Host".to_string(), "10.0.0.1".to_string())];
        if let Some((u, p)) = user {
            headers.push((
                "Authorization".into(),
                format!("Basic {}", base64(format!("{u}:{p}").as_bytes())),
            ));
        }
        Request {
            method: method.into(),
            path: path.into(),
            headers,
            body: vec![],
        }
    }

    const ADMIN: Option<(&str, &str)> = Some(("Admin", "adm-pw"));
    const MONITOR: Option<(&str, &str)> = Some(("Mon", "mon-pw"));

    /// A cliScript upload the way the original tool sent it.
    fn script_request(script: &str) -> Request {
        let body = format!(
            "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cli.txt\"\r\n\r\n{script}\r\n--XyZ--\r\n"
        );
        let mut req = request("PUT", CLI_SCRIPT, ADMIN);
        req.headers.push((
            "Content-Type".into(),
            "multipart/form-data; boundary=XyZ".into(),
        ));
        req.body = body.into_bytes();
        req
    }

    fn reply(resp: &Response) -> (u16, Value) {
        let v = if resp.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&resp.body).unwrap()
        };
        (resp.status, v)
    }

    fn run(dev: &mut DeviceState, script: &str) -> (u16, Value) {
        reply(&handle(dev, &auth(), &script_request(script)))
    }

    /// The shape real devices answer with (the original controller requires `status`).
    fn applied(output: &str) -> (u16, Value) {
        (
            200,
            serde_json::json!({"status": "success", "description": "CLI script applied", "output": output}),
        )
    }

    fn rejected(description: &str) -> (u16, Value) {
        rejected_after(description, "")
    }

    /// An upload that is not a script at all: the device says why, as for any bad request.
    fn malformed(description: &str) -> (u16, Value) {
        (400, serde_json::json!({ "description": description }))
    }

    fn rejected_after(description: &str, output: &str) -> (u16, Value) {
        (
            400,
            serde_json::json!({"status": "failure", "description": description, "output": output}),
        )
    }

    const ACTIVE_MSBR: &str = "Debug capture physical is active\nInterfaces: eth-wan eth-lan\n";
    const ACTIVE_GW: &str = "Debug capture physical is active\nInterfaces: eth-lan\n";
    const INACTIVE: &str = "Debug capture physical is not active\n";

    /// Each case: device kind, then a sequence of (script, expected reply, capture active after,
    /// interfaces after) applied to one device.
    #[test]
    fn capture_scripts() {
        type Step = (&'static str, (u16, Value), bool, &'static [&'static str]);
        let cases: Vec<(Kind, Vec<Step>)> = vec![
            (
                Kind::Msbr,
                vec![
                    ("debug capture data physical show", applied(INACTIVE), false, &[]),
                    (
                        "debug capture data physical stop\ndebug capture data physical eth-wan\n debug capture data physical eth-lan \r\n\r\ndebug capture data physical eth-wan\ndebug capture data physical start\ndebug capture data physical show",
                        applied(ACTIVE_MSBR),
                        true,
                        &["eth-wan", "eth-lan"],
                    ),
                    ("debug capture data physical show\r\n", applied(ACTIVE_MSBR), true, &["eth-wan", "eth-lan"]),
                    ("debug capture data physical stop\ndebug capture data physical show", applied(INACTIVE), false, &[]),
                    ("debug capture data physical start", rejected("No capture interface selected (line 1)"), false, &[]),
                    (
                        "debug capture data physical cellular-wan\ndebug capture data physical stop\ndebug capture data physical start\ndebug capture data physical show",
                        rejected("No capture interface selected (line 3)"),
                        false,
                        &[],
                    ),
                    (
                        "debug capture data physical xdsl-wan\ndebug capture data physical start\ndebug capture data physical fiber-wan",
                        applied(""),
                        true,
                        &["xdsl-wan", "fiber-wan"],
                    ),
                ],
            ),
            (
                Kind::Gwsbc,
                vec![
                    (
                        "debug capture voip physical stop\ndebug capture voip physical eth-lan\ndebug capture voip physical start\ndebug capture voip physical show",
                        applied(ACTIVE_GW),
                        true,
                        &["eth-lan"],
                    ),
                    ("debug capture voip physical stop\ndebug capture voip physical show", applied(INACTIVE), false, &[]),
                ],
            ),
        ];
        for (kind, steps) in cases {
            let mut dev = DeviceState::new("10.0.0.1", kind, "SN1", 0);
            assert_eq!(dev.kind(), kind);
            for (script, want, active, ifaces) in steps {
                assert_eq!(run(&mut dev, script), want, "{kind:?}: {script:?}");
                assert_eq!(dev.capture_active(), active, "{kind:?}: {script:?}");
                assert_eq!(dev.interfaces(), ifaces, "{kind:?}: {script:?}");
            }
        }
    }

    #[test]
    fn invalid_scripts_change_nothing() {
        let cases: Vec<(Kind, &str, &str)> = vec![
            (Kind::Msbr, "debug capture data physical eth-lan\ndebug capture data physical wifi", "Invalid command at line 2: \"debug capture data physical wifi\""),
            (Kind::Msbr, "debug capture data physical", "Invalid command at line 1: \"debug capture data physical\""),
            (Kind::Msbr, "debug capture data physical eth-lan extra", "Invalid command at line 1: \"debug capture data physical eth-lan extra\""),
            (Kind::Msbr, "debug capture voip physical eth-lan", "Unknown command at line 1: \"debug capture voip physical eth-lan\""),
            (Kind::Gwsbc, "debug capture data physical eth-lan", "Unknown command at line 1: \"debug capture data physical eth-lan\""),
            (Kind::Gwsbc, "debug capture voip physical eth-wan", "Invalid command at line 1: \"debug capture voip physical eth-wan\""),
            (Kind::Gwsbc, "debug capture voip physical eth-lan\ndebug_capture voip physical start", "Unknown command at line 2: \"debug_capture voip physical start\""),
            (Kind::Msbr, "\n\nshow running-config", "Unknown command at line 3: \"show running-config\""),
            (Kind::Msbr, "copy debug-capture to tftp://10.0.0.9", "Interactive or long-running command refused at line 1: \"copy debug-capture to tftp://10.0.0.9\""),
            (Kind::Gwsbc, "reload now", "Interactive or long-running command refused at line 1: \"reload now\""),
            (Kind::Msbr, "ping 8.8.8.8", "Interactive or long-running command refused at line 1: \"ping 8.8.8.8\""),
            (Kind::Msbr, "configure system\nwrite", "Unknown command at line 2: \"write\""),
            (Kind::Msbr, "configure system\ndebug capture data physical eth-lan", "Unknown command at line 2: \"debug capture data physical eth-lan\""),
            (Kind::Msbr, "exit", "Unknown command at line 1: \"exit\""),
            (Kind::Msbr, "user x", "Unknown command at line 1: \"user x\""),
            (Kind::Msbr, "configure network", "Unknown command at line 1: \"configure network\""),
            (Kind::Msbr, "debug capture data physical eth-lan\nconfigure system\nsnmp v3-users new\nauth-protocol sha-1\nexit\nexit\nwrite", "SNMPv3 user without a name at line 5"),
            (Kind::Msbr, "configure system\nsnmp v3-users new\nuser a\nauth-protocol sha-256", "Invalid command at line 4: \"auth-protocol sha-256\""),
            (Kind::Msbr, "configure system\nsnmp v3-users new\nuser a\npriv-protocol aes-256", "Invalid command at line 4: \"priv-protocol aes-256\""),
            (Kind::Msbr, "configure system\nsnmp v3-users new\nuser a b", "Invalid command at line 3: \"user a b\""),
        ];
        for (kind, script, description) in cases {
            let mut dev = DeviceState::new("10.0.0.1", kind, "SN1", 0);
            assert_eq!(
                run(&mut dev, script),
                rejected(description),
                "{kind:?}: {script:?}"
            );
            assert!(
                !dev.capture_active() && dev.interfaces().is_empty(),
                "{script:?}"
            );
            assert!(dev.snmp_users().is_empty() && !dev.saved(), "{script:?}");
        }
    }

    const SNMP_BLOCK: &str = "configure system\n no snmp v3-users where username CaptureScript\n snmp v3-users new\n  user CaptureScript\n  auth-protocol sha-1\n  priv-protocol aes-128\n  auth-key S3cretAuthKey\n  priv-key S3cretPrivKey\n exit\nexit\nwrite\n";

    #[test]
    fn snmp_block_and_capture_in_one_script() {
        for (kind, plane, iface) in [
            (Kind::Msbr, "data", "eth-wan"),
            (Kind::Gwsbc, "voip", "eth-lan"),
        ] {
            let mut dev = DeviceState::new("10.0.0.1", kind, "SN1", 0);
            let script = format!(
                "{SNMP_BLOCK}debug capture {plane} physical stop\ndebug capture {plane} physical {iface}\ndebug capture {plane} physical start\ndebug capture {plane} physical show\n"
            );
            let resp = handle(&mut dev, &auth(), &script_request(&script));
            let text = String::from_utf8(resp.body.clone()).unwrap();
            assert_eq!(resp.status, 200, "{text}");
            assert!(!text.contains("S3cret"), "key echoed: {text}");
            assert_eq!(dev.snmp_users(), ["CaptureScript"]);
            assert!(dev.saved() && dev.capture_active());
            let user = dev.snmp_user("CaptureScript").unwrap();
            assert_eq!(
                (user.auth_protocol.as_str(), user.priv_protocol.as_str()),
                ("sha-1", "aes-128")
            );
            assert_eq!(
                user.auth_key.as_ref().map(Secret::expose),
                Some("S3cretAuthKey")
            );
            assert_eq!(
                user.priv_key.as_ref().map(Secret::expose),
                Some("S3cretPrivKey")
            );
            assert!(!format!("{user:?}").contains("S3cret"));

            // The same block again replaces the user (it deletes before creating).
            assert_eq!(run(&mut dev, SNMP_BLOCK), applied(""));
            assert_eq!(dev.snmp_users(), ["CaptureScript"]);
        }
    }

    #[test]
    fn snmp_edge_cases() {
        let mut dev = DeviceState::new("10.0.0.1", Kind::Msbr, "SN1", 0);
        // Creating a user that exists (no `no snmp ...` first) fails at run time, after earlier lines.
        assert_eq!(run(&mut dev, SNMP_BLOCK).0, 200);
        let dup = "configure system\nsnmp v3-users new\nuser CaptureScript\nexit\nexit";
        assert_eq!(
            run(&mut dev, dup),
            rejected("SNMPv3 user CaptureScript already exists (line 4)")
        );
        // The reply of a script that fails part-way carries what the CLI printed before.
        let shown = format!("debug capture data physical show\n{dup}");
        assert_eq!(
            run(&mut dev, &shown),
            rejected_after(
                "SNMPv3 user CaptureScript already exists (line 5)",
                "Debug capture physical is not active\n"
            )
        );
        // A user never committed with `exit` is dropped with its script.
        assert_eq!(
            run(&mut dev, "configure system\nsnmp v3-users new\nuser Other"),
            applied("")
        );
        assert_eq!(dev.snmp_users(), ["CaptureScript"]);
        // Removal.
        let remove = "configure system\nno snmp v3-users where username CaptureScript\nno snmp v3-users where username Absent\nexit\nwrite";
        assert_eq!(run(&mut dev, remove), applied(""));
        assert!(dev.snmp_users().is_empty());

        // Bad key lines are rejected without echoing the key, wherever they appear.
        let bad_keys = [
            (
                "configure system\nsnmp v3-users new\nuser a\nauth-key Sekrit1 Sekrit2",
                "Invalid command at line 4: \"auth-key ****\"",
            ),
            (
                "configure system\nsnmp v3-users new\nuser a\npriv-key",
                "Invalid command at line 4: \"priv-key ****\"",
            ),
            (
                "auth-key Sekrit1",
                "Unknown command at line 1: \"auth-key ****\"",
            ),
            (
                "configure system\npriv-key Sekrit1",
                "Unknown command at line 2: \"priv-key ****\"",
            ),
        ];
        for (script, description) in bad_keys {
            let resp = handle(&mut dev, &auth(), &script_request(script));
            assert_eq!(reply(&resp), rejected(description), "{script:?}");
            assert!(!String::from_utf8_lossy(&resp.body).contains("Sekrit"));
        }
    }

    #[test]
    fn busy_first_gets_409_without_state_change() {
        let mut dev = DeviceState::new("10.0.0.1", Kind::Gwsbc, "SN1", 2);
        let script = "debug capture voip physical eth-lan\ndebug capture voip physical start";
        let busy = (
            409,
            serde_json::json!({"description": "Device is busy, try again later"}),
        );
        assert_eq!(run(&mut dev, script), busy);
        // Status is not a CLI request and does not use up the busy answers.
        assert_eq!(
            handle(&mut dev, &auth(), &request("GET", STATUS, ADMIN)).status,
            200
        );
        assert_eq!(run(&mut dev, script), busy);
        assert!(!dev.capture_active());
        assert_eq!(run(&mut dev, script), applied(""));
        assert!(dev.capture_active());
        assert_eq!(dev.requests(), 4);
    }

    #[test]
    fn routes_and_auth() {
        type Case<'a> = (
            &'a str,
            &'a str,
            Option<(&'a str, &'a str)>,
            u16,
            Option<&'a str>,
        );
        let cases: Vec<Case> = vec![
            ("GET", STATUS, None, 401, Some("Unauthorized")),
            (
                "GET",
                STATUS,
                Some(("Admin", "wrong")),
                401,
                Some("Unauthorized"),
            ),
            (
                "GET",
                STATUS,
                Some(("Mon", "adm-pw")),
                401,
                Some("Unauthorized"),
            ),
            (
                "GET",
                STATUS,
                Some(("nobody", "x")),
                401,
                Some("Unauthorized"),
            ),
            ("GET", "/api/v1/nothing", None, 401, Some("Unauthorized")),
            ("GET", STATUS, MONITOR, 200, None),
            ("GET", "/api/v1/status?x=1", ADMIN, 200, None),
            ("GET", "/api/v1/status/", ADMIN, 200, None),
            ("GET", ALARMS, MONITOR, 204, None),
            ("GET", ALARMS, ADMIN, 204, None),
            ("PUT", CLI_SCRIPT, MONITOR, 403, Some("Forbidden")),
            ("GET", "/api/v1/files", MONITOR, 403, Some("Forbidden")),
            (
                "POST",
                "/api/v1/actions/reset",
                MONITOR,
                403,
                Some("Forbidden"),
            ),
            ("GET", "/api/v1/filesystem", MONITOR, 404, Some("Not found")),
            ("GET", "/api/v1/nothing", ADMIN, 404, Some("Not found")),
            ("GET", "/", ADMIN, 404, Some("Not found")),
            ("POST", STATUS, ADMIN, 405, Some("Method not allowed")),
            ("DELETE", ALARMS, MONITOR, 405, Some("Method not allowed")),
            ("GET", CLI_SCRIPT, ADMIN, 405, Some("Method not allowed")),
        ];
        for (method, path, user, status, description) in cases {
            let mut dev = DeviceState::new("10.0.0.1", Kind::Msbr, "SN1", 0);
            let (got, body) = reply(&handle(&mut dev, &auth(), &request(method, path, user)));
            assert_eq!(got, status, "{method} {path} {user:?}");
            if let Some(d) = description {
                assert_eq!(
                    body,
                    serde_json::json!({ "description": d }),
                    "{method} {path}"
                );
            }
            assert_eq!(dev.requests(), 1);
        }
    }

    #[test]
    fn status_by_kind() {
        let cases = [
            (Kind::Msbr, "M500L-MSBR", "7.20A.258.119"),
            (Kind::Gwsbc, "Mediant 800 SBC", "7.40A.500.212"),
        ];
        for (kind, product, version) in cases {
            let mut dev = DeviceState::new("10.1.2.3", kind, "I1234", 0);
            let (status, v) = reply(&handle(&mut dev, &auth(), &request("GET", STATUS, MONITOR)));
            assert_eq!(status, 200);
            assert_eq!(v["productType"], product);
            assert_eq!(v["versionID"], version);
            assert_eq!(v["serialNumber"], "I1234");
            assert_eq!(v["operationalState"], "UNLOCKED");
            assert_eq!(v["ipAddress"], "10.1.2.3");
            assert!(v["systemUpTime"].is_u64());
        }
    }

    #[test]
    fn multipart_edge_cases() {
        const SCRIPT: &str =
            "debug capture data physical eth-lan\r\ndebug capture data physical show";
        let ok = applied(INACTIVE);
        let cases: Vec<(&str, String, (u16, Value))> = vec![
            // The original tool's shape.
            ("multipart/form-data; boundary=b1", format!("--b1\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cli.txt\"\r\n\r\n{SCRIPT}\r\n--b1--\r\n"), ok.clone()),
            // Quoted boundary with a space, part Content-Type, preamble and epilogue.
            ("Multipart/Form-Data; charset=utf-8; boundary=\"a b:c\"", format!("preamble\r\n--a b:c\r\nContent-Type: application/octet-stream\r\ncontent-disposition: form-data; name=file; filename=cli.txt\r\n\r\n{SCRIPT}\r\n--a b:c--\r\nepilogue"), ok.clone()),
            // Extra parts before and after; the first `file` part wins.
            ("multipart/form-data; boundary=zz", format!("--zz\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nreload now\r\n--zz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cli.txt\"\r\n\r\n{SCRIPT}\r\n--zz\r\nContent-Disposition: form-data; name=\"file2\"\r\n\r\nx\r\n--zz--"), ok.clone()),
            // Bare LF line ends and transport padding after the delimiter.
            ("multipart/form-data; boundary=q", format!("--q  \nContent-Disposition: form-data; name=\"file\"\n\n{SCRIPT}\n--q--\n"), ok.clone()),
            // Content that merely contains the boundary text mid-line is not a delimiter.
            ("multipart/form-data; boundary=q", "--q\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nfoo --q bar\r\n--q--\r\n".to_string(), rejected("Unknown command at line 1: \"foo --q bar\"")),
            ("multipart/form-data; boundary=b1", "--b1\r\nContent-Disposition: form-data; name=\"notfile\"\r\n\r\nx\r\n--b1--\r\n".to_string(), malformed("Missing multipart part 'file'")),
            ("multipart/form-data; boundary=b1", "--b1--\r\n".to_string(), malformed("Missing multipart part 'file'")),
            ("multipart/form-data; boundary=b1", format!("--b1\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n{SCRIPT}\r\n"), malformed("Bad multipart body: no closing delimiter")),
            ("multipart/form-data; boundary=b1", "no delimiter at all".to_string(), malformed("Bad multipart body: no boundary delimiter")),
            ("multipart/form-data; boundary=b1", "--b1\r\nContent-Disposition: form-data; name=\"file\"\r\n--b1--".to_string(), malformed("Bad multipart body: part headers not terminated")),
            ("multipart/form-data; boundary=b1", "--b1\r\nNoColonHere\r\n\r\nx\r\n--b1--".to_string(), malformed("Bad multipart body: malformed part header")),
            ("multipart/form-data; boundary=b1", "--b1junk\r\n".to_string(), malformed("Bad multipart body: delimiter not followed by a line end")),
            ("multipart/form-data", String::new(), malformed("Missing multipart boundary")),
            ("multipart/form-data; boundary=\"\"", String::new(), malformed("Bad multipart boundary")),
            ("application/json", "{}".to_string(), malformed("Expected multipart/form-data")),
        ];
        for (content_type, body, want) in cases {
            let mut dev = DeviceState::new("10.0.0.1", Kind::Msbr, "SN1", 0);
            let mut req = request("PUT", CLI_SCRIPT, ADMIN);
            req.headers
                .push(("Content-Type".into(), content_type.into()));
            req.body = body.into_bytes();
            assert_eq!(
                reply(&handle(&mut dev, &auth(), &req)),
                want,
                "{content_type}"
            );
        }
        // No Content-Type at all; a non-UTF-8 script.
        let mut dev = DeviceState::new("10.0.0.1", Kind::Msbr, "SN1", 0);
        let req = request("PUT", CLI_SCRIPT, ADMIN);
        assert_eq!(
            reply(&handle(&mut dev, &auth(), &req)),
            malformed("Missing Content-Type: expected multipart/form-data")
        );
        let mut req = script_request("x");
        req.body =
            b"--XyZ\r\nContent-Disposition: form-data; name=file\r\n\r\n\xff\r\n--XyZ--".to_vec();
        assert_eq!(
            reply(&handle(&mut dev, &auth(), &req)),
            malformed("CLI script is not UTF-8 text")
        );
    }
}
