//! The OVOC side: the capture agent (`tc ovoc serve`), its OVOC REST client, and `tc ovoc send`.

pub mod auth;
pub mod config;
pub mod core;
pub mod fetch;
pub mod limits;
pub mod rules;
pub mod send;
pub mod serve;
pub mod state;
pub mod tcpdump;
