//! The device REST client: Basic auth, bounded retries with jittered backoff on connect errors,
//! timeouts, 409 and 5xx; never on 400/401/403 or a TLS verification failure, which would only
//! repeat (and, for a wrong password, risk locking the account).

use std::cell::Cell;
use std::time::Duration;

use crate::cli::DeviceType;
use crate::cpe::script::{self, Reply};
use crate::netaddr::url_host;
use crate::secret::Secret;

pub struct Client {
    agent: ureq::Agent,
    base: String,
    device: String,
    user: String,
    auth: Secret,
    retries: u32,
    backoff: Duration,
    requests: Cell<u32>,
}

/// What `GET /api/v1/status` told.
#[derive(Debug, Default, Clone)]
pub struct Status {
    pub product_type: Option<String>,
    pub version: Option<String>,
    pub serial: Option<String>,
}

enum Attempt {
    Done(u16, String),
    Retry(String),
    Fatal(String),
}

impl Client {
    pub fn new(
        agent: ureq::Agent,
        device: &str,
        port: u16,
        user: &str,
        password: &Secret,
        retries: u32,
    ) -> Client {
        let auth = Secret::new(format!(
            "Basic {}",
            crate::util::base64(format!("{user}:{}", password.expose()).as_bytes())
        ));
        Client {
            agent,
            base: format!("https://{}:{port}/api/v1", url_host(device)),
            device: device.to_string(),
            user: user.to_string(),
            auth,
            retries,
            backoff: Duration::from_millis(250),
            requests: Cell::new(0),
        }
    }

    /// REST requests sent so far, retries included.
    pub fn requests(&self) -> u32 {
        self.requests.get()
    }

    fn once(&self, method: &str, path: &str, body: Option<(&str, &[u8])>) -> Attempt {
        self.requests.set(self.requests.get() + 1);
        let url = format!("{}{path}", self.base);
        let res = match (method, body) {
            ("GET", _) => self
                .agent
                .get(&url)
                .header("Authorization", self.auth.expose())
                .call(),
            (_, Some((ct, b))) => self
                .agent
                .put(&url)
                .header("Authorization", self.auth.expose())
                .header("Content-Type", ct)
                .send(b),
            (_, None) => self
                .agent
                .put(&url)
                .header("Authorization", self.auth.expose())
                .send_empty(),
        };
        match res {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let text = resp
                    .body_mut()
                    .with_config()
                    .limit(4 << 20)
                    .read_to_string()
                    .unwrap_or_default();
                Attempt::Done(status, text)
            }
            Err(e) => classify(e),
        }
    }

    /// One request with the retry policy; Ok is any final HTTP status with its body.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<(u16, String), String> {
        let mut last = String::new();
        for attempt in 0..=self.retries {
            match self.once(method, path, body) {
                Attempt::Done(s, text) if s == 409 || s >= 500 => {
                    last = format!("HTTP {s} {}", Reply::parse(&text).text());
                }
                Attempt::Done(s, text) => return Ok((s, text)),
                Attempt::Fatal(e) => {
                    return Err(format!("{method} {path} on {}: {e}", self.device))
                }
                Attempt::Retry(e) => last = e,
            }
            if attempt < self.retries {
                log::info!("{}: {method} {path}: {last}; retrying", self.device);
                std::thread::sleep(backoff(self.backoff, attempt));
            }
        }
        Err(format!(
            "{method} {path} on {}: {last} (gave up after {} attempts)",
            self.device,
            self.retries + 1
        ))
    }

    fn denied(&self, status: u16, path: &str, text: &str) -> String {
        let why = match status {
            401 => "wrong user name or password",
            403 => "user lacks the privilege (Administrator needed for /files)",
            _ => "request refused",
        };
        format!(
            "{} refused {path} for user {:?}: HTTP {status} ({why}; {})",
            self.device,
            self.user,
            Reply::parse(text).text()
        )
    }

    pub fn status(&self) -> Result<Status, String> {
        let (code, text) = self.call("GET", "/status", None)?;
        if code != 200 {
            return Err(self.denied(code, "/status", &text));
        }
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: /status is not JSON: {e}", self.device))?;
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        Ok(Status {
            product_type: s("productType"),
            version: s("versionID"),
            serial: s("serialNumber"),
        })
    }

    /// Run a CLI script; Ok is the device's output (possibly empty).
    pub fn cli(&self, script_text: &str) -> Result<String, String> {
        let boundary = format!("tc{:016x}", crate::util::random_u64());
        let (ct, body) = script::multipart(script_text, &boundary);
        let path = "/files/cliScript/incremental";
        let (code, text) = self.call("PUT", path, Some((&ct, &body)))?;
        let reply = Reply::parse(&text);
        match code {
            200 | 201 | 204 => match reply.failed_status() {
                Some(st) => Err(format!(
                    "{}: CLI script failed: status {st:?}: {}",
                    self.device,
                    reply.text()
                )),
                None => Ok(reply.output.unwrap_or_default()),
            },
            400 => Err(format!(
                "{}: CLI script rejected (HTTP 400): {}",
                self.device,
                reply.text()
            )),
            401 | 403 => Err(self.denied(code, path, &text)),
            _ => Err(format!(
                "{}: CLI script: HTTP {code}: {}",
                self.device,
                reply.text()
            )),
        }
    }

    /// Confirms the state from the output of a script that ended with `show` (one request per
    /// start or stop, which is what a thousand stops in an alarm storm need); asks `show` on its
    /// own when that output does not say.
    pub fn confirm_from(&self, t: DeviceType, want: bool, output: &str) -> Result<(), String> {
        if script::parse_show(output) == Some(want) {
            return Ok(());
        }
        self.confirm(t, want)
    }

    /// Ask `show` until it reports `want`, a bounded number of times.
    fn confirm(&self, t: DeviceType, want: bool) -> Result<(), String> {
        let mut seen = String::new();
        for i in 0..5 {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(300));
            }
            let out = self.cli(&script::show_script(t))?;
            match script::parse_show(&out) {
                Some(state) if state == want => return Ok(()),
                _ => seen = out.trim().to_string(),
            }
        }
        Err(format!(
            "{}: capture is still {} after 5 checks (show said {:?})",
            self.device,
            if want { "not active" } else { "active" },
            seen
        ))
    }
}

fn classify(e: ureq::Error) -> Attempt {
    if let ureq::Error::Io(io) = &e {
        if let Some(tls) = io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Attempt::Fatal(format!("TLS: {tls}"));
        }
    }
    match e {
        ureq::Error::Rustls(tls) => Attempt::Fatal(format!("TLS: {tls}")),
        ureq::Error::Tls(m) => Attempt::Fatal(format!("TLS: {m}")),
        ureq::Error::BadUri(u) => Attempt::Fatal(format!("bad URL {u}")),
        other => Attempt::Retry(other.to_string()),
    }
}

/// 250 ms, 500 ms, 1 s, ... capped at 8 s, plus up to 50% jitter so a fleet does not retry in step.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let d = base
        .saturating_mul(1 << attempt.min(5))
        .min(Duration::from_secs(8));
    d + d.mul_f64((crate::util::random_u64() % 1000) as f64 / 2000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Duration::from_millis(250);
        for (attempt, lo, hi) in [
            (0, 250, 375),
            (1, 500, 750),
            (3, 2000, 3000),
            (10, 8000, 12000),
        ] {
            let d = backoff(b, attempt).as_millis();
            assert!((lo..=hi).contains(&d), "attempt {attempt}: {d}");
        }
    }
}
