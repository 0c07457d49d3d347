//! Per-node Pod CIDRs carved from the cluster Pod CIDR (kube-controller-manager's cidrset).

use std::collections::BTreeSet;

use ipnet::IpNet;

use crate::{from_u128, to_u128, IpamError};

/// At most 2^24 node subnets per cluster CIDR (kube's cidrset allows 2^16).
const MAX_SUBNET_BITS: u8 = 24;

/// Per-node Pod CIDR allocation from the cluster Pod CIDR, with the semantics of
/// kube-controller-manager's range allocator (cidrset): subnets of `node_mask` bits carved in
/// order, the search for a free one starting after the last allocated one and wrapping.
///
/// The used set is sparse (only occupied subnet indices are stored), so a cluster CIDR with up
/// to 2^24 node subnets costs memory in proportion to the nodes, not the subnets.
#[derive(Clone, Debug)]
pub struct NodeCidrAllocator {
    cluster: IpNet,
    node_mask: u8,
    count: u32,
    used: BTreeSet<u32>,
    next: u32,
}

impl NodeCidrAllocator {
    /// An allocator of `/node_mask` subnets of `cluster` (host bits of `cluster` are ignored).
    ///
    /// Fails if `node_mask` is shorter than the cluster prefix, longer than the family's address
    /// length, or would give more than 2^24 subnets.
    pub fn new(cluster: IpNet, node_mask: u8) -> Result<Self, IpamError> {
        let cluster = cluster.trunc();
        let bad = |reason: String| IpamError::InvalidRange {
            range: cluster.to_string(),
            reason,
        };
        if node_mask > cluster.max_prefix_len() {
            return Err(bad(format!(
                "node mask /{node_mask} is longer than the address (/{})",
                cluster.max_prefix_len()
            )));
        }
        if node_mask < cluster.prefix_len() {
            return Err(bad(format!(
                "node mask /{node_mask} is shorter than the cluster prefix /{}",
                cluster.prefix_len()
            )));
        }
        let bits = node_mask - cluster.prefix_len();
        if bits > MAX_SUBNET_BITS {
            return Err(bad(format!(
                "node mask /{node_mask} gives 2^{bits} subnets; at most 2^{MAX_SUBNET_BITS} are supported"
            )));
        }
        Ok(Self {
            cluster,
            node_mask,
            count: 1 << bits,
            used: BTreeSet::new(),
            next: 0,
        })
    }

    /// The number of node subnets in the cluster CIDR.
    pub fn capacity(&self) -> u128 {
        self.count.into()
    }

    /// Marks an existing assignment as used; `subnet` must be one of the node subnets
    /// (inside the cluster CIDR, `/node_mask`, aligned). Occupying twice is fine.
    pub fn occupy(&mut self, subnet: IpNet) -> Result<(), IpamError> {
        let index = self.index_of(subnet)?;
        self.used.insert(index);
        Ok(())
    }

    /// The next free node subnet, searching from after the last allocated one and wrapping.
    pub fn allocate(&mut self) -> Result<IpNet, IpamError> {
        let index = self
            .first_free_from(self.next)
            .or_else(|| self.first_free_from(0))
            .ok_or_else(|| IpamError::Exhausted {
                range: self.cluster.to_string(),
            })?;
        self.used.insert(index);
        self.next = (index + 1) % self.count;
        Ok(self.subnet(index))
    }

    /// Frees a node subnet; releasing a free one is fine. The search position is kept, so the
    /// subnet is not handed out again before the others.
    pub fn release(&mut self, subnet: IpNet) -> Result<(), IpamError> {
        let index = self.index_of(subnet)?;
        self.used.remove(&index);
        Ok(())
    }

    /// Shift from a subnet index to its address offset.
    fn shift(&self) -> u32 {
        u32::from(self.cluster.max_prefix_len() - self.node_mask)
    }

    fn subnet(&self, index: u32) -> IpNet {
        let offset = u128::from(index).checked_shl(self.shift()).unwrap_or(0);
        let addr = from_u128(
            to_u128(self.cluster.network()) + offset,
            self.cluster.addr().is_ipv4(),
        );
        IpNet::new(addr, self.node_mask).expect("node mask is valid for the family")
    }

    fn index_of(&self, subnet: IpNet) -> Result<u32, IpamError> {
        if !self.cluster.contains(&subnet) {
            return Err(IpamError::NotInRange {
                addr: subnet.to_string(),
                range: self.cluster.to_string(),
            });
        }
        let bad = |reason: String| IpamError::InvalidRange {
            range: subnet.to_string(),
            reason,
        };
        if subnet.prefix_len() != self.node_mask {
            return Err(bad(format!(
                "node subnets of {} are /{}",
                self.cluster, self.node_mask
            )));
        }
        if subnet.addr() != subnet.network() {
            return Err(bad(format!(
                "host bits set; the subnet is {}",
                subnet.trunc()
            )));
        }
        let offset = to_u128(subnet.addr()) - to_u128(self.cluster.network());
        Ok(offset.checked_shr(self.shift()).unwrap_or(0) as u32)
    }

    /// The first unused index at or after `start`, without wrapping.
    fn first_free_from(&self, start: u32) -> Option<u32> {
        let mut candidate = start;
        for &used in self.used.range(start..) {
            if used != candidate {
                break;
            }
            candidate += 1;
        }
        (candidate < self.count).then_some(candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn whole_family_and_single_subnet_edges() {
        let mut a = NodeCidrAllocator::new(net("0.0.0.0/0"), 0).unwrap();
        assert_eq!(a.capacity(), 1);
        assert_eq!(a.allocate().unwrap(), net("0.0.0.0/0"));
        assert!(matches!(a.allocate(), Err(IpamError::Exhausted { .. })));
        a.release(net("0.0.0.0/0")).unwrap();
        assert_eq!(a.allocate().unwrap(), net("0.0.0.0/0"));

        let mut a = NodeCidrAllocator::new(net("10.0.0.0/24"), 32).unwrap();
        assert_eq!(a.capacity(), 256);
        assert_eq!(a.allocate().unwrap(), net("10.0.0.0/32"));
        a.occupy(net("10.0.0.255/32")).unwrap();
        for _ in 0..254 {
            a.allocate().unwrap();
        }
        assert!(matches!(a.allocate(), Err(IpamError::Exhausted { .. })));
    }

    #[test]
    fn cluster_host_bits_are_ignored() {
        let mut a = NodeCidrAllocator::new(net("10.42.7.9/16"), 24).unwrap();
        assert_eq!(a.allocate().unwrap(), net("10.42.0.0/24"));
    }

    #[test]
    fn gaps_are_found_past_runs_of_used_subnets() {
        let mut a = NodeCidrAllocator::new(net("10.0.0.0/8"), 24).unwrap();
        assert_eq!(a.capacity(), 65536);
        for i in 0..10 {
            a.occupy(net(&format!("10.0.{i}.0/24"))).unwrap();
        }
        a.occupy(net("10.0.11.0/24")).unwrap();
        assert_eq!(a.allocate().unwrap(), net("10.0.10.0/24"));
        assert_eq!(a.allocate().unwrap(), net("10.0.12.0/24"));
    }
}
