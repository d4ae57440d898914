//! Lifecycle of managed services: the manifest that declares them and the dependency graph that
//! orders their start-up and shutdown.

pub mod graph;
pub mod manifest;

pub use graph::Graph;
pub use manifest::{Manifest, ManifestError};
