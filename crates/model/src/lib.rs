//! flatnet's model: the `Cluster` document, Kubernetes manifests, validation, lab names and
//! the desired-state store that commands and node agents share.

pub mod cluster;
pub mod ingress;
pub mod manifest;
pub mod names;
pub mod state;
pub mod validate;

pub use cluster::{Backend, ClusterConfig, ClusterSpec};
pub use manifest::{Manifests, Object};
pub use state::{ClusterDir, NodeState, NodeStatus, PodState, PodStatus, State};
pub use validate::{Invalid, Invalids};
