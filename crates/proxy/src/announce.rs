//! Which node answers for each LoadBalancer IP on the node network, as a layer-2 announcer
//! (MetalLB's L2 mode) elects one: for `externalTrafficPolicy: Local` a node with a ready
//! local endpoint, otherwise a node picked by the address, so IPs spread over the nodes.

use flatnet_controller::endpoints::of_service;
use flatnet_controller::services::load_balancer_ips;
use flatnet_model::state::State;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::net::IpAddr;

/// `(LoadBalancer IP, node)` for every LoadBalancer IP of the cluster.
pub fn announcements(state: &State, slices: &[EndpointSlice]) -> Vec<(IpAddr, String)> {
    let mut out = Vec::new();
    if state.nodes.is_empty() {
        return out;
    }
    for svc in &state.services {
        let Some(spec) = &svc.spec else { continue };
        let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
        let name = svc.metadata.name.as_deref().unwrap_or("");
        for ip in load_balancer_ips(svc) {
            let local_nodes: Vec<&str> = of_service(slices, ns, name)
                .flat_map(|s| s.endpoints.iter())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
                .filter_map(|e| e.node_name.as_deref())
                .collect();
            let by_address = match ip {
                IpAddr::V4(v) => u32::from(v) as usize,
                IpAddr::V6(v) => u128::from(v) as usize,
            } % state.nodes.len();
            let node = if spec.external_traffic_policy.as_deref() == Some("Local") {
                state
                    .nodes
                    .iter()
                    .find(|n| local_nodes.contains(&n.name.as_str()))
                    .unwrap_or(&state.nodes[by_address])
            } else {
                &state.nodes[by_address]
            };
            out.push((ip, node.name.clone()));
        }
    }
    out.sort();
    out
}
