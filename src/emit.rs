//! The only writer of stdout. One JSON object per line, `ts` first, flushed per line so a
//! `jq` or a script downstream sees each record as it happens; a [`Batch`] (`tc alarm listen`
//! in a burst) flushes its lines together before its owner waits for input again.

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::event::Event;
use crate::timefmt::Utc;

static BROKEN: AtomicBool = AtomicBool::new(false);

/// The reader of stdout went away; the caller should wind down and exit 0.
pub fn stdout_broken() -> bool {
    BROKEN.load(Ordering::Relaxed)
}

#[cfg(test)]
pub fn line<T: Serialize>(ev: &T, now: Utc) -> String {
    let (mut out, mut body) = (Vec::new(), Vec::new());
    append_line(ev, now, &mut out, &mut body);
    out.pop();
    String::from_utf8(out).expect("JSON is UTF-8")
}

/// Appends the record and its newline to `out`, with `body` as scratch space. Both are reused
/// from line to line: `tc alarm listen` writes hundreds of thousands of lines a second, and
/// allocating and copying each line twice was a quarter of its time.
fn append_line<T: Serialize>(ev: &T, now: Utc, out: &mut Vec<u8>, body: &mut Vec<u8>) {
    body.clear();
    serde_json::to_writer(&mut *body, ev).expect("events serialize");
    // Splice `ts` in front so it is the first key of every record.
    out.extend_from_slice(b"{\"ts\":\"");
    now.push_rfc3339(out);
    out.extend_from_slice(b"\",");
    out.extend_from_slice(&body[1..]);
    out.push(b'\n');
}

thread_local! {
    static BUFFERS: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

pub fn emit(ev: &Event) {
    if stdout_broken() {
        return;
    }
    BUFFERS.with_borrow_mut(|(text, body)| {
        text.clear();
        append_line(ev, Utc::now(), text, body);
        write_out(text);
    });
}

/// Lines collected for one write, for a reader of a burst (`tc alarm listen`): the caller
/// flushes before it waits for more input, so no line waits on tc, and a burst of datagrams
/// costs one write per 64 KiB instead of one per line.
#[derive(Default)]
pub struct Batch {
    text: Vec<u8>,
    body: Vec<u8>,
}

impl Batch {
    const LIMIT: usize = 64 << 10;

    pub fn push<T: Serialize>(&mut self, ev: &T) {
        append_line(ev, Utc::now(), &mut self.text, &mut self.body);
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
    fn unknown_fields_are_refused() {
        let v = serde_json::json!({"type": "cpe.error", "device": "a", "op": "b", "error": "c", "extra": 1});
        assert!(serde_json::from_value::<Event>(v).is_err());
    }
}
