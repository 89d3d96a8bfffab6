//! The device inventory: a CSV file with header `device,type,interfaces,username,ovoc` and
//! optional `rest_port,ssh_port,pin_sha256`; interfaces separated by `;`. The same file drives
//! `tc cpe` and `tc session`. Parsing is pure (text in, rows or an error naming line and value).

use crate::cli::DeviceType;
use crate::netaddr::validate_device;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub device: String,
    pub device_type: Option<DeviceType>,
    pub interfaces: Vec<String>,
    pub username: Option<String>,
    pub ovoc: Option<String>,
    pub rest_port: Option<u16>,
    pub ssh_port: Option<u16>,
    pub pin_sha256: Option<String>,
}

pub const MSBR_INTERFACES: &[&str] = &[
    "cellular-wan",
    "fiber-wan",
    "xdsl-wan",
    "shdsl-wan",
    "t1-e1-wan",
    "eth-wan",
    "eth-lan",
];

pub fn validate_interface(i: &str) -> Result<(), String> {
    if MSBR_INTERFACES.contains(&i) {
        Ok(())
    } else {
        Err(format!(
            "unknown MSBR interface {i:?}: expected one of {}",
            MSBR_INTERFACES.join(", ")
        ))
    }
}

pub fn parse_type(s: &str) -> Result<Option<DeviceType>, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "" | "auto" => Ok(None),
        "msbr" => Ok(Some(DeviceType::Msbr)),
        "gwsbc" | "gw" | "sbc" | "gateway" => Ok(Some(DeviceType::Gwsbc)),
        other => Err(format!(
            "unknown device type {other:?}: expected msbr or gwsbc (or empty to detect)"
        )),
    }
}

const REQUIRED: &[&str] = &["device", "type", "interfaces", "username", "ovoc"];
const OPTIONAL: &[&str] = &["rest_port", "ssh_port", "pin_sha256"];

pub fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers = rdr.headers().map_err(|e| format!("header: {e}"))?.clone();
    check_header(&headers)?;
    let mut out: Vec<Entry> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| e.to_string())?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let e = entry(&headers, &rec).map_err(|e| format!("line {line}: {e}"))?;
        if !seen.insert(e.device.clone()) {
            return Err(format!("line {line}: device {} is listed twice", e.device));
        }
        out.push(e);
    }
    if out.is_empty() {
        return Err("no devices listed".into());
    }
    Ok(out)
}

/// Every required column there, every column known.
fn check_header(headers: &csv::StringRecord) -> Result<(), String> {
    let has = |name: &str| headers.iter().any(|h| h.eq_ignore_ascii_case(name));
    for req in REQUIRED {
        if !has(req) {
            return Err(format!(
                "header lacks column {req:?} (expected {})",
                REQUIRED.join(",")
            ));
        }
    }
    for h in headers.iter() {
        if !REQUIRED
            .iter()
            .chain(OPTIONAL)
            .any(|k| k.eq_ignore_ascii_case(h))
        {
            return Err(format!(
                "unknown column {h:?} (known: {},{})",
                REQUIRED.join(","),
                OPTIONAL.join(",")
            ));
        }
    }
    Ok(())
}

/// A device login name: what the REST API and SSH take, never a control character (a newline
/// would end a header line or a log line early).
pub fn validate_username(u: &str) -> Result<(), String> {
    if u.is_empty() || u.len() > 64 || u.chars().any(char::is_control) {
        return Err(format!(
            "invalid username {u:?}: 1-64 characters, no control characters"
        ));
    }
    Ok(())
}

/// One row, each field checked.
fn entry(headers: &csv::StringRecord, rec: &csv::StringRecord) -> Result<Entry, String> {
    // No field of an inventory holds a control character: each ends up in a URL, a file name,
    // a datagram, a log line or a CSV row.
    for (h, v) in headers.iter().zip(rec.iter()) {
        if v.chars().any(char::is_control) {
            return Err(format!("{h} {v:?}: control characters are not allowed"));
        }
    }
    let get = |name: &str| {
        headers
            .iter()
            .position(|h| h.eq_ignore_ascii_case(name))
            .and_then(|i| rec.get(i))
            .unwrap_or("")
            .to_string()
    };
    let opt = |name: &str| Some(get(name)).filter(|v| !v.is_empty());
    let device = get("device");
    validate_device(&device)?;
    let interfaces: Vec<String> = get("interfaces")
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    for i in &interfaces {
        validate_interface(i)?;
    }
    let port = |name: &str| -> Result<Option<u16>, String> {
        match opt(name) {
            None => Ok(None),
            Some(v) => v
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .map(Some)
                .ok_or_else(|| format!("invalid {name} {v:?}: expected 1-65535")),
        }
    };
    let ovoc = opt("ovoc");
    if let Some(o) = &ovoc {
        let host = o
            .rsplit_once(':')
            .filter(|(_, p)| p.parse::<u16>().is_ok())
            .map_or(o.as_str(), |(h, _)| h);
        validate_device(host.trim_start_matches('[').trim_end_matches(']'))
            .map_err(|e| format!("ovoc: {e}"))?;
    }
    let pin = opt("pin_sha256");
    if let Some(p) = &pin {
        if crate::util::parse_hex(p).map(|b| b.len()) != Some(32) {
            return Err(format!("invalid pin_sha256 {p:?}: expected 64 hex digits"));
        }
    }
    let username = opt("username");
    if let Some(u) = &username {
        validate_username(u)?;
    }
    Ok(Entry {
        device,
        device_type: parse_type(&get("type"))?,
        interfaces,
        username,
        ovoc,
        rest_port: port("rest_port")?,
        ssh_port: port("ssh_port")?,
        pin_sha256: pin,
    })
}

/// Serialize entries back to the CSV format (`tc lab up` writes its inventory with this).
pub fn to_csv(entries: &[Entry]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(REQUIRED.iter().chain(OPTIONAL));
    for e in entries {
        let port = |p: Option<u16>| p.map(|p| p.to_string()).unwrap_or_default();
        let _ = w.write_record([
            e.device.clone(),
            e.device_type
                .map(|t| t.as_str().to_string())
                .unwrap_or_default(),
            e.interfaces.join(";"),
            e.username.clone().unwrap_or_default(),
            e.ovoc.clone().unwrap_or_default(),
            port(e.rest_port),
            port(e.ssh_port),
            e.pin_sha256.clone().unwrap_or_default(),
        ]);
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_files() {
        let t = "device,type,interfaces,username,ovoc\n\
                 192.168.200.218,msbr,eth-wan;eth-lan,Admin,10.0.0.5\n\
                 sbc-1.example.com,gwsbc,,,\n\
                 10.0.0.9,,,,\n";
        let v = parse(t).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].interfaces, vec!["eth-wan", "eth-lan"]);
        assert_eq!(v[0].device_type, Some(DeviceType::Msbr));
        assert_eq!(v[1].device_type, Some(DeviceType::Gwsbc));
        assert_eq!(v[1].username, None);
        assert_eq!(v[2].device_type, None);
        let with_ports = "device,type,interfaces,username,ovoc,rest_port,ssh_port\n127.0.1.1,msbr,eth-lan,admin,127.0.0.1,8443,2222\n";
        let v = parse(with_ports).unwrap();
        assert_eq!((v[0].rest_port, v[0].ssh_port), (Some(8443), Some(2222)));
        assert_eq!(parse(&to_csv(&v)).unwrap(), v);
    }

    #[test]
    fn bad_files_name_line_and_value() {
        let h = "device,type,interfaces,username,ovoc\n";
        let table: &[(&str, &str)] = &[
            ("device,type\n1.2.3.4,msbr\n", "lacks column \"interfaces\""),
            (
                &format!("{h}x$(id),msbr,,,\n"),
                "line 2: invalid device \"x$(id)\"",
            ),
            (
                &format!("{h}1.2.3.4,router,,,\n"),
                "line 2: unknown device type \"router\"",
            ),
            (
                &format!("{h}1.2.3.4,msbr,wifi,,\n"),
                "line 2: unknown MSBR interface \"wifi\"",
            ),
            (
                &format!("{h}1.2.3.4,msbr,,,\n1.2.3.4,msbr,,,\n"),
                "line 3: device 1.2.3.4 is listed twice",
            ),
            (
                "device,type,interfaces,username,ovoc,rest_port\n1.2.3.4,,,,,99999\n",
                "invalid rest_port \"99999\"",
            ),
            (
                "device,type,interfaces,username,ovoc,color\n",
                "unknown column \"color\"",
            ),
            (h, "no devices listed"),
            (
                &format!("{h}10.0.0.1,msbr,,,\n999.1.1.1,msbr,,,\n"),
                "line 3: invalid device \"999.1.1.1\": not an IPv4 address",
            ),
            (
                &format!("{h}127.81.280.178,msbr,,,\n"),
                "line 2: invalid device \"127.81.280.178\": not an IPv4 address",
            ),
            (
                &format!("{h}10.0.0.1,msbr,,,1.2.3.999\n"),
                "line 2: ovoc: invalid device \"1.2.3.999\": not an IPv4 address",
            ),
            (
                &format!("{h}10.0.0.1,msbr,,\"Ad\nmin\",\n"),
                "line 2: username \"Ad\\nmin\": control characters are not allowed",
            ),
            (
                &format!("{h}10.0.0.1,msbr,,Ad\u{7f}min,\n"),
                "line 2: username \"Ad\\u{7f}min\": control characters are not allowed",
            ),
            (&format!("{h}1.2.3.4,msbr\n"), "found record with 2 fields"),
        ];
        for (text, needle) in table {
            let e = parse(text).unwrap_err();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
