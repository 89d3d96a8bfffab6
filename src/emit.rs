//! The only writer of stdout. One JSON object per line, `ts` first, flushed per line so a
//! `jq` or a script downstream sees each record as it happens; a [`Batch`] (`tc alarm listen`
//! in a burst) flushes its lines together before its owner waits for input again.

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::event::Event;
use crate::timefmt::{Stamper, Utc};

static BROKEN: AtomicBool = AtomicBool::new(false);

/// The reader of stdout went away; the caller should wind down and exit 0.
pub fn stdout_broken() -> bool {
    BROKEN.load(Ordering::Relaxed)
}

#[cfg(test)]
pub fn line<T: Serialize>(ev: &T, now: Utc) -> String {
    let mut out = Vec::new();
    append_line(|o| now.push_rfc3339(o), &mut out, |out| to_json(ev, out));
    out.pop();
    String::from_utf8(out).expect("JSON is UTF-8")
}

fn to_json<T: Serialize>(ev: &T, out: &mut Vec<u8>) {
    serde_json::to_writer(out, ev).expect("events serialize");
}

/// Appends the record `object` writes (a JSON object), stamped by `stamp`, and its newline to
/// `out`, which is reused from line to line: `tc alarm listen` writes hundreds of thousands of
/// lines a second, and allocating and copying each line was a quarter of its time.
fn append_line(
    stamp: impl FnOnce(&mut Vec<u8>),
    out: &mut Vec<u8>,
    object: impl FnOnce(&mut Vec<u8>),
) {
    out.extend_from_slice(b"{\"ts\":\"");
    stamp(out);
    out.push(b'"');
    let at = out.len();
    object(out);
    // The object's `{` becomes the comma after `ts`, which so comes first without the object
    // being moved.
    debug_assert_eq!(out.get(at), Some(&b'{'));
    if out.len() == at + 2 {
        // `{}`: only `ts` then.
        out.truncate(at);
        out.push(b'}');
    } else {
        out[at] = b',';
    }
    out.push(b'\n');
}

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The line `emit` would print for `ev` now, for a file of records (a session's
/// `analysis.jsonl`).
pub fn record<T: Serialize>(ev: &T) -> Vec<u8> {
    let mut out = Vec::new();
    append_line(|o| Utc::now().push_rfc3339(o), &mut out, |o| to_json(ev, o));
    out
}

pub fn emit(ev: &Event) {
    if stdout_broken() {
        return;
    }
    BUFFER.with_borrow_mut(|text| {
        text.clear();
        append_line(|o| Utc::now().push_rfc3339(o), text, |out| to_json(ev, out));
        write_out(text);
    });
}

/// Lines collected for one write, for a reader of a burst (`tc alarm listen`): the caller
/// flushes before it waits for more input, so no line waits on tc, and a burst of datagrams
/// costs one write per 64 KiB instead of one per line.
#[derive(Default)]
pub struct Batch {
    text: Vec<u8>,
    stamper: Stamper,
}

impl Batch {
    const LIMIT: usize = 64 << 10;

    pub fn push<T: Serialize>(&mut self, ev: &T) {
        append_line(
            |o| self.stamper.push_now(o),
            &mut self.text,
            |out| to_json(ev, out),
        );
        if self.text.len() >= Batch::LIMIT {
            self.flush();
        }
    }

    pub fn flush(&mut self) {
        if !self.text.is_empty() && !stdout_broken() {
            write_out(&self.text);
        }
        self.text.clear();
    }
}

/// One write per record (a line ending in a newline goes past the line buffer, uncopied).
fn write_out(text: &[u8]) {
    crate::progress::around_stdout(|| write_stdout(text));
}

fn write_stdout(text: &[u8]) {
    let out = std::io::stdout();
    let mut out = out.lock();
    let res = out.write_all(text).and_then(|_| out.flush());
    if let Err(e) = res {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            BROKEN.store(true, Ordering::Relaxed);
        } else {
            log::error!("writing to stdout: {e}");
        }
    }
}

/// Text for a person (`tc session status` on a terminal): written as given, flushed.
pub fn text(text: &str) {
    if !stdout_broken() {
        write_out(text.as_bytes());
    }
}

/// Pass on a record another `tc` process printed (`tc lab demo` relays its children's lines).
pub fn relay(line: &str) {
    if stdout_broken() {
        return;
    }
    let mut text = Vec::with_capacity(line.len() + 1);
    text.extend_from_slice(line.as_bytes());
    text.push(b'\n');
    write_out(&text);
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
    fn an_empty_object_gets_ts_alone() {
        #[derive(Serialize)]
        struct Empty {}
        assert_eq!(
            line(&Empty {}, Utc::from_unix_micros(1)),
            "{\"ts\":\"1970-01-01T00:00:00.000001Z\"}"
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let v = serde_json::json!({"type": "cpe.error", "device": "a", "op": "b", "error": "c", "extra": 1});
        assert!(serde_json::from_value::<Event>(v).is_err());
    }
}
