//! The only writer of stdout. One JSON object per line, `ts` first, flushed per line so a
//! `jq` or a script downstream sees each record as it happens.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::event::Event;
use crate::timefmt::Utc;

static BROKEN: AtomicBool = AtomicBool::new(false);

/// The reader of stdout went away; the caller should wind down and exit 0.
pub fn stdout_broken() -> bool {
    BROKEN.load(Ordering::Relaxed)
}

pub fn line(ev: &Event, now: Utc) -> String {
    let body = serde_json::to_string(ev).expect("events serialize");
    // Splice `ts` in front so it is the first key of every record.
    format!("{{\"ts\":\"{}\",{}", now.rfc3339(), &body[1..])
}

pub fn emit(ev: &Event) {
    if stdout_broken() {
        return;
    }
    let text = line(ev, Utc::now());
    let out = std::io::stdout();
    let mut out = out.lock();
    let res = out
        .write_all(text.as_bytes())
        .and_then(|_| out.write_all(b"\n"))
        .and_then(|_| out.flush());
    if let Err(e) = res {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            BROKEN.store(true, Ordering::Relaxed);
        } else {
            log::error!("writing to stdout: {e}");
        }
    }
}

/// Pass on a record another `tc` process printed (`tc lab demo` relays its children's lines).
pub fn relay(line: &str) {
    if stdout_broken() {
        return;
    }
    let out = std::io::stdout();
    let mut out = out.lock();
    let res = out
        .write_all(line.as_bytes())
        .and_then(|_| out.write_all(b"\n"))
        .and_then(|_| out.flush());
    if let Err(e) = res {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            BROKEN.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ts_comes_first_and_round_trips() {
        let ev = Event::CpeError {
            device: "10.0.0.1".into(),
            op: "start".into(),
            error: "x \"y\"".into(),
        };
        let l = line(&ev, Utc::from_unix_micros(1));
        assert!(
            l.starts_with("{\"ts\":\"1970-01-01T00:00:00.000001Z\",\"type\":\"cpe.error\""),
            "{l}"
        );
        let mut v: serde_json::Value = serde_json::from_str(&l).unwrap();
        v.as_object_mut().unwrap().remove("ts");
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let v = serde_json::json!({"type": "cpe.error", "device": "a", "op": "b", "error": "c", "extra": 1});
        assert!(serde_json::from_value::<Event>(v).is_err());
    }
}
