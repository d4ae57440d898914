//! Resources: the nodes that run services (their capacity, labels and what runs there) and the
//! decisions of where services run.

pub mod inventory;
pub mod tracker;

pub use tracker::{NodeSettings, Nodes};
