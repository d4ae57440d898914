//! Resources: the nodes that run services (their capacity, labels and what runs there, the
//! [`inventory`] and its [`tracker`]) and where services run. Services ask for CPU and memory with
//! constraints on node labels ([`constraint`]); a pure scheduler places replicas on the nodes the
//! agents report, bin-packing or spreading, and explains each choice ([`placement`]); when a
//! replica fits nowhere, a pure planner picks lower-priority replicas to stop for it, under a
//! budget ([`preemption`]). They decide only: the lifecycle controller starts and stops the
//! processes.

pub mod constraint;
pub mod inventory;
pub mod placement;
pub mod preemption;
pub mod quota;
pub mod tracker;

pub use constraint::Constraint;
pub use placement::Strategy;
pub use tracker::{NodeSettings, Nodes};
