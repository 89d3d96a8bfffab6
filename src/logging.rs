//! Diagnostics on stderr through `log` + env_logger (`RUST_LOG`, `-v`).
//!
//! ureq's TRACE level dumps requests unredacted (Authorization headers, CLI scripts carrying
//! SNMP keys), so those records are dropped whatever `RUST_LOG` says.

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Redacting(env_logger::Logger);

fn wire_level(meta: &Metadata) -> bool {
    meta.level() == Level::Trace
        && ["ureq", "rustls"]
            .iter()
            .any(|p| meta.target().starts_with(p))
}

impl Log for Redacting {
    fn enabled(&self, meta: &Metadata) -> bool {
        !wire_level(meta) && self.0.enabled(meta)
    }
    fn log(&self, record: &Record) {
        if !wire_level(record.metadata()) && self.0.enabled(record.metadata()) {
            // Above the progress bars, not drawn over by them.
            crate::progress::suspend(|| self.0.log(record))
        }
    }
    fn flush(&self) {
        self.0.flush()
    }
}

pub fn init(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "tc=info,warn",
        (false, 2) => "tc=debug,info",
        _ => "debug",
    };
    let mut b = env_logger::Builder::new();
    b.parse_filters(default);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    b.format_timestamp_micros();
    let logger = b.build();
    let max = logger.filter().min(LevelFilter::Trace);
    if log::set_boxed_logger(Box::new(Redacting(logger))).is_ok() {
        log::set_max_level(max);
    }
}

/// A short user-facing warning (`tc: ...`) on stderr, independent of the log level.
/// A write error is ignored: when the terminal hangs up (EIO) or stderr's reader has gone
/// (EPIPE), `eprintln!` would panic, and a warning must never kill a session mid wind-down.
pub fn warn_user(msg: &str) {
    use std::io::Write;
    // Above the progress bars, not drawn over by them.
    crate::progress::suspend(|| {
        let _ = writeln!(std::io::stderr().lock(), "tc: warning: {msg}");
    });
}
