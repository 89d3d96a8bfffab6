//! The CPE side: capture scripts and reply parsing (pure), the REST client, and the `tc cpe`
//! command (its SFTP fetch is `crate::sftp`, shared with the OVOC side).

pub mod rest;
pub mod run;
pub mod script;
