//! End to end: the real `sagahost` binary on `127.0.0.1:0`, driven over HTTP.
#![allow(clippy::print_stdout)] // tests report their seeds, figures and skips on stdout (captured by the harness)

mod backup;
mod choreography;
mod cli;
mod config;
mod crash;
mod durability;
mod examples;
mod external_plugin;
mod harness;
mod hostile;
mod http_errors;
mod ingress;
mod outbound_http;
#[path = "../../host/tests/common/postgres.rs"]
mod postgres;
mod postgres_store;
mod quarantine;
mod raw_http;
mod recovery;
mod retention;
mod scraping;
mod sdk_http;
mod secrets;
mod semantics;
mod slow_clients;
mod storage;
mod subscriptions;
mod telemetry;
#[path = "../../host/tests/common/tls.rs"]
mod tls;
mod topics;
mod transfers;
mod ui;
mod waits;
