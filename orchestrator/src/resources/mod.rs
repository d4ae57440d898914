//! Resources: the nodes that run services (their capacity, labels and what runs there) and the
//! decisions of where services run.

pub mod constraint;
pub mod inventory;
pub mod placement;
pub mod preemption;
pub mod tracker;

pub use constraint::Constraint;
pub use placement::Strategy;
pub use tracker::{NodeSettings, Nodes};
