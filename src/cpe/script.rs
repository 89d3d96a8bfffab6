//! What `tc` says to a device and how it reads the answers: CLI scripts for the debug capture
//! and the SNMPv3 user, the multipart body that carries them, and tolerant parsing of replies
//! and `show` output. Pure; tested by tables.

use crate::cli::DeviceType;
use crate::secret::Secret;

fn plane(t: DeviceType) -> &'static str {
    match t {
        DeviceType::Msbr => "data",
        DeviceType::Gwsbc => "voip",
    }
}

/// The interfaces a capture uses: MSBR as chosen (at least one), gateway/SBC always `eth-lan`.
pub fn capture_interfaces(t: DeviceType, chosen: &[String]) -> Result<Vec<String>, String> {
    match t {
        DeviceType::Msbr if chosen.is_empty() => {
            Err("an MSBR capture needs at least one interface (--interface or the inventory's interfaces column)".into())
        }
        DeviceType::Msbr => {
            for i in chosen {
                crate::inventory::validate_interface(i)?;
            }
            Ok(chosen.to_vec())
        }
        DeviceType::Gwsbc => match chosen.iter().find(|i| *i != "eth-lan") {
            Some(other) => Err(format!("a gateway/SBC captures on eth-lan only, not {other:?}")),
            None => Ok(vec!["eth-lan".into()]),
        },
    }
}

pub struct SnmpUser<'a> {
    pub name: &'a str,
    pub auth_key: &'a Secret,
    pub priv_key: &'a Secret,
}

/// Keys go into a CLI script line, so whitespace or control characters would let a key inject
/// commands. The error names the variable, never the value.
pub fn validate_snmp_key(var: &str, key: &Secret) -> Result<(), String> {
    let k = key.expose();
    if k.len() < 8 || k.len() > 64 || !k.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{var}: an SNMPv3 key must be 8-64 printable characters without spaces"
        ));
    }
    Ok(())
}

pub fn snmp_user_lines(u: &SnmpUser) -> String {
    format!(
        "configure system\n no snmp v3-users where username {name}\n snmp v3-users new\n  user {name}\n  \
         auth-protocol sha-1\n  priv-protocol aes-128\n  auth-key {a}\n  priv-key {p}\n exit\nexit\nwrite\n",
        name = u.name,
        a = u.auth_key.expose(),
        p = u.priv_key.expose()
    )
}

/// The start script, in one request as the original sent it: SNMPv3 user first (optional), then
/// stop, the interfaces, start.
pub fn start_script(t: DeviceType, interfaces: &[String], snmp: Option<&SnmpUser>) -> String {
    let p = plane(t);
    let mut s = snmp.map(snmp_user_lines).unwrap_or_default();
    s.push_str(&format!("debug capture {p} physical stop\n"));
    for i in interfaces {
        s.push_str(&format!("debug capture {p} physical {i}\n"));
    }
    s.push_str(&format!("debug capture {p} physical start\n"));
    s
}

pub fn stop_script(t: DeviceType) -> String {
    format!("debug capture {} physical stop\n", plane(t))
}

pub fn show_script(t: DeviceType) -> String {
    format!("debug capture {} physical show\n", plane(t))
}

/// Capture state from `show` output; None when the output says neither. When it says both (a
/// script's output, with `show` last), the last statement wins.
pub fn parse_show(output: &str) -> Option<bool> {
    let o = output.to_ascii_lowercase();
    let off = o.rfind("debug capture physical is not active");
    let on = o.rfind("debug capture physical is active");
    match (off, on) {
        (Some(a), Some(b)) => Some(b > a),
        (Some(_), None) => Some(false),
        (None, Some(_)) => Some(true),
        (None, None) => None,
    }
}

/// A cliScript reply. The documentation shows `description` + `output`, the original read
/// `status` + `output`: all optional, and a body that is not JSON is kept as text.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reply {
    pub status: Option<String>,
    pub description: Option<String>,
    pub output: Option<String>,
}

impl Reply {
    pub fn parse(body: &str) -> Reply {
        let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(body)
        else {
            let text = body.trim();
            return Reply {
                description: (!text.is_empty()).then(|| truncate(text, 300)),
                ..Reply::default()
            };
        };
        let s = |k: &str| m.get(k).and_then(|v| v.as_str()).map(str::to_string);
        Reply {
            status: s("status"),
            description: s("description"),
            output: s("output"),
        }
    }

    /// A 200 whose `status`, when present, is not "success" is still a failure.
    pub fn failed_status(&self) -> Option<&str> {
        self.status
            .as_deref()
            .filter(|s| !s.trim().eq_ignore_ascii_case("success"))
    }

    pub fn text(&self) -> String {
        self.description
            .clone()
            .or_else(|| self.status.clone())
            .unwrap_or_else(|| "no description".into())
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// MSBR by `productType` (e.g. `M500L-MSBR`), anything else is a gateway/SBC.
pub fn detect_type(product_type: &str) -> DeviceType {
    if product_type.to_ascii_uppercase().contains("MSBR") {
        DeviceType::Msbr
    } else {
        DeviceType::Gwsbc
    }
}

/// `multipart/form-data` with one part `file` named `cli.txt`, as the device expects.
pub fn multipart(script: &str, boundary: &str) -> (String, Vec<u8>) {
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cli.txt\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n{script}\r\n--{boundary}--\r\n"
    );
    (
        format!("multipart/form-data; boundary={boundary}"),
        body.into_bytes(),
    )
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;

    #[test]
    fn scripts_per_type() {
        let ifs = vec!["eth-wan".to_string(), "cellular-wan".to_string()];
        assert_eq!(
            start_script(DeviceType::Msbr, &ifs, None),
            "debug capture data physical stop\ndebug capture data physical eth-wan\n\
             debug capture data physical cellular-wan\ndebug capture data physical start\n"
        );
        assert_eq!(
            start_script(DeviceType::Gwsbc, &["eth-lan".into()], None),
            "debug capture voip physical stop\ndebug capture voip physical eth-lan\ndebug capture voip physical start\n"
        );
        assert_eq!(
            stop_script(DeviceType::Gwsbc),
            "debug capture voip physical stop\n"
        );
        assert_eq!(
            show_script(DeviceType::Msbr),
            "debug capture data physical show\n"
        );
    }

    #[test]
    fn snmp_block_precedes_capture() {
        let (a, p) = (
            Secret::new("authkey123".into()),
            Secret::new("privkey456".into()),
        );
        let u = SnmpUser {
            name: "CaptureScript",
            auth_key: &a,
            priv_key: &p,
        };
        let s = start_script(DeviceType::Msbr, &["eth-lan".into()], Some(&u));
        assert!(s.starts_with("configure system\n no snmp v3-users where username CaptureScript\n"));
        assert!(s.contains("  auth-key authkey123\n  priv-key privkey456\n exit\nexit\nwrite\ndebug capture data physical stop\n"));
    }

    #[test]
    fn interfaces() {
        let t: &[(DeviceType, &[&str], Result<&[&str], &str>)] = &[
            (DeviceType::Msbr, &["eth-wan"], Ok(&["eth-wan"])),
            (DeviceType::Msbr, &[], Err("at least one interface")),
            (
                DeviceType::Msbr,
                &["wifi"],
                Err("unknown MSBR interface \"wifi\""),
            ),
            (DeviceType::Gwsbc, &[], Ok(&["eth-lan"])),
            (DeviceType::Gwsbc, &["eth-lan"], Ok(&["eth-lan"])),
            (
                DeviceType::Gwsbc,
                &["eth-wan"],
                Err("eth-lan only, not \"eth-wan\""),
            ),
        ];
        for (ty, chosen, want) in t {
            let chosen: Vec<String> = chosen.iter().map(|s| s.to_string()).collect();
            match (capture_interfaces(*ty, &chosen), want) {
                (Ok(got), Ok(w)) => {
                    assert_eq!(got, w.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                }
                (Err(e), Err(w)) => assert!(e.contains(w), "{e}"),
                (got, w) => panic!("{ty:?} {chosen:?}: {got:?} vs {w:?}"),
            }
        }
    }

    #[test]
    fn snmp_validation_never_echoes_keys() {
        assert!(crate::probe::validate_snmp_user("CaptureScript").is_ok());
        assert!(crate::probe::validate_snmp_user("x y").is_err());
        for bad in ["short", "has space1", "new\nline1", &"k".repeat(65)] {
            let e =
                validate_snmp_key("TC_SNMP_AUTH_KEY", &Secret::new(bad.to_string())).unwrap_err();
            assert!(!e.contains(bad), "{e}");
            assert!(e.contains("TC_SNMP_AUTH_KEY"));
        }
        assert!(validate_snmp_key("K", &Secret::new("goodkey1".into())).is_ok());
    }

    #[test]
    fn show_output() {
        let t: &[(&str, Option<bool>)] = &[
            ("Debug capture physical is active\n", Some(true)),
            ("Debug capture physical is not active\n", Some(false)),
            ("  debug capture physical IS ACTIVE  ", Some(true)),
            ("something else", None),
            ("", None),
            // A script's output with `show` last: its statement is the one that counts.
            (
                "Debug capture physical is active\nok\nDebug capture physical is not active\n",
                Some(false),
            ),
            (
                "Debug capture physical is not active\nstarted\nDebug capture physical is active\n",
                Some(true),
            ),
        ];
        for (o, want) in t {
            assert_eq!(parse_show(o), *want, "{o:?}");
        }
    }

    #[test]
    fn replies_in_every_shape() {
        let t: &[(&str, Reply)] = &[
            (
                r#"{"description":"CLI script applied","output":"x"}"#,
                Reply {
                    status: None,
                    description: Some("CLI script applied".into()),
                    output: Some("x".into()),
                },
            ),
            (
                r#"{"status":"Success","output":"y"}"#,
                Reply {
                    status: Some("Success".into()),
                    description: None,
                    output: Some("y".into()),
                },
            ),
            ("{}", Reply::default()),
            (
                "not json",
                Reply {
                    description: Some("not json".into()),
                    ..Reply::default()
                },
            ),
            ("", Reply::default()),
            (
                r#"["a"]"#,
                Reply {
                    description: Some("[\"a\"]".into()),
                    ..Reply::default()
                },
            ),
            (r#"{"output": 5}"#, Reply::default()),
        ];
        for (body, want) in t {
            assert_eq!(&Reply::parse(body), want, "{body}");
        }
        assert_eq!(
            Reply::parse(r#"{"status":"success"}"#).failed_status(),
            None
        );
        assert_eq!(
            Reply::parse(r#"{"status":"failure"}"#).failed_status(),
            Some("failure")
        );
        assert_eq!(Reply::parse("{}").failed_status(), None);
    }

    #[test]
    fn product_types() {
        assert_eq!(detect_type("M500L-MSBR"), DeviceType::Msbr);
        assert_eq!(detect_type("m800c-msbr"), DeviceType::Msbr);
        assert_eq!(detect_type("Mediant 800 SBC"), DeviceType::Gwsbc);
        assert_eq!(detect_type(""), DeviceType::Gwsbc);
    }

    #[test]
    fn multipart_shape() {
        let (ct, body) = multipart("show\n", "b0undary");
        assert_eq!(ct, "multipart/form-data; boundary=b0undary");
        let body = String::from_utf8(body).unwrap();
        assert!(body.starts_with(
            "--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cli.txt\"\r\n"
        ));
        assert!(body.ends_with("show\n\r\n--b0undary--\r\n"));
    }
}
