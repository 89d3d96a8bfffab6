//! The CPE side: capture scripts and reply parsing (pure), the REST client, SFTP fetch, and the
//! `tc cpe` command.

pub mod rest;
pub mod run;
pub mod script;
pub mod sftp;
