//! Services on nftables: kube-proxy's nftables mode as pure functions of Services and
//! EndpointSlices ([`flows`], then [`render`] per Service, summed by [`table`]), applied in
//! one atomic `nft -f` transaction: the whole table on a full sync, only what changed on a
//! partial one.
//!
//! Dispatch is by verdict maps keyed on `address . protocol . port`, so the cost of finding a
//! Service does not grow with the number of Services.

pub mod announce;
pub mod apply;
pub mod conntrack;
pub mod flows;
pub mod maglev;
pub mod render;
pub mod table;

use flatnet_model::{Backend, ClusterConfig};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use table::Table;

/// The whole nftables table of node `node`, as text.
pub fn program(
    config: &ClusterConfig,
    services: &[Service],
    slices: &[EndpointSlice],
    node: &str,
) -> String {
    build(config, services, slices, node).0.text()
}

/// The table of node `node` and the flows it was made from.
pub fn build(
    config: &ClusterConfig,
    services: &[Service],
    slices: &[EndpointSlice],
    node: &str,
) -> (Table, Vec<flows::Flow>) {
    let flows = flows::flows(services, slices, node);
    let mut table = Table::new(&ranges(config));
    table.set_all(flows.clone());
    (table, flows)
}

/// The cluster's ranges, as the program needs them.
pub fn ranges(config: &ClusterConfig) -> render::Ranges<'_> {
    render::Ranges {
        pod_cidrs: &config.pod_cidrs,
        service_cidrs: &config.service_cidrs,
        tunnel_port: (config.backend == Backend::Vxlan).then_some(flatnet_model::names::VXLAN_PORT),
    }
}
