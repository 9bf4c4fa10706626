//! sagahost: a WebAssembly-plugin saga host.
//!
//! Layout, from the pure core outwards:
//! - [`domain`]: definitions, events, the state fold and `decide` — pure, time passed in;
//! - [`store`]: event streams with optimistic concurrency and group commit (sled), the catalog;
//! - [`runtime`]: wasmtime engine, plugin validation and cache, sandboxed attempts with limits;
//! - [`secrets`]: operator-stored values steps read by name, sealed at rest, redacted;
//! - [`orchestrator`]: drives executions (load → decide → invoke → append), timers, recovery;
//! - [`api`]: the HTTP API, thin handlers over the orchestrator;
//! - [`server`]: wiring of all of the above into a running host; [`demo`]: the example sagas.

pub mod api;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod delivery;
pub mod demo;
pub mod domain;
pub mod ingress;
pub mod metrics;
pub mod orchestrator;
pub mod retention;
pub mod runtime;
pub mod secrets;
pub mod server;
pub mod store;
pub(crate) mod sync;
pub mod telemetry;
