//! The lab's OVOC: the alarm-forwarding REST API of ovoc.md under `/ovoc/v1` (for `tc lab up`),
//! and the alarm OVOC would then forward (for `tc lab alarm`).
//!
//! The two halves run in different processes and meet in two files in the lab directory:
//! `ovoc-devices.json` (written once at start) and `ovoc-rules.json` (rewritten atomically after
//! every change, before the change is acknowledged, so a reader never sees a rule the API denied
//! or a half-written file).
//!
//! The emulator is stricter than a real OVOC is known to be (required fields, known device ids,
//! unique rule names): it exists to catch client mistakes, not to forgive them.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::{json, Value};

use crate::lab::http::{Handler, Request, Response};
use crate::secret::Secret;
use crate::timefmt::Utc;

pub const RULES_FILE: &str = "ovoc-rules.json";
pub const DEVICES_FILE: &str = "ovoc-devices.json";
const PREFIX: &str = "/ovoc/v1";
/// local0: what OVOC's syslog destinations are commonly configured with.
const FACILITY: u8 = 16;
/// OVOC severity -> syslog severity (ovoc.md): Major -> Critical, Clear -> Notice.
const SYSLOG_CRITICAL: u8 = 2;
const SYSLOG_NOTICE: u8 = 5;

/// OVOC's SNMP name of the Connection Alarm (shared/spec/ovoc.md), written out here rather than
/// taken from the agent's code, so that a wrong name in the agent fails the lab's tests.
const ALARM_NAME: &str = "acEMSNodeConnectionLostAlarm";

/// The rule name the agent gives a device's forwarding rule (shared/spec/ovoc.md).
fn rule_name(device: &str) -> String {
    format!("Forward Connection Lost from {device}")
}

/// One forwarding rule as the lab stores it (the rules file is a `Vec<LabRule>`).
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct LabRule {
    pub id: u64,
    pub name: String,
    pub dest_ip: String,
    pub dest_port: u16,
    pub devices: Vec<u64>,
    pub alarm_names: Vec<String>,
}

impl LabRule {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "ruleDestType": "SYSLOG",
            "destSyslog": {"syslogServerIP": self.dest_ip, "syslogServerPort": self.dest_port},
            "forwardType": "ALLOW",
            "tenantId": -1,
            "alarmDevicesFilter": self.devices,
            "alarmNamesFilter": self.alarm_names,
        })
    }
}

struct Rules {
    list: Vec<LabRule>,
    next_id: u64,
}

pub struct LabOvoc {
    devices: Vec<(u64, String, String)>,
    user: String,
    password: Secret,
    rules_file: PathBuf,
    /// ovoc.md: "no rule" may come back as a non-200 or as an empty list; the lab answers 404
    /// unless this is set, so clients can be tested against both.
    empty_list_when_no_rule: bool,
    rules: Mutex<Rules>,
}

fn error(status: u16, description: &str) -> Response {
    Response::json(status, &json!({ "description": description }))
}

/// Readers (tests, benchmarks) see the old file or the new one, never a half-written one. No
/// fsync: these files only mirror the lab's memory for readers, and the whole rule list is
/// rewritten on every change under the rules lock, so an fsync each made the emulated OVOC
/// serve a fleet's rule creations one disk flush at a time.
fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

/// Decodes `%XX` (a malformed escape is an error, not passed through).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `(field='value')` from a query string, decoded; `Ok(None)` when there is no filter.
fn parse_filter(query: &str) -> Result<Option<(String, String)>, String> {
    let Some(raw) = query.split('&').find_map(|kv| kv.strip_prefix("filter=")) else {
        return Ok(None);
    };
    let bad = || format!("Invalid filter {raw:?}: expected (field='value')");
    let f = percent_decode(raw).ok_or_else(bad)?;
    let inner = f
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(bad)?;
    let (field, value) = inner.split_once('=').ok_or_else(bad)?;
    let value = value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .ok_or_else(bad)?;
    if field.is_empty() || !field.bytes().all(|c| c.is_ascii_alphanumeric()) || value.contains('\'')
    {
        return Err(bad());
    }
    Ok(Some((field.to_string(), value.to_string())))
}

fn same_address(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Fields both POST and PUT carry: (dest ip, dest port, device ids, alarm names).
type RuleFields = (String, u16, Vec<u64>, Vec<String>);

impl LabOvoc {
    /// `devices`: (device id, IP address, device name) managed by this OVOC. Starts with no
    /// rules and writes that to `rules_file` at once, so rules of an earlier lab are not used.
    pub fn new(
        devices: Vec<(u64, String, String)>,
        user: &str,
        password: Secret,
        rules_file: PathBuf,
    ) -> LabOvoc {
        let lab = LabOvoc {
            devices,
            user: user.to_string(),
            password,
            rules_file,
            empty_list_when_no_rule: false,
            rules: Mutex::new(Rules {
                list: Vec::new(),
                next_id: 1,
            }),
        };
        if let Err(e) = lab.persist(&[]) {
            log::warn!("lab OVOC: {e}");
        }
        lab
    }

    /// Answer a rule lookup that finds nothing with `200 {"fwdRules":[]}` instead of 404.
    #[cfg(test)]
    pub fn empty_list_when_no_rule(mut self, yes: bool) -> LabOvoc {
        self.empty_list_when_no_rule = yes;
        self
    }

    #[cfg(test)]
    pub fn rules(&self) -> Vec<LabRule> {
        self.lock().list.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rules> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self, list: &[LabRule]) -> Result<(), String> {
        let data = serde_json::to_vec(list).unwrap_or_default();
        write_atomic(&self.rules_file, &data)
            .map_err(|e| format!("writing {}: {e}", self.rules_file.display()))
    }

    /// Persists first and commits in memory only if that worked, so the file never lags behind
    /// an acknowledged change.
    fn commit(&self, rules: &mut Rules, list: Vec<LabRule>) -> Result<(), Response> {
        self.persist(&list).map_err(|e| {
            log::error!("lab OVOC: {e}");
            error(500, "Could not store the rules")
        })?;
        rules.list = list;
        Ok(())
    }

    fn authorized(&self, req: &Request) -> bool {
        req.basic_auth().is_some_and(|(u, p)| {
            u == self.user && ct_eq(p.as_bytes(), self.password.expose().as_bytes())
        })
    }

    fn devices_get(&self, query: &str) -> Response {
        let (field, value) = match parse_filter(query) {
            Ok(Some(f)) => f,
            Ok(None) => (String::new(), String::new()),
            Err(e) => return error(400, &e),
        };
        if !matches!(field.as_str(), "" | "ipAddress" | "fqdn") {
            return error(400, &format!("Unsupported filter field {field:?}"));
        }
        let matches = |ip: &str, name: &str| match field.as_str() {
            "ipAddress" => same_address(ip, &value),
            "fqdn" => name.eq_ignore_ascii_case(&value),
            _ => true,
        };
        let list: Vec<Value> = self
            .devices
            .iter()
            .filter(|(_, ip, name)| matches(ip, name))
            .map(|(id, ip, name)| json!({"id": id, "ipAddress": ip, "name": name}))
            .collect();
        Response::json(200, &json!({ "devices": list }))
    }

    fn rules_get(&self, query: &str) -> Response {
        let filter = match parse_filter(query) {
            Ok(f) => f,
            Err(e) => return error(400, &e),
        };
        let rules = self.lock();
        let list: Vec<Value> = match &filter {
            None => rules.list.iter().map(LabRule::to_json).collect(),
            Some((field, value)) if field == "name" => rules
                .list
                .iter()
                .filter(|r| r.name == *value)
                .map(LabRule::to_json)
                .collect(),
            Some((field, _)) => return error(400, &format!("Unsupported filter field {field:?}")),
        };
        if list.is_empty() && filter.is_some() && !self.empty_list_when_no_rule {
            return error(404, "No rules found");
        }
        Response::json(200, &json!({ "fwdRules": list }))
    }

    /// The fields POST and PUT share, checked like a strict server would.
    fn rule_fields(&self, v: &Value) -> Result<RuleFields, String> {
        let dest = v.get("destSyslog").ok_or("Missing destSyslog")?;
        let ip = dest
            .get("syslogServerIP")
            .and_then(Value::as_str)
            .filter(|s| s.parse::<IpAddr>().is_ok())
            .ok_or("destSyslog.syslogServerIP must be an IP address")?;
        let port = dest
            .get("syslogServerPort")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|&p| p != 0)
            .ok_or("destSyslog.syslogServerPort must be a port number")?;
        let devices: Vec<u64> = v
            .get("alarmDevicesFilter")
            .and_then(Value::as_array)
            .ok_or("alarmDevicesFilter must be a list of device ids")?
            .iter()
            .map(|d| {
                d.as_u64()
                    .ok_or("alarmDevicesFilter must be a list of device ids")
            })
            .collect::<Result<_, _>>()?;
        if devices.is_empty() {
            return Err("alarmDevicesFilter is empty (that would forward every device)".into());
        }
        if let Some(unknown) = devices
            .iter()
            .find(|d| !self.devices.iter().any(|(id, _, _)| id == *d))
        {
            return Err(format!("Unknown device id {unknown}"));
        }
        let names: Vec<String> = v
            .get("alarmNamesFilter")
            .and_then(Value::as_array)
            .ok_or("alarmNamesFilter must be a list of alarm names")?
            .iter()
            .map(|n| {
                n.as_str()
                    .map(str::to_string)
                    .ok_or("alarmNamesFilter must be a list of alarm names")
            })
            .collect::<Result<_, _>>()?;
        for k in [
            "alarmTenantsFilter",
            "alarmRegionsFilter",
            "alarmEndpointsFilter",
            "alarmSitesFilter",
        ] {
            if v.get(k).is_some_and(|f| !f.is_array()) {
                return Err(format!("{k} must be a list"));
            }
        }
        Ok((ip.to_string(), port, devices, names))
    }

    fn rules_post(&self, body: &[u8]) -> Response {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return error(400, "Request body is not JSON");
        };
        let checked = (|| {
            if v.get("ruleDestType").and_then(Value::as_str) != Some("SYSLOG") {
                return Err("ruleDestType must be SYSLOG".to_string());
            }
            if v.get("forwardType").and_then(Value::as_str) != Some("ALLOW") {
                return Err("forwardType must be ALLOW".into());
            }
            if v.get("tenantId").and_then(Value::as_i64).is_none() {
                return Err("tenantId must be a number".into());
            }
            let name = v
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.trim().is_empty())
                .ok_or("name must be a non-empty string")?;
            Ok((name.to_string(), self.rule_fields(&v)?))
        })();
        let (name, (dest_ip, dest_port, devices, alarm_names)) = match checked {
            Ok(c) => c,
            Err(e) => return error(400, &e),
        };
        let mut rules = self.lock();
        if rules.list.iter().any(|r| r.name == name) {
            return error(409, &format!("A rule named {name:?} already exists"));
        }
        let id = rules.next_id;
        let mut list = rules.list.clone();
        list.push(LabRule {
            id,
            name,
            dest_ip,
            dest_port,
            devices,
            alarm_names,
        });
        if let Err(resp) = self.commit(&mut rules, list) {
            return resp;
        }
        rules.next_id += 1;
        Response::json(201, &json!({ "id": id }))
    }

    fn rule_put(&self, id: u64, body: &[u8]) -> Response {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return error(400, "Request body is not JSON");
        };
        let (dest_ip, dest_port, devices, alarm_names) = match self.rule_fields(&v) {
            Ok(f) => f,
            Err(e) => return error(400, &e),
        };
        let mut rules = self.lock();
        let mut list = rules.list.clone();
        let Some(rule) = list.iter_mut().find(|r| r.id == id) else {
            return error(404, &format!("No rule with id {id}"));
        };
        rule.dest_ip = dest_ip;
        rule.dest_port = dest_port;
        rule.devices = devices;
        rule.alarm_names = alarm_names;
        match self.commit(&mut rules, list) {
            Ok(()) => Response::json(200, &json!({})),
            Err(resp) => resp,
        }
    }

    fn rule_delete(&self, id: u64) -> Response {
        let mut rules = self.lock();
        if !rules.list.iter().any(|r| r.id == id) {
            return error(404, &format!("No rule with id {id}"));
        }
        let list = rules.list.iter().filter(|r| r.id != id).cloned().collect();
        match self.commit(&mut rules, list) {
            Ok(()) => Response::json(200, &json!({})),
            Err(resp) => resp,
        }
    }

    fn rule_get(&self, id: u64) -> Response {
        match self.lock().list.iter().find(|r| r.id == id) {
            Some(r) => Response::json(200, &r.to_json()),
            None => error(404, &format!("No rule with id {id}")),
        }
    }
}

impl Handler for LabOvoc {
    fn handle(&self, _local: SocketAddr, _peer: SocketAddr, req: &Request) -> Response {
        let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
        let Some(route) = path.strip_prefix(PREFIX) else {
            return error(404, "Not found");
        };
        if !self.authorized(req) {
            return error(401, "Authentication failed: wrong user name or password");
        }
        let method = req.method.as_str();
        match (method, route) {
            ("GET", "/topology/devices") => self.devices_get(query),
            ("GET", "/alarms/fwdRules") => self.rules_get(query),
            ("POST", "/alarms/fwdRules") => self.rules_post(&req.body),
            (_, "/topology/devices" | "/alarms/fwdRules") => error(405, "Method not allowed"),
            _ => {
                let Some(id) = route.strip_prefix("/alarms/fwdRules/") else {
                    return error(404, "Not found");
                };
                let Ok(id) = id.parse::<u64>() else {
                    return error(404, &format!("No rule with id {id:?}"));
                };
                match method {
                    "GET" => self.rule_get(id),
                    "PUT" => self.rule_put(id, &req.body),
                    "DELETE" => self.rule_delete(id),
                    _ => error(405, "Method not allowed"),
                }
            }
        }
    }
}

/// The forwarded syslog datagram OVOC would send for `device_ip` (the wording real servers used,
/// RFC 3164 framing, UTC time stamp).
pub fn alarm_datagram(device_ip: &str, device_name: &str, clear: bool, now: SystemTime) -> Vec<u8> {
    let t = Utc::from_system(now);
    let (severity, syslog_severity, description) = if clear {
        ("Clear", SYSLOG_NOTICE, "Connection established")
    } else {
        ("Major", SYSLOG_CRITICAL, "Connection Lost")
    };
    format!(
        "<{pri}>{stamp} ovoc-lab : New Alarm - Connection Alarm, \
         {severity}, Source:Board#1, Description:{description}, Device Name:{device_name}, \
         Tenant:Default, Region:Default, IP Address:{device_ip}, Device Type:tc-lab, \
         Device Serial:lab-{device_ip}, Device Description:tc lab emulated device",
        pri = FACILITY * 8 + syslog_severity,
        stamp = t.rfc3164(),
    )
    .into_bytes()
}

/// Records which devices the lab's OVOC manages, for `send_alarm` in another process.
pub fn write_devices(dir: &Path, devices: &[(u64, String, String)]) -> std::io::Result<()> {
    let data = serde_json::to_vec_pretty(devices).map_err(std::io::Error::other)?;
    write_atomic(&dir.join(DEVICES_FILE), &data)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let data = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_slice(&data).map_err(|e| format!("{}: not valid: {e}", path.display()))
}

/// The rule OVOC would forward `device_id`'s connection-lost alarm by; of several, the newest
/// (highest id), which is the one the latest REGISTER touched or created.
fn rule_for(rules: &[LabRule], device_id: u64) -> Option<&LabRule> {
    rules
        .iter()
        .filter(|r| r.devices.contains(&device_id))
        .filter(|r| r.alarm_names.is_empty() || r.alarm_names.iter().any(|n| n == ALARM_NAME))
        .max_by_key(|r| r.id)
}

/// `tc lab alarm`: send the alarm OVOC would forward for `device_ip` to where its rule points.
pub fn send_alarm(dir: &Path, device_ip: &str, clear: bool) -> Result<SocketAddr, String> {
    let devices_path = dir.join(DEVICES_FILE);
    if !devices_path.exists() {
        return Err(format!(
            "{} not found: is this the directory of a running `tc lab up`?",
            devices_path.display()
        ));
    }
    let devices: Vec<(u64, String, String)> = read_json(&devices_path)?;
    let (id, ip, name) = devices
        .iter()
        .find(|(_, ip, _)| same_address(ip, device_ip))
        .ok_or_else(|| {
            format!("the lab's OVOC does not manage a device with address {device_ip}")
        })?;
    let rules_path = dir.join(RULES_FILE);
    let rules: Vec<LabRule> = if rules_path.exists() {
        read_json(&rules_path)?
    } else {
        Vec::new()
    };
    let no_rule = || {
        format!(
            "no forwarding rule for {device_ip} yet: has an agent answered REGISTER for it? \
             (expected {:?} in {})",
            rule_name(device_ip),
            rules_path.display()
        )
    };
    let rule = rule_for(&rules, *id).ok_or_else(no_rule)?;
    let dest_ip: IpAddr = rule
        .dest_ip
        .parse()
        .map_err(|_| format!("rule {}: bad destination {:?}", rule.id, rule.dest_ip))?;
    let dest = SocketAddr::new(dest_ip, rule.dest_port);
    // OVOC forwards from its server, where the agent runs: the session believes alarms from the
    // inventory's ovoc addresses only, so the lab's come from there too.
    let bind: SocketAddr = match agent_ip(dir, device_ip) {
        Some(ip) if ip.is_ipv4() == dest.is_ipv4() => SocketAddr::new(ip, 0),
        _ if dest.is_ipv4() => "0.0.0.0:0".parse().expect("literal"),
        _ => "[::]:0".parse().expect("literal"),
    };
    let sock = UdpSocket::bind(bind).map_err(|e| format!("binding a UDP socket: {e}"))?;
    let datagram = alarm_datagram(ip, name, clear, SystemTime::now());
    sock.send_to(&datagram, dest)
        .map_err(|e| format!("sending the alarm for {device_ip} to {dest}: {e}"))?;
    Ok(dest)
}

/// The agent's address in the lab's inventory (`devices.csv`) for `device_ip`.
fn agent_ip(dir: &Path, device_ip: &str) -> Option<IpAddr> {
    let text = std::fs::read_to_string(dir.join("devices.csv")).ok()?;
    let rows = crate::inventory::parse(&text).ok()?;
    let row = rows.iter().find(|e| same_address(&e.device, device_ip))?;
    let ovoc = row.ovoc.as_deref()?;
    let host = ovoc
        .rsplit_once(':')
        .filter(|(_, p)| p.parse::<u16>().is_ok())
        .map_or(ovoc, |(h, _)| h);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::ovoc::rules::{create_body, update_body, OvocClient, RuleOutcome};
    use crate::tls::Trust;

    const USER: &str = "operator";
    const PW: &str = "s3cret";

    fn devices() -> Vec<(u64, String, String)> {
        vec![
            (42, "127.0.0.1".into(), "lab-msbr-0".into()),
            (43, "fe80::1".into(), "lab-gw-1".into()),
            (44, "10.0.0.7".into(), "msbr-7.example.com".into()),
        ]
    }

    fn lab(dir: &Path) -> LabOvoc {
        LabOvoc::new(
            devices(),
            USER,
            Secret::new(PW.into()),
            dir.join(RULES_FILE),
        )
    }

    fn req(method: &str, path: &str, body: Option<Value>) -> Request {
        req_as(method, path, body, USER, PW)
    }

    fn req_as(method: &str, path: &str, body: Option<Value>, user: &str, pw: &str) -> Request {
        let auth = format!(
            "Basic {}",
            crate::util::base64(format!("{user}:{pw}").as_bytes())
        );
        Request {
            method: method.into(),
            path: path.into(),
            headers: vec![("Authorization".into(), auth)],
            body: body
                .map(|b| serde_json::to_vec(&b).unwrap())
                .unwrap_or_default(),
        }
    }

    fn call(lab: &LabOvoc, r: &Request) -> (u16, Value) {
        let a: SocketAddr = "127.0.0.1:443".parse().unwrap();
        let resp = lab.handle(a, a, r);
        let v = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        (resp.status, v)
    }

    fn on_disk(dir: &Path) -> Vec<LabRule> {
        read_json(&dir.join(RULES_FILE)).unwrap()
    }

    #[test]
    fn filters() {
        let t: &[(&str, Option<(&str, &str)>)] = &[
            (
                "detail=1&filter=(ipAddress=%27192.168.200.218%27)",
                Some(("ipAddress", "192.168.200.218")),
            ),
            (
                "filter=(fqdn='a.example')&detail=1",
                Some(("fqdn", "a.example")),
            ),
            (
                "detail=1&filter=(name=%27Forward%20Connection%20Lost%20from%20fe80%3A%3A1%27)",
                Some(("name", "Forward Connection Lost from fe80::1")),
            ),
            ("detail=1", None),
            ("", None),
        ];
        for (q, want) in t {
            let got = parse_filter(q).unwrap();
            let got = got.as_ref().map(|(f, v)| (f.as_str(), v.as_str()));
            assert_eq!(got, *want, "{q}");
        }
        for bad in [
            "filter=ipAddress=%27x%27",
            "filter=(ipAddress=x)",
            "filter=(ipAddress%27x%27)",
            "filter=(=%27x%27)",
            "filter=(ip%20Address=%27x%27)",
            "filter=(name=%27a%27b%27)",
            "filter=(name=%27x%2)",
            "filter=(name=%27%FF%27)",
        ] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn datagrams() {
        // 2022-06-22T16:16:05Z and 2026-01-05T03:04:09Z.
        let june = SystemTime::UNIX_EPOCH + Duration::from_secs(1_655_914_565);
        let jan = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_582_249);
        let lost = alarm_datagram("192.168.200.218", "MSBR-1", false, june);
        assert_eq!(
            String::from_utf8(lost.clone()).unwrap(),
            "<130>Jun 22 16:16:05 ovoc-lab : New Alarm - Connection Alarm, Major, Source:Board#1, \
             Description:Connection Lost, Device Name:MSBR-1, Tenant:Default, Region:Default, \
             IP Address:192.168.200.218, Device Type:tc-lab, Device Serial:lab-192.168.200.218, \
             Device Description:tc lab emulated device"
        );
        let clear = String::from_utf8(alarm_datagram("fe80::1", "gw", true, jan)).unwrap();
        assert!(
            clear.starts_with("<133>Jan  5 03:04:09 ovoc-lab : "),
            "{clear}"
        );

        // The product's own parser must read them the way `tc session` will.
        let lost_text = crate::alarm::syslog::text(&lost);
        let (frame, alarm) = crate::alarm::read(&lost_text);
        assert_eq!(frame.framing, "rfc3164");
        assert_eq!(frame.severity, Some(2));
        let alarm = alarm.unwrap();
        assert!(alarm.is_connection_lost());
        assert_eq!(alarm.device, Some("192.168.200.218"));
        assert_eq!(alarm.device_name, Some("MSBR-1"));
        let (frame, alarm) = crate::alarm::read(&clear);
        assert_eq!(frame.severity, Some(5));
        let alarm = alarm.unwrap();
        assert!(!alarm.is_connection_lost());
        assert_eq!(alarm.device, Some("fe80::1"));
        assert_eq!(alarm.description, Some("Connection established"));
    }

    #[test]
    fn auth_and_routing() {
        let dir = tempfile::tempdir().unwrap();
        let lab = lab(dir.path());
        let devs = "/ovoc/v1/topology/devices";
        let t: &[(Request, u16)] = &[
            (req_as("GET", devs, None, USER, "wrong"), 401),
            (req_as("GET", devs, None, "other", PW), 401),
            (
                Request {
                    method: "GET".into(),
                    path: devs.into(),
                    headers: vec![],
                    body: vec![],
                },
                401,
            ),
            (req("GET", devs, None), 200),
            (req("GET", "/api/v1/status", None), 404),
            (req("GET", "/ovoc/v1/nothing", None), 404),
            (req("DELETE", devs, None), 405),
            (req("PATCH", "/ovoc/v1/alarms/fwdRules/1", None), 405),
            (req("GET", "/ovoc/v1/alarms/fwdRules/x", None), 404),
            (req("DELETE", "/ovoc/v1/alarms/fwdRules/9", None), 404),
            (
                req(
                    "PUT",
                    "/ovoc/v1/alarms/fwdRules/9",
                    Some(update_body(42, "10.0.0.5:1".parse().unwrap())),
                ),
                404,
            ),
        ];
        for (r, want) in t {
            let (status, v) = call(&lab, r);
            assert_eq!(status, *want, "{} {}", r.method, r.path);
            if status != 200 {
                assert!(v["description"].is_string(), "{} {}: {v}", r.method, r.path);
            }
        }
    }

    #[test]
    fn device_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let lab = lab(dir.path());
        let t: &[(&str, &[u64])] = &[
            ("127.0.0.1", &[42]),
            ("fe80::1", &[43]),
            ("fe80:0::0001", &[43]),
            ("192.0.2.1", &[]),
        ];
        for (ip, want) in t {
            let p = format!("/ovoc/v1{}", crate::ovoc::rules::device_lookup_path(ip));
            let (status, v) = call(&lab, &req("GET", &p, None));
            assert_eq!(status, 200, "{ip}");
            let ids: Vec<u64> = v["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_u64().unwrap())
                .collect();
            assert_eq!(ids, *want, "{ip}");
        }
        let p = format!(
            "/ovoc/v1{}",
            crate::ovoc::rules::device_lookup_path("MSBR-7.example.com")
        );
        let (_, v) = call(&lab, &req("GET", &p, None));
        assert_eq!(
            v["devices"][0],
            json!({"id": 44, "ipAddress": "10.0.0.7", "name": "msbr-7.example.com"})
        );
        for bad in ["filter=(serial=%27x%27)", "filter=garbage"] {
            let (status, v) = call(
                &lab,
                &req(
                    "GET",
                    &format!("{}?{bad}", "/ovoc/v1/topology/devices"),
                    None,
                ),
            );
            assert_eq!(status, 400, "{bad}");
            assert!(v["description"].is_string());
        }
    }

    #[test]
    fn rule_lifecycle_through_the_handler() {
        let dir = tempfile::tempdir().unwrap();
        let lab = lab(dir.path());
        assert_eq!(on_disk(dir.path()), vec![]);
        let dest: SocketAddr = "10.0.0.5:20001".parse().unwrap();
        let lookup = format!(
            "/ovoc/v1{}",
            crate::ovoc::rules::rule_lookup_path("127.0.0.1")
        );

        let (status, v) = call(&lab, &req("GET", &lookup, None));
        assert_eq!((status, v), (404, json!({"description": "No rules found"})));

        let rules_url = "/ovoc/v1/alarms/fwdRules";
        let (status, v) = call(
            &lab,
            &req("POST", rules_url, Some(create_body("127.0.0.1", 42, dest))),
        );
        assert_eq!((status, &v), (201, &json!({"id": 1})));
        let (status, _) = call(
            &lab,
            &req("POST", rules_url, Some(create_body("127.0.0.1", 42, dest))),
        );
        assert_eq!(status, 409, "duplicate names are refused");

        let want = LabRule {
            id: 1,
            name: "Forward Connection Lost from 127.0.0.1".into(),
            dest_ip: "10.0.0.5".into(),
            dest_port: 20001,
            devices: vec![42],
            alarm_names: vec![ALARM_NAME.into()],
        };
        assert_eq!(lab.rules(), vec![want.clone()]);
        assert_eq!(on_disk(dir.path()), vec![want.clone()]);

        let (status, v) = call(&lab, &req("GET", &lookup, None));
        assert_eq!(status, 200);
        assert_eq!(v["fwdRules"][0]["id"], 1);
        assert_eq!(v["fwdRules"][0]["destSyslog"]["syslogServerPort"], 20001);
        let (_, all) = call(&lab, &req("GET", rules_url, None));
        assert_eq!(all["fwdRules"].as_array().unwrap().len(), 1);

        let new_dest: SocketAddr = "[2001:db8::9]:30000".parse().unwrap();
        let (status, _) = call(
            &lab,
            &req(
                "PUT",
                "/ovoc/v1/alarms/fwdRules/1",
                Some(update_body(42, new_dest)),
            ),
        );
        assert_eq!(status, 200);
        let updated = LabRule {
            dest_ip: "2001:db8::9".into(),
            dest_port: 30000,
            ..want
        };
        assert_eq!(on_disk(dir.path()), vec![updated]);

        let (status, _) = call(&lab, &req("DELETE", "/ovoc/v1/alarms/fwdRules/1", None));
        assert_eq!(status, 200);
        assert_eq!(on_disk(dir.path()), vec![]);
        let (status, _) = call(&lab, &req("DELETE", "/ovoc/v1/alarms/fwdRules/1", None));
        assert_eq!(status, 404);

        // Ids are never reused, so a stale id cannot hit a newer rule.
        let (_, v) = call(
            &lab,
            &req("POST", rules_url, Some(create_body("127.0.0.1", 42, dest))),
        );
        assert_eq!(v, json!({"id": 2}));

        let lab = self::lab(dir.path()).empty_list_when_no_rule(true);
        let (status, v) = call(&lab, &req("GET", &lookup, None));
        assert_eq!((status, v), (200, json!({"fwdRules": []})));
    }

    #[test]
    fn bad_rule_bodies() {
        let dir = tempfile::tempdir().unwrap();
        let lab = lab(dir.path());
        let good = create_body("127.0.0.1", 42, "10.0.0.5:20001".parse().unwrap());
        let edit = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
            let mut b = good.clone();
            f(b.as_object_mut().unwrap());
            b
        };
        let t: Vec<(Value, &str)> = vec![
            (
                edit(&|b| {
                    b.insert("ruleDestType".into(), json!("EMAIL"));
                }),
                "ruleDestType",
            ),
            (
                edit(&|b| {
                    b.remove("forwardType");
                }),
                "forwardType",
            ),
            (
                edit(&|b| {
                    b.remove("tenantId");
                }),
                "tenantId",
            ),
            (
                edit(&|b| {
                    b.insert("name".into(), json!(" "));
                }),
                "name",
            ),
            (
                edit(&|b| {
                    b.remove("destSyslog");
                }),
                "destSyslog",
            ),
            (
                edit(&|b| {
                    b.insert(
                        "destSyslog".into(),
                        json!({"syslogServerIP": "ovoc", "syslogServerPort": 1}),
                    );
                }),
                "syslogServerIP",
            ),
            (
                edit(&|b| {
                    b.insert(
                        "destSyslog".into(),
                        json!({"syslogServerIP": "10.0.0.5", "syslogServerPort": 70000}),
                    );
                }),
                "syslogServerPort",
            ),
            (
                edit(&|b| {
                    b.insert("alarmDevicesFilter".into(), json!([99]));
                }),
                "Unknown device id 99",
            ),
            (
                edit(&|b| {
                    b.insert("alarmDevicesFilter".into(), json!([]));
                }),
                "empty",
            ),
            (
                edit(&|b| {
                    b.insert("alarmDevicesFilter".into(), json!(["42"]));
                }),
                "alarmDevicesFilter",
            ),
            (
                edit(&|b| {
                    b.insert("alarmNamesFilter".into(), json!("x"));
                }),
                "alarmNamesFilter",
            ),
            (
                edit(&|b| {
                    b.insert("alarmSitesFilter".into(), json!({}));
                }),
                "alarmSitesFilter",
            ),
        ];
        for (body, want) in t {
            let (status, v) = call(
                &lab,
                &req("POST", "/ovoc/v1/alarms/fwdRules", Some(body.clone())),
            );
            assert_eq!(status, 400, "{body}");
            let d = v["description"].as_str().unwrap();
            assert!(d.contains(want), "{want}: {d}");
        }
        let mut r = req("POST", "/ovoc/v1/alarms/fwdRules", None);
        r.body = b"{not json".to_vec();
        assert_eq!(call(&lab, &r).0, 400);
        assert!(lab.rules().is_empty());
    }

    #[test]
    fn unwritable_rules_file_is_a_500_and_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        let lab = LabOvoc::new(
            devices(),
            USER,
            Secret::new(PW.into()),
            dir.path().join("missing-dir").join(RULES_FILE),
        );
        let body = create_body("127.0.0.1", 42, "10.0.0.5:20001".parse().unwrap());
        let (status, _) = call(&lab, &req("POST", "/ovoc/v1/alarms/fwdRules", Some(body)));
        assert_eq!(status, 500);
        assert!(lab.rules().is_empty());
    }

    /// A lab OVOC on 127.0.0.1:<free port> with a CA-signed certificate; returns the trust to use.
    fn serve_lab(lab: Arc<LabOvoc>, dir: &Path) -> (crate::lab::http::ServerHandle, String, Trust) {
        let ca = crate::lab::pki::new_ca().unwrap();
        let leaf = ca.leaf("127.0.0.1".parse().unwrap(), "ovoc-lab").unwrap();
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let config = leaf.config;
        let server =
            crate::lab::http::serve(vec![listener], Arc::new(move |_| Some(config.clone())), lab)
                .unwrap();
        (
            server,
            format!("https://127.0.0.1:{port}/ovoc/v1/"),
            Trust::CaFile(ca_path),
        )
    }

    #[test]
    fn client_round_trip_over_https() {
        for empty_list in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let lab = Arc::new(self::lab(dir.path()).empty_list_when_no_rule(empty_list));
            let (server, url, trust) = serve_lab(lab.clone(), dir.path());
            let pw = Secret::new(PW.into());
            let timeout = Duration::from_secs(10);
            let client = OvocClient::new(&url, USER, &pw, &trust, timeout, 4).unwrap();

            let first: SocketAddr = "127.0.0.1:20001".parse().unwrap();
            let out = client.ensure_rule("127.0.0.1", first).unwrap();
            assert_eq!(
                out,
                RuleOutcome {
                    rule_id: 1,
                    device_id: 42,
                    action: "created"
                }
            );
            let second: SocketAddr = "127.0.0.1:30002".parse().unwrap();
            let out = client.ensure_rule("127.0.0.1", second).unwrap();
            assert_eq!(
                out,
                RuleOutcome {
                    rule_id: 1,
                    device_id: 42,
                    action: "updated"
                }
            );
            let rules = on_disk(dir.path());
            assert_eq!(rules.len(), 1);
            assert_eq!(
                (rules[0].dest_ip.as_str(), rules[0].dest_port),
                ("127.0.0.1", 30002)
            );
            assert_eq!(rules[0].devices, vec![42]);

            // FQDN and IPv6 devices go through the same path.
            let out = client.ensure_rule("msbr-7.example.com", first).unwrap();
            assert_eq!((out.device_id, out.action), (44, "created"));
            let out = client.ensure_rule("fe80::1", first).unwrap();
            assert_eq!((out.device_id, out.action), (43, "created"));

            let e = client.ensure_rule("192.0.2.99", first).unwrap_err();
            assert_eq!(e, "OVOC does not manage device 192.0.2.99");

            client.delete_rule(1).unwrap();
            assert_eq!(on_disk(dir.path()).len(), 2);
            assert!(lab.rules().iter().all(|r| r.id != 1));
            // Already gone is fine: the idle timer and an operator may race.
            client.delete_rule(1).unwrap();

            let wrong =
                OvocClient::new(&url, USER, &Secret::new("nope".into()), &trust, timeout, 4)
                    .unwrap();
            let e = wrong.ensure_rule("127.0.0.1", first).unwrap_err();
            assert!(
                e.contains("OVOC device lookup for 127.0.0.1")
                    && e.contains("HTTP 401")
                    && e.contains("\"operator\"")
                    && !e.contains("nope"),
                "{e}"
            );
            let e = wrong.delete_rule(2).unwrap_err();
            assert!(e.contains("HTTP 401"), "{e}");
            server.shutdown();
        }
    }

    #[test]
    fn untrusted_certificate_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let lab = Arc::new(lab(dir.path()));
        let (server, url, _) = serve_lab(lab, dir.path());
        let other = crate::lab::pki::new_ca().unwrap();
        let other_path = dir.path().join("other.pem");
        std::fs::write(&other_path, other.pem()).unwrap();
        let client = OvocClient::new(
            &url,
            USER,
            &Secret::new(PW.into()),
            &Trust::CaFile(other_path),
            Duration::from_secs(10),
            4,
        )
        .unwrap();
        let e = client
            .ensure_rule("127.0.0.1", "127.0.0.1:1".parse().unwrap())
            .unwrap_err();
        assert!(
            e.contains("OVOC device lookup for 127.0.0.1") && e.contains("TLS"),
            "{e}"
        );
        server.shutdown();
    }

    #[test]
    fn send_alarm_follows_the_rule() {
        let dir = tempfile::tempdir().unwrap();
        let lab = lab(dir.path());
        write_devices(dir.path(), &devices()).unwrap();

        let e = send_alarm(dir.path(), "127.0.0.1", false).unwrap_err();
        assert!(
            e.contains(
                "no forwarding rule for 127.0.0.1 yet: has an agent answered REGISTER for it?"
            ),
            "{e}"
        );
        let e = send_alarm(dir.path(), "192.0.2.1", false).unwrap_err();
        assert!(
            e.contains("does not manage a device with address 192.0.2.1"),
            "{e}"
        );
        let e = send_alarm(&dir.path().join("nowhere"), "127.0.0.1", false).unwrap_err();
        assert!(e.contains("ovoc-devices.json not found"), "{e}");

        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        sink.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let dest = sink.local_addr().unwrap();
        let (status, _) = call(
            &lab,
            &req(
                "POST",
                "/ovoc/v1/alarms/fwdRules",
                Some(create_body("127.0.0.1", 42, dest)),
            ),
        );
        assert_eq!(status, 201);

        for clear in [false, true] {
            assert_eq!(send_alarm(dir.path(), "127.0.0.1", clear).unwrap(), dest);
            let mut buf = [0u8; 2048];
            let (n, _) = sink.recv_from(&mut buf).unwrap();
            let text = crate::alarm::syslog::text(&buf[..n]);
            let (_, alarm) = crate::alarm::read(&text);
            let alarm = alarm.unwrap();
            assert_eq!(alarm.is_connection_lost(), !clear);
            assert_eq!(alarm.device, Some("127.0.0.1"));
            assert_eq!(alarm.device_name, Some("lab-msbr-0"));
        }
    }

    #[test]
    fn newest_matching_rule_wins() {
        let rule = |id, devices: Vec<u64>, names: Vec<&str>| LabRule {
            id,
            name: format!("r{id}"),
            dest_ip: "127.0.0.1".into(),
            dest_port: 1,
            devices,
            alarm_names: names.into_iter().map(String::from).collect(),
        };
        let rules = vec![
            rule(1, vec![42], vec![ALARM_NAME]),
            rule(3, vec![42], vec!["otherAlarm"]),
            rule(2, vec![7, 42], vec![]),
            rule(4, vec![7], vec![ALARM_NAME]),
        ];
        assert_eq!(rule_for(&rules, 42).map(|r| r.id), Some(2));
        assert_eq!(rule_for(&rules, 7).map(|r| r.id), Some(4));
        assert_eq!(rule_for(&rules, 8), None);
    }
}
