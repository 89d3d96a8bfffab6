//! Secrets (passwords, SNMP keys). They come from an env var, a file or a no-echo TTY prompt,
//! never from argv; the type has no `Display` and a redacting `Debug`, so a secret cannot reach
//! a log line, an event or a panic message by accident.

use std::fmt;
use std::io::IsTerminal;
use std::path::Path;

use crate::error::{Error, Result};

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    /// The only way to read the value: greppable, so every use can be reviewed.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Where resolve steps read the environment and ask for secrets: the process's own, or a
/// table's in tests (no terminal, so no prompt).
pub struct Env {
    vars: std::collections::HashMap<String, String>,
    terminal: bool,
}

impl Env {
    pub fn process() -> Env {
        Env {
            vars: std::env::vars().collect(),
            terminal: std::io::stdin().is_terminal(),
        }
    }

    #[cfg(test)]
    pub fn of(vars: &[(&str, &str)]) -> Env {
        Env {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            terminal: false,
        }
    }

    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// Like `resolve` but absent is fine (optional secrets such as SNMP keys).
    pub fn secret(&self, name: &str) -> Option<Secret> {
        self.var(name)
            .filter(|v| !v.is_empty())
            .map(|v| Secret(v.to_string()))
    }
}

/// Where a secret is looked for, in order: the file named on the command line, the environment
/// variable, a no-echo prompt when stdin is a terminal.
pub struct Source<'a> {
    pub what: &'a str,
    pub file: Option<&'a Path>,
    pub env: &'a str,
    pub file_flag: &'a str,
}

pub fn resolve(src: &Source, env: &Env) -> Result<Secret> {
    if let Some(path) = src.file {
        return read_file(path, src.what);
    }
    if let Some(v) = env.var(src.env) {
        if v.is_empty() {
            return Err(Error::usage(format!("{} is set but empty", src.env)));
        }
        return Ok(Secret(v.to_string()));
    }
    if env.terminal {
        let v = rpassword::prompt_password(format!("{}: ", src.what))
            .map_err(|e| Error::usage(format!("reading {} from the terminal: {e}", src.what)))?;
        if v.is_empty() {
            return Err(Error::usage(format!("empty {}", src.what)));
        }
        return Ok(Secret(v));
    }
    Err(Error::usage(format!(
        "no {}: set {}, use {} FILE, or run on a terminal to be prompted",
        src.what, src.env, src.file_flag
    )))
}

pub fn read_file(path: &Path, what: &str) -> Result<Secret> {
    let raw = std::fs::read_to_string(path)
        .map_err(|e| Error::usage(format!("reading {what} from {}: {e}", path.display())))?;
    let v = raw.strip_suffix('\n').unwrap_or(&raw);
    let v = v.strip_suffix('\r').unwrap_or(v);
    if v.is_empty() {
        return Err(Error::usage(format!("{} is empty", path.display())));
    }
    Ok(Secret(v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
    }

    #[test]
    fn file_strips_one_trailing_newline_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "a b \n").unwrap();
        assert_eq!(read_file(&p, "password").unwrap().expose(), "a b ");
        std::fs::write(&p, "\n").unwrap();
        let err = read_file(&p, "password").unwrap_err().to_string();
        assert!(err.contains("is empty"), "{err}");
    }
}
