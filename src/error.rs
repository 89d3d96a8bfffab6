//! Errors and exit codes. An error is a message for a human plus the exit code it implies.

use std::fmt;

/// The documented exit codes (README, man page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// All requested work succeeded.
    Ok = 0,
    /// Some device or operation failed; the others still completed.
    Failed = 1,
    /// Usage or configuration error: nothing was attempted.
    Usage = 2,
    /// `tc session status`: the session is still running.
    Running = 3,
    /// Interrupted by SIGINT/SIGTERM.
    Interrupted = 130,
}

#[derive(Debug)]
pub struct Error {
    code: ExitCode,
    msg: String,
}

impl Error {
    pub fn usage(msg: impl Into<String>) -> Error {
        Error {
            code: ExitCode::Usage,
            msg: msg.into(),
        }
    }

    pub fn failed(msg: impl Into<String>) -> Error {
        Error {
            code: ExitCode::Failed,
            msg: msg.into(),
        }
    }

    pub fn interrupted() -> Error {
        Error {
            code: ExitCode::Interrupted,
            msg: "interrupted".into(),
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        self.code
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;
