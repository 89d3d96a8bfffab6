//! `tc session`: the whole capture workflow for a fleet.

pub mod config;
pub mod core;
pub mod files;
pub mod run;
pub mod status;
pub mod summary;
