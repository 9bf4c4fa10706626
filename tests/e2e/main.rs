//! End to end: the real `sagahost` binary on `127.0.0.1:0`, driven over HTTP.
#![allow(clippy::print_stdout)] // tests report their seeds, figures and skips on stdout (captured by the harness)

mod cli;
mod config;
mod crash;
mod examples;
mod external_plugin;
mod harness;
mod hostile;
mod outbound_http;
mod quarantine;
mod recovery;
mod semantics;
mod storage;
mod telemetry;
mod transfers;
mod ui;
