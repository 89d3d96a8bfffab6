//! `tc`: synchronized traffic captures for AudioCodes CPEs and OVOC servers.
//!
//! `main` only parses, sets up logging, dispatches and maps the outcome to an exit code.

mod alarm;
mod cli;
mod cpe;
mod emit;
mod error;
mod event;
mod generate;
mod inventory;
mod lab;
mod logging;
mod netaddr;
mod ovoc;
mod pcap;
mod pool;
mod probe;
mod proto;

mod secret;
mod session;
mod timefmt;
mod tls;
mod util;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    logging::init(args.verbose, args.quiet);
    let code = match dispatch(args) {
        Ok(code) => code,
        Err(err) => {
            if !emit::stdout_broken() {
                eprintln!("tc: {err}");
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
        cli::Command::Alarm(cli::AlarmCommand::Listen(a)) => alarm::listen::run(a),
        cli::Command::Session(a) => session::run::run(a),
        cli::Command::Lab(cmd) => lab::run(cmd),
        cli::Command::Generate(a) => generate::run(a),
    }
}
