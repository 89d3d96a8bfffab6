//! The OVOC REST client for alarm-forwarding rules (ovoc.md): on REGISTER the agent makes OVOC
//! forward a device's connection-lost alarm to the requester, and its idle timer deletes the rule.
//!
//! Invariants: one request per step and no retries (a failure becomes `503` to the controller,
//! which retransmits REGISTER); every failure is an `Err` naming the operation, the device and
//! OVOC's status or `description`; the password only ever lives in the `Authorization` value,
//! which no message, log line or `Debug` output contains.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::{json, Value};

use crate::secret::Secret;
use crate::tls::Trust;

pub const ALARM_NAME: &str = "acEMSNodeConnectionLostAlarm";

/// Longest response body read; OVOC's filtered answers are a few kB.
const BODY_LIMIT: u64 = 4 << 20;
/// Longest piece of a non-JSON error body quoted in a message.
const QUOTE_MAX: usize = 200;

pub fn rule_name(device: &str) -> String {
    format!("Forward Connection Lost from {device}")
}

/// Percent-encodes everything outside RFC 3986's unreserved set, so quotes, spaces and IPv6
/// colons reach OVOC as `%27`, `%20`, `%3A`.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn filter_path(collection: &str, field: &str, value: &str) -> String {
    format!(
        "{collection}?detail=1&filter=({field}=%27{}%27)",
        encode(value)
    )
}

/// The filter query for a device lookup: `ipAddress` for IP literals, `fqdn` otherwise.
pub fn device_lookup_path(device: &str) -> String {
    let field = if device.parse::<IpAddr>().is_ok() {
        "ipAddress"
    } else {
        "fqdn"
    };
    filter_path("/topology/devices", field, device)
}

pub fn rule_lookup_path(device: &str) -> String {
    filter_path("/alarms/fwdRules", "name", &rule_name(device))
}

/// OVOC sends to this address itself, so an IPv4 requester seen through a dual-stack socket
/// (`::ffff:a.b.c.d`) must be written as plain IPv4.
fn dest_ip(dest: SocketAddr) -> String {
    match dest.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or_else(|| v6.to_string(), |v4| v4.to_string()),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

pub fn create_body(device: &str, device_id: u64, dest: SocketAddr) -> Value {
    let mut body = update_body(device_id, dest);
    let obj = body.as_object_mut().expect("update_body builds an object");
    obj.insert("ruleDestType".into(), json!("SYSLOG"));
    obj.insert("forwardType".into(), json!("ALLOW"));
    obj.insert("name".into(), json!(rule_name(device)));
    obj.insert("tenantId".into(), json!(-1));
    body
}

pub fn update_body(device_id: u64, dest: SocketAddr) -> Value {
    json!({
        "destSyslog": {"syslogServerIP": dest_ip(dest), "syslogServerPort": dest.port()},
        "alarmTenantsFilter": [],
        "alarmRegionsFilter": [],
        "alarmEndpointsFilter": [],
        "alarmSitesFilter": [],
        "alarmDevicesFilter": [device_id],
        "alarmNamesFilter": [ALARM_NAME],
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleOutcome {
    pub rule_id: u64,
    pub device_id: u64,
    /// `created` or `updated`.
    pub action: &'static str,
}

/// OVOC's `{"description": ...}`, else the start of whatever it sent, else a placeholder.
fn description(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        if let Some(d) = v.get("description").and_then(Value::as_str) {
            return d.to_string();
        }
    }
    let t = body.trim();
    if t.is_empty() {
        return "empty body".into();
    }
    let mut end = t.len().min(QUOTE_MAX);
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    let cut = if end < t.len() { "..." } else { "" };
    format!("{:?}{cut}", &t[..end])
}

/// An id as OVOC may write it: a JSON number or a string of digits.
fn id_of(v: &Value) -> Option<u64> {
    match v.get("id")? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn json_of(body: &str) -> Result<Value, String> {
    serde_json::from_str(body)
        .map_err(|e| format!("reply is not JSON ({e}): {}", description(body)))
}

/// The device id from a 200 device lookup; `None` when OVOC does not manage the device.
fn parse_device_id(body: &str) -> Result<Option<u64>, String> {
    let v = json_of(body)?;
    let list = v
        .get("devices")
        .and_then(Value::as_array)
        .ok_or("reply has no \"devices\" list")?;
    let Some(first) = list.first() else {
        return Ok(None);
    };
    if list.len() > 1 {
        log::warn!(
            "OVOC returned {} devices for one address; using the first",
            list.len()
        );
    }
    id_of(first)
        .map(Some)
        .ok_or_else(|| "the device in the reply has no numeric \"id\"".to_string())
}

/// The rule id from a 200 rule lookup; `None` when there is no such rule. OVOC's filter may match
/// more loosely than equality (`...from 10.0.0.1` inside `...from 10.0.0.10`), so a rule whose
/// name differs is not ours; a rule without a `name` is trusted to the filter.
fn parse_rule_id(body: &str, name: &str) -> Result<Option<u64>, String> {
    let v = json_of(body)?;
    let Some(list) = v.get("fwdRules") else {
        return Ok(None);
    };
    let list = list
        .as_array()
        .ok_or("reply's \"fwdRules\" is not a list")?;
    let ours = list.iter().find(|r| match r.get("name") {
        Some(n) => n.as_str() == Some(name),
        None => true,
    });
    match ours {
        None => Ok(None),
        Some(r) => id_of(r)
            .map(Some)
            .ok_or_else(|| "the rule in the reply has no numeric \"id\"".to_string()),
    }
}

fn parse_created_id(body: &str) -> Result<u64, String> {
    id_of(&json_of(body)?)
        .ok_or_else(|| format!("reply has no numeric \"id\": {}", description(body)))
}

#[derive(Debug, Clone, Copy)]
enum Method {
    Get,
    Put,
    Post,
    Delete,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        })
    }
}

pub struct OvocClient {
    agent: ureq::Agent,
    base: String,
    user: String,
    /// The whole `Authorization` header value, built once.
    auth: Secret,
    timeout: Duration,
}

impl fmt::Debug for OvocClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OvocClient")
            .field("base", &self.base)
            .field("user", &self.user)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// `https://host[:port]/path` without trailing slashes. Credentials in the URL are refused: they
/// would end up in every error message.
fn check_base_url(base_url: &str) -> Result<String, String> {
    let bad = |why: &str| format!("invalid OVOC URL {base_url:?}: {why}");
    let rest = base_url
        .strip_prefix("https://")
        .or_else(|| base_url.strip_prefix("http://"))
        .ok_or_else(|| bad("expected https://HOST/ovoc/v1"))?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    if authority.contains('@') {
        return Err(bad(
            "credentials do not belong in the URL; pass the user and password separately",
        ));
    }
    if base_url.contains(['?', '#'])
        || base_url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad("no query, fragment or spaces allowed"));
    }
    Ok(base_url.trim_end_matches('/').to_string())
}

impl OvocClient {
    /// `base_url` like `https://127.0.0.1/ovoc/v1`.
    pub fn new(
        base_url: &str,
        user: &str,
        password: &Secret,
        trust: &Trust,
        timeout: Duration,
        connections: usize,
    ) -> Result<OvocClient, String> {
        let base = check_base_url(base_url)?;
        // `connections` kept open: every agent worker may be talking to OVOC at once, and a TLS
        // handshake per call would cost more than the call.
        let agent = crate::tls::agent(trust, timeout, connections)?;
        let auth = Secret::new(format!(
            "Basic {}",
            crate::util::base64(format!("{user}:{}", password.expose()).as_bytes())
        ));
        Ok(OvocClient {
            agent,
            base,
            user: user.to_string(),
            auth,
            timeout,
        })
    }

    /// One request; Ok is any HTTP status with its body, Err a transport failure.
    fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, String), String> {
        let url = format!("{}{path}", self.base);
        let auth = self.auth.expose();
        // Serialising a `Value` cannot fail (its map keys are strings).
        let json = body
            .map(|b| serde_json::to_vec(b).unwrap_or_default())
            .unwrap_or_default();
        let with_body = |rb: ureq::RequestBuilder<ureq::typestate::WithBody>| {
            rb.header("Authorization", auth)
                .header("Content-Type", "application/json")
                .send(&json[..])
        };
        let res = match method {
            Method::Get => self.agent.get(&url).header("Authorization", auth).call(),
            Method::Delete => self.agent.delete(&url).header("Authorization", auth).call(),
            Method::Post => with_body(self.agent.post(&url)),
            Method::Put => with_body(self.agent.put(&url)),
        };
        let mut resp = res.map_err(|e| format!("{method} {url}: {}", self.transport_error(e)))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(BODY_LIMIT)
            .read_to_string()
            .map_err(|e| {
                format!(
                    "{method} {url}: HTTP {status}, reading the body: {}",
                    self.transport_error(e)
                )
            })?;
        Ok((status, text))
    }

    fn transport_error(&self, e: ureq::Error) -> String {
        if let ureq::Error::Io(io) = &e {
            if let Some(tls) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                return format!("TLS: {tls}");
            }
        }
        match e {
            ureq::Error::Timeout(_) => format!("timed out after {:?}", self.timeout),
            ureq::Error::Rustls(tls) => format!("TLS: {tls}"),
            ureq::Error::Tls(m) => format!("TLS: {m}"),
            other => other.to_string(),
        }
    }

    /// The message for an unexpected status.
    fn refused(&self, status: u16, body: &str) -> String {
        let why = match status {
            401 => format!(
                "OVOC refused user {:?}: wrong user name or password",
                self.user
            ),
            403 => format!(
                "OVOC refused user {:?}: the account lacks the privilege (Operator level or higher needed)",
                self.user
            ),
            s if s >= 500 => "OVOC server error".to_string(),
            _ => "unexpected reply".to_string(),
        };
        format!("HTTP {status} ({why}): {}", description(body))
    }

    /// Looks up the device id and the rule by name, then re-points the rule at `dest` (PUT) or
    /// creates it (POST).
    pub fn ensure_rule(&self, device: &str, dest: SocketAddr) -> Result<RuleOutcome, String> {
        let device_id = self.device_id(device)?;
        if let Some(rule_id) = self.rule_id(device)? {
            if let Some(outcome) = self.update_rule(device, device_id, rule_id, dest)? {
                return Ok(outcome);
            }
        }
        let op = format!("OVOC rule creation for {device}");
        let (status, body) = self
            .call(
                Method::Post,
                "/alarms/fwdRules",
                Some(&create_body(device, device_id, dest)),
            )
            .map_err(|e| format!("{op}: {e}"))?;
        if !(200..=299).contains(&status) {
            return Err(format!("{op}: {}", self.refused(status, &body)));
        }
        let rule_id = parse_created_id(&body).map_err(|e| format!("{op}: HTTP {status}: {e}"))?;
        Ok(RuleOutcome {
            rule_id,
            device_id,
            action: "created",
        })
    }

    /// OVOC's id of the device; an error when OVOC does not manage it.
    fn device_id(&self, device: &str) -> Result<u64, String> {
        let op = format!("OVOC device lookup for {device}");
        let (status, body) = self
            .call(Method::Get, &device_lookup_path(device), None)
            .map_err(|e| format!("{op}: {e}"))?;
        if status != 200 {
            return Err(format!("{op}: {}", self.refused(status, &body)));
        }
        parse_device_id(&body)
            .map_err(|e| format!("{op}: {e}"))?
            .ok_or_else(|| format!("OVOC does not manage device {device}"))
    }

    /// The id of the device's forwarding rule, if it has one.
    fn rule_id(&self, device: &str) -> Result<Option<u64>, String> {
        let op = format!("OVOC rule lookup for {device}");
        let (status, body) = self
            .call(Method::Get, &rule_lookup_path(device), None)
            .map_err(|e| format!("{op}: {e}"))?;
        // Only credentials and server failures are errors: ovoc.md says "no rule" may arrive as
        // any other non-200, and guessing "exists" there would leave the device unforwarded.
        match status {
            200 => parse_rule_id(&body, &rule_name(device)).map_err(|e| format!("{op}: {e}")),
            s if s == 401 || s == 403 || s >= 500 => {
                Err(format!("{op}: {}", self.refused(status, &body)))
            }
            _ => Ok(None),
        }
    }

    /// Re-points the rule at `dest`; None when it vanished meanwhile (then it is created).
    fn update_rule(
        &self,
        device: &str,
        device_id: u64,
        rule_id: u64,
        dest: SocketAddr,
    ) -> Result<Option<RuleOutcome>, String> {
        let op = format!("OVOC rule update for {device} (rule {rule_id})");
        let path = format!("/alarms/fwdRules/{rule_id}");
        let (status, body) = self
            .call(Method::Put, &path, Some(&update_body(device_id, dest)))
            .map_err(|e| format!("{op}: {e}"))?;
        match status {
            200..=299 => Ok(Some(RuleOutcome {
                rule_id,
                device_id,
                action: "updated",
            })),
            // Deleted between lookup and update (another agent's idle timer, an operator):
            // creating it is what the caller wants either way.
            404 => {
                log::info!(
                    "OVOC rule {rule_id} for {device} vanished before the update; creating it"
                );
                Ok(None)
            }
            _ => Err(format!("{op}: {}", self.refused(status, &body))),
        }
    }

    /// A rule already gone (404) counts as deleted: the caller wanted it gone.
    pub fn delete_rule(&self, rule_id: u64) -> Result<(), String> {
        let op = format!("OVOC rule deletion (rule {rule_id})");
        let (status, body) = self
            .call(Method::Delete, &format!("/alarms/fwdRules/{rule_id}"), None)
            .map_err(|e| format!("{op}: {e}"))?;
        match status {
            200..=299 => Ok(()),
            404 => {
                log::info!("OVOC rule {rule_id} was already gone");
                Ok(())
            }
            _ => Err(format!("{op}: {}", self.refused(status, &body))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_paths() {
        let t: &[(&str, &str, &str)] = &[
            (
                "192.168.200.218",
                "/topology/devices?detail=1&filter=(ipAddress=%27192.168.200.218%27)",
                "/alarms/fwdRules?detail=1&filter=(name=%27Forward%20Connection%20Lost%20from%20192.168.200.218%27)",
            ),
            (
                "fe80::1",
                "/topology/devices?detail=1&filter=(ipAddress=%27fe80%3A%3A1%27)",
                "/alarms/fwdRules?detail=1&filter=(name=%27Forward%20Connection%20Lost%20from%20fe80%3A%3A1%27)",
            ),
            (
                "msbr-1.branch.example.com",
                "/topology/devices?detail=1&filter=(fqdn=%27msbr-1.branch.example.com%27)",
                "/alarms/fwdRules?detail=1&filter=(name=%27Forward%20Connection%20Lost%20from%20msbr-1.branch.example.com%27)",
            ),
            (
                "a'b&c=d",
                "/topology/devices?detail=1&filter=(fqdn=%27a%27b%26c%3Dd%27)",
                "/alarms/fwdRules?detail=1&filter=(name=%27Forward%20Connection%20Lost%20from%20a%27b%26c%3Dd%27)",
            ),
        ];
        for (device, dev_path, rule_path) in t {
            assert_eq!(device_lookup_path(device), *dev_path, "{device}");
            assert_eq!(rule_lookup_path(device), *rule_path, "{device}");
        }
        assert_eq!(
            rule_name("10.0.0.1"),
            "Forward Connection Lost from 10.0.0.1"
        );
        assert_eq!(encode("é ~"), "%C3%A9%20~");
    }

    #[test]
    fn bodies_match_ovoc_md() {
        let from_spec: Value = serde_json::from_str(
            r#"{"ruleDestType":"SYSLOG",
               "destSyslog":{"syslogServerIP":"10.0.0.5","syslogServerPort":20001},
               "forwardType":"ALLOW",
               "name":"Forward Connection Lost from 192.168.200.218",
               "tenantId":-1,
               "alarmTenantsFilter":[],"alarmRegionsFilter":[],"alarmEndpointsFilter":[],
               "alarmSitesFilter":[],"alarmDevicesFilter":[42],
               "alarmNamesFilter":["acEMSNodeConnectionLostAlarm"]}"#,
        )
        .unwrap();
        let dest: SocketAddr = "10.0.0.5:20001".parse().unwrap();
        assert_eq!(create_body("192.168.200.218", 42, dest), from_spec);

        let mut update = from_spec.clone();
        for k in ["ruleDestType", "forwardType", "name", "tenantId"] {
            update.as_object_mut().unwrap().remove(k);
        }
        assert_eq!(update_body(42, dest), update);

        // A dual-stack socket's view of an IPv4 requester is sent as IPv4; real IPv6 stays.
        let mapped: SocketAddr = "[::ffff:10.0.0.5]:20001".parse().unwrap();
        assert_eq!(update_body(42, mapped), update);
        let v6: SocketAddr = "[2001:db8::5]:7".parse().unwrap();
        assert_eq!(
            update_body(1, v6)["destSyslog"],
            json!({"syslogServerIP": "2001:db8::5", "syslogServerPort": 7})
        );
    }

    #[test]
    fn device_replies() {
        let ok: &[(&str, Option<u64>)] = &[
            (r#"{"devices":[{"id":42,"name":"x"}]}"#, Some(42)),
            (r#"{"devices":[{"id":"43"}]}"#, Some(43)),
            (r#"{"devices":[{"id":1},{"id":2}]}"#, Some(1)),
            (r#"{"devices":[]}"#, None),
        ];
        for (body, want) in ok {
            assert_eq!(parse_device_id(body).unwrap(), *want, "{body}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "not JSON"),
            ("<html>oops</html>", "not JSON"),
            ("{}", "no \"devices\""),
            (r#"{"devices":{}}"#, "no \"devices\""),
            (r#"{"devices":[{"name":"x"}]}"#, "no numeric \"id\""),
            (r#"{"devices":[{"id":-4}]}"#, "no numeric \"id\""),
            (r#"{"devices":[{"id":"x"}]}"#, "no numeric \"id\""),
        ];
        for (body, want) in bad {
            let e = parse_device_id(body).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn rule_replies() {
        let name = "Forward Connection Lost from 10.0.0.1";
        let ok: &[(&str, Option<u64>)] = &[
            (
                r#"{"fwdRules":[{"id":7,"name":"Forward Connection Lost from 10.0.0.1"}]}"#,
                Some(7),
            ),
            (r#"{"fwdRules":[{"id":8}]}"#, Some(8)),
            (r#"{"fwdRules":[]}"#, None),
            (r#"{"other":1}"#, None),
            (
                r#"{"fwdRules":[{"id":9,"name":"Forward Connection Lost from 10.0.0.10"},
                                {"id":10,"name":"Forward Connection Lost from 10.0.0.1"}]}"#,
                Some(10),
            ),
            (
                r#"{"fwdRules":[{"id":9,"name":"Forward Connection Lost from 10.0.0.10"}]}"#,
                None,
            ),
        ];
        for (body, want) in ok {
            assert_eq!(parse_rule_id(body, name).unwrap(), *want, "{body}");
        }
        for (body, want) in [
            ("garbage", "not JSON"),
            (r#"{"fwdRules":7}"#, "not a list"),
            (
                r#"{"fwdRules":[{"name":"Forward Connection Lost from 10.0.0.1"}]}"#,
                "no numeric",
            ),
        ] {
            let e = parse_rule_id(body, name).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn created_replies_and_descriptions() {
        assert_eq!(parse_created_id(r#"{"id":7}"#).unwrap(), 7);
        assert_eq!(parse_created_id(r#"{"id":"7"}"#).unwrap(), 7);
        for body in [
            "",
            "{}",
            r#"{"id":null}"#,
            r#"{"description":"x"}"#,
            "\u{0}\u{1}",
        ] {
            assert!(parse_created_id(body).is_err(), "{body:?}");
        }
        assert_eq!(
            description(r#"{"description":"No rules found"}"#),
            "No rules found"
        );
        assert_eq!(description("  "), "empty body");
        assert_eq!(description("<h1>502</h1>"), "\"<h1>502</h1>\"");
        let long = "é".repeat(300);
        let d = description(&long);
        assert!(d.ends_with("...") && d.len() < 220, "{d}");
    }

    #[test]
    fn base_urls() {
        for (url, want) in [
            ("https://127.0.0.1/ovoc/v1", "https://127.0.0.1/ovoc/v1"),
            ("https://127.0.0.1/ovoc/v1/", "https://127.0.0.1/ovoc/v1"),
            ("http://[::1]:8443/ovoc/v1//", "http://[::1]:8443/ovoc/v1"),
        ] {
            assert_eq!(check_base_url(url).unwrap(), want);
        }
        for (url, want) in [
            ("ftp://x/ovoc/v1", "expected https://"),
            ("127.0.0.1/ovoc/v1", "expected https://"),
            ("https:///ovoc/v1", "no host"),
            ("https://admin:pw@ovoc/ovoc/v1", "credentials"),
            ("https://ovoc/ovoc/v1?x=1", "no query"),
            ("https://ovoc/ovoc v1", "no query"),
        ] {
            let e = check_base_url(url).unwrap_err();
            assert!(e.contains(want), "{url}: {e}");
            assert!(!e.contains("pw@") || url.contains("pw@"), "{e}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let c = OvocClient::new(
            "https://127.0.0.1/ovoc/v1",
            "operator",
            &Secret::new("hunter2".into()),
            &Trust::Insecure,
            Duration::from_secs(1),
            4,
        )
        .unwrap();
        let d = format!("{c:?}");
        assert!(d.contains("operator") && !d.contains("hunter2"), "{d}");
        assert!(
            !d.contains(&crate::util::base64(b"operator:hunter2")),
            "{d}"
        );
    }

    #[test]
    fn unreachable_server_is_an_error_naming_the_step() {
        // A port nothing listens on: bind, note it, drop.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = OvocClient::new(
            &format!("https://127.0.0.1:{port}/ovoc/v1"),
            "operator",
            &Secret::new("hunter2".into()),
            &Trust::Insecure,
            Duration::from_secs(2),
            4,
        )
        .unwrap();
        let e = c
            .ensure_rule("10.0.0.1", "10.0.0.5:20001".parse().unwrap())
            .unwrap_err();
        assert!(
            e.starts_with("OVOC device lookup for 10.0.0.1: GET https://127.0.0.1:"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        let e = c.delete_rule(3).unwrap_err();
        assert!(e.starts_with("OVOC rule deletion (rule 3): DELETE"), "{e}");
    }

    /// Answers by route with canned responses and records what was asked.
    struct Canned {
        routes: Vec<(&'static str, &'static str, u16, &'static str)>,
        seen: std::sync::Mutex<Vec<String>>,
    }

    impl crate::lab::http::Handler for Canned {
        fn handle(
            &self,
            _: SocketAddr,
            _: SocketAddr,
            req: &crate::lab::http::Request,
        ) -> crate::lab::http::Response {
            let line = format!("{} {}", req.method, req.path);
            self.seen.lock().unwrap().push(line);
            let route = self
                .routes
                .iter()
                .find(|(m, p, _, _)| *m == req.method && req.path.starts_with(p));
            match route {
                Some((_, _, status, body)) => crate::lab::http::Response {
                    status: *status,
                    content_type: Some("application/json"),
                    body: body.as_bytes().to_vec(),
                },
                None => crate::lab::http::Response::empty(599),
            }
        }
    }

    const DEVICES: &str = "/ovoc/v1/topology/devices";
    const RULES: &str = "/ovoc/v1/alarms/fwdRules?";
    const RULE_7: &str = "/ovoc/v1/alarms/fwdRules/7";
    const CREATE: &str = "/ovoc/v1/alarms/fwdRules";
    const DEV_42: &str = r#"{"devices":[{"id":42}]}"#;
    const RULE_FOUND: &str =
        r#"{"fwdRules":[{"id":7,"name":"Forward Connection Lost from 10.0.0.1"}]}"#;

    /// Runs `ensure_rule("10.0.0.1", ...)` against the canned routes; returns it and the
    /// requests the server saw.
    fn against(
        routes: Vec<(&'static str, &'static str, u16, &'static str)>,
    ) -> (Result<RuleOutcome, String>, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::lab::pki::new_ca().unwrap();
        let leaf = ca.leaf("127.0.0.1".parse().unwrap(), "ovoc").unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handler = std::sync::Arc::new(Canned {
            routes,
            seen: std::sync::Mutex::new(Vec::new()),
        });
        let config = leaf.config;
        let server = crate::lab::http::serve(
            vec![listener],
            std::sync::Arc::new(move |_| Some(config.clone())),
            handler.clone(),
        )
        .unwrap();
        let c = OvocClient::new(
            &format!("https://127.0.0.1:{port}/ovoc/v1"),
            "operator",
            &Secret::new("hunter2".into()),
            &Trust::CaFile(ca_path),
            Duration::from_secs(10),
            4,
        )
        .unwrap();
        let out = c.ensure_rule("10.0.0.1", "10.0.0.5:20001".parse().unwrap());
        server.shutdown();
        let seen = handler.seen.lock().unwrap().clone();
        (out, seen)
    }

    #[test]
    fn ensure_rule_against_odd_servers() {
        let created = |id| {
            Ok(RuleOutcome {
                rule_id: id,
                device_id: 42,
                action: "created",
            })
        };
        let updated = Ok(RuleOutcome {
            rule_id: 7,
            device_id: 42,
            action: "updated",
        });
        type Case = (
            Vec<(&'static str, &'static str, u16, &'static str)>,
            Result<RuleOutcome, &'static str>,
            usize,
        );
        let cases: Vec<Case> = vec![
            // Rule found: updated in place.
            (
                vec![
                    ("GET", DEVICES, 200, DEV_42),
                    ("GET", RULES, 200, RULE_FOUND),
                    ("PUT", RULE_7, 200, "{}"),
                ],
                updated.clone(),
                3,
            ),
            // "No rule" as 404, as 400, as an empty list, as a list of other names.
            (
                vec![
                    ("GET", DEVICES, 200, DEV_42),
                    ("GET", RULES, 404, r#"{"description":"No rules found"}"#),
                    ("POST", CREATE, 201, r#"{"id":9}"#),
                ],
                created(9),
                3,
            ),
            (
                vec![
                    ("GET", DEVICES, 200, DEV_42),
                    ("GET", RULES, 400, "bad"),
                    ("POST", CREATE, 201, r#"{"id":9}"#),
                ],
                created(9),
                3,
            ),
            (
                vec![
                    ("GET", DEVICES, 200, DEV_42),
                    ("GET", RULES, 200, r#"{"fwdRules":[]}"#),
                    ("POST", CREATE, 200, r#"{"id":"10"}"#),
                ],
                created(10),
                3,
            ),
            // Deleted between lookup and update: created instead.
            (
                vec![
                    ("GET", DEVICES, 200, DEV_42),
                    ("GET", RULES, 200, RULE_FOUND),
                    ("PUT", RULE_7, 404, r#"{"description":"gone"}"#),
                    ("POST", CREATE, 201, r#"{"id":11}"#),
                ],
                created(11),
                4,
            ),
            (
                vec![("GET", DEVICES, 200, r#"{"devices":[]}"#)],
                Err("OVOC does not manage device 10.0.0.1"),
                1,
            ),
            (
                vec![("GET", DEVICES, 200, "<html>login</html>")],
                Err("OVOC device lookup for 10.0.0.1: reply is not JSON"),
                1,
            ),
            (
                vec![("GET", DEVICES, 403, r#"{"description":"Operator required"}"#)],
                Err("OVOC device lookup for 10.0.0.1: HTTP 403 (OVOC refused user \"operator\": the account lacks the privilege (Operator level or higher needed)): Operator required"),
                1,
            ),
            (
                vec![("GET", DEVICES, 503, "")],
                Err("OVOC device lookup for 10.0.0.1: HTTP 503 (OVOC server error): empty body"),
                1,
            ),
            (
                vec![
                    ("GET", DEVICES, 200, DEV_42),
                    ("GET", RULES, 500, r#"{"description":"db down"}"#),
                ],
                Err("OVOC rule lookup for 10.0.0.1: HTTP 500 (OVOC server error): db down"),
                2,
            ),
            (
                vec![
                    ("GET", DEVICES, 200, DEV_42),
                    ("GET", RULES, 401, "{}"),
                ],
                Err("OVOC rule lookup for 10.0.0.1: HTTP 401 (OVOC refused user \"operator\": wrong user name or password)"),
                2,
            ),
            (
                vec![
                    ("GET", DEVICES, 200, DEV_42),
                    ("GET", RULES, 200, "{{{"),
                ],
                Err("OVOC rule lookup for 10.0.0.1: reply is not JSON"),
                2,
            ),
            (
                vec![
                    ("GET", DEVICES, 200, DEV_42),
                    ("GET", RULES, 200, RULE_FOUND),
                    ("PUT", RULE_7, 400, r#"{"description":"bad field"}"#),
                ],
                Err("OVOC rule update for 10.0.0.1 (rule 7): HTTP 400 (unexpected reply): bad field"),
                3,
            ),
            (
                vec![
                    ("GET", DEVICES, 200, DEV_42),
                    ("GET", RULES, 404, "{}"),
                    ("POST", CREATE, 201, r#"{"ok":true}"#),
                ],
                Err("OVOC rule creation for 10.0.0.1: HTTP 201: reply has no numeric \"id\""),
                3,
            ),
            (
                vec![
                    ("GET", DEVICES, 200, DEV_42),
                    ("GET", RULES, 404, "{}"),
                    ("POST", CREATE, 409, r#"{"description":"exists"}"#),
                ],
                Err("OVOC rule creation for 10.0.0.1: HTTP 409 (unexpected reply): exists"),
                3,
            ),
        ];
        for (routes, want, requests) in cases {
            let label = format!("{routes:?}");
            let (got, seen) = against(routes);
            match (&got, &want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{label}"),
                (Err(g), Err(w)) => assert!(g.starts_with(w), "{label}:\n got {g}\nwant {w}"),
                _ => panic!("{label}: got {got:?}, want {want:?}"),
            }
            if let Err(e) = &got {
                assert!(!e.contains("hunter2"), "{e}");
            }
            assert_eq!(seen.len(), requests, "{label}: {seen:?}");
        }
    }

    #[test]
    fn silent_server_times_out() {
        // The kernel completes the TCP handshake for the backlog; nobody ever answers TLS.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let c = OvocClient::new(
            &format!("https://127.0.0.1:{port}/ovoc/v1"),
            "operator",
            &Secret::new("hunter2".into()),
            &Trust::Insecure,
            Duration::from_millis(300),
            4,
        )
        .unwrap();
        let e = c
            .ensure_rule("10.0.0.1", "10.0.0.5:20001".parse().unwrap())
            .unwrap_err();
        assert!(
            e.starts_with("OVOC device lookup for 10.0.0.1: GET ")
                && e.contains("timed out after 300ms"),
            "{e}"
        );
        drop(listener);
    }
}
