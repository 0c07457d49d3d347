//! Services on nftables: kube-proxy's nftables mode as a pure function of Services and
//! EndpointSlices ([`flows`] then [`render`]), applied as one atomic `nft -f` transaction.
//!
//! Dispatch is by verdict maps keyed on `address . protocol . port`, so the cost of finding a
//! Service does not grow with the number of Services.

pub mod announce;
pub mod apply;
pub mod flows;
pub mod render;

use flatnet_model::ClusterConfig;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The whole nftables table of node `node`.
pub fn program(
    config: &ClusterConfig,
    services: &[Service],
    slices: &[EndpointSlice],
    node: &str,
) -> String {
    let flows = flows::flows(services, slices, node);
    render::render(
        &flows,
        &render::Ranges {
            pod_cidrs: &config.pod_cidrs,
            service_cidrs: &config.service_cidrs,
        },
    )
}
