//! `tc session`: the whole capture workflow for a fleet.

pub mod core;
pub mod run;
