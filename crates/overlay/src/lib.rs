//! Pod traffic between nodes: VXLAN (one device per node, learning off, static neighbour and
//! FDB entries) or host-gw (a route per remote pod subnet via its node).
//!
//! [`program`] computes a node's program from the cluster's nodes; [`apply`] makes the kernel
//! match it with the fewest changes.

pub mod apply;
pub mod program;

pub use apply::{apply, Changes};
pub use program::{gateway, program, Program};
