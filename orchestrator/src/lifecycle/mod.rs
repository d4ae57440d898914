//! Lifecycle of managed services: the manifest that declares them, the dependency graph, and the
//! start-up and shutdown orders (pure decisions; the agent runs the processes).

pub mod cli;
pub mod controller;
pub mod graph;
pub mod manifest;
pub mod probes;
pub mod profile;
pub mod recorder;
pub mod restart;
pub mod shedding;
pub mod startup;

pub use controller::{Collaborators, ControlError, Controller, ControllerConfig};
pub use graph::Graph;
pub use manifest::{Manifest, ManifestError};
