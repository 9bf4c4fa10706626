//! Host bindings for every plugin world this host runs. The current world (`../wit`) adds
//! emitted events and the business key; the frozen worlds (`../wit/v0.2`: durable state,
//! `../wit/v0.1`: logging only) keep plugins built against them running. A component is
//! matched to the newest world whose `step` interface it exports.

#![allow(missing_docs)]

use wasmtime::component::{HasSelf, InstancePre, Linker};

use super::StepData;

/// `saga:plugin@0.3.0`: logging, state and events imports.
pub mod current {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

/// `saga:plugin@0.2.0`: logging and state imports.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.2",
        world: "plugin",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

/// `saga:plugin@0.1.0`: logging only.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1",
        world: "plugin",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

/// A plugin ready to instantiate, in the world it was built for.
#[derive(Clone)]
pub enum PluginPre {
    /// Built against the current world.
    Current(current::PluginPre<StepData>),
    /// Built against `saga:plugin@0.2.0`.
    V0_2(v0_2::PluginPre<StepData>),
    /// Built against `saga:plugin@0.1.0`.
    V0_1(v0_1::PluginPre<StepData>),
}

impl PluginPre {
    /// Matches a linked component to the newest world it exports; the error names what the
    /// current world expects.
    pub fn new(pre: InstancePre<StepData>) -> wasmtime::Result<Self> {
        match current::PluginPre::new(pre.clone()) {
            Ok(p) => Ok(Self::Current(p)),
            Err(e) => v0_2::PluginPre::new(pre.clone())
                .map(Self::V0_2)
                .or_else(|_| v0_1::PluginPre::new(pre).map(Self::V0_1))
                .map_err(|_| e),
        }
    }

    /// The world's version, for logs and metadata.
    pub fn world(&self) -> &'static str {
        match self {
            Self::Current(_) => "saga:plugin@0.3.0",
            Self::V0_2(_) => "saga:plugin@0.2.0",
            Self::V0_1(_) => "saga:plugin@0.1.0",
        }
    }
}

/// Adds the host side of every world to `linker`.
pub fn add_to_linker(linker: &mut Linker<StepData>) -> wasmtime::Result<()> {
    current::Plugin::add_to_linker::<_, HasSelf<_>>(linker, |data| data)?;
    v0_2::Plugin::add_to_linker::<_, HasSelf<_>>(linker, |data| data)?;
    v0_1::Plugin::add_to_linker::<_, HasSelf<_>>(linker, |data| data)?;
    Ok(())
}
