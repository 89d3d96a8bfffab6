//! The integration suite: one binary that drives the real `tc` against real parts (sshd,
//! tcpdump, capinfos) and the emulated devices of `tc lab up`.

mod harness;
mod suite;
