//! `tc`: synchronized traffic captures for AudioCodes CPEs and OVOC servers.
//!
//! `main` only parses, sets up logging, dispatches and maps the outcome to an exit code.

mod alarm;
mod analyze;
mod cli;
mod cpe;
mod daemon;
mod emit;
mod error;
mod event;
mod generate;
mod inventory;
mod lab;
mod logging;
mod netaddr;
mod ovoc;
mod pool;
mod probe;
mod progress;
mod proto;
mod report;
mod secret;
mod session;
mod sftp;
mod sys;
mod timefmt;
mod tls;
mod util;

use clap::Parser;

/// iproute2's `tc` objects: someone who typed one of these wanted the traffic-control tool.
const IPROUTE2_WORDS: &[&str] = &[
    "qdisc", "class", "filter", "action", "actions", "monitor", "chain", "exec",
];

fn main() {
    if let Some(word) = std::env::args()
        .nth(1)
        .filter(|w| IPROUTE2_WORDS.contains(&w.as_str()))
    {
        eprintln!(
            "tc: this is tc, the AudioCodes CPE/OVOC capture tool, not iproute2's traffic control.\n\
             For `tc {word} ...` run iproute2's tool by its full path: /usr/sbin/tc (or /sbin/tc).\n\
             See `tc --help` for this tool; the README says how to install both side by side."
        );
        std::process::exit(error::ExitCode::Usage as i32);
    }
    let args = cli::Cli::parse();
    logging::init(args.verbose, args.quiet);
    progress::init(if args.quiet {
        cli::ProgressMode::Never
    } else {
        args.progress
    });
    let code = match dispatch(args) {
        Ok(code) => code,
        Err(err) => {
            if !emit::stdout_broken() {
                // Not eprintln!: on a stderr that is gone (a hung-up terminal) it would panic
                // and exit 101 instead of the error's own code.
                use std::io::Write;
                let _ = writeln!(std::io::stderr().lock(), "tc: {err}");
            }
            err.exit_code()
        }
    };
    // A reader that hung up (`tc ... | head`) is not a failure of ours.
    let code = if emit::stdout_broken() {
        error::ExitCode::Ok
    } else {
        code
    };
    std::process::exit(code as i32);
}

fn dispatch(args: cli::Cli) -> Result<error::ExitCode, error::Error> {
    match args.command {
        cli::Command::Cpe(cmd) => cpe::run::run(cmd),
        cli::Command::Ovoc(cli::OvocCommand::Serve(a)) => ovoc::serve::run(a),
        cli::Command::Ovoc(cli::OvocCommand::Send(a)) => ovoc::send::run(a),
        cli::Command::Ovoc(cli::OvocCommand::Fetch(a)) => ovoc::fetch::run(a),
        cli::Command::Alarm(cli::AlarmCommand::Listen(a)) => alarm::listen::run(a),
        cli::Command::Session(cli::SessionArgs {
            command: Some(cli::SessionCommand::Status(a)),
            ..
        }) => session::status::run(a),
        cli::Command::Session(a) => session::run::run(a),
        cli::Command::Report(a) => report::run(a),
        cli::Command::Analyze(a) => analyze::run(a),
        cli::Command::Lab(cmd) => lab::run(cmd),
        cli::Command::Generate(a) => generate::run(a),
    }
}
