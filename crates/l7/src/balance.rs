//! Upstream choice: round robin, least request (power of two choices) and consistent hashing
//! (rendezvous: the endpoint with the highest hash of key and address wins, so adding or
//! removing one endpoint moves only the keys that it wins or won).

use flatnet_l7_routes::Balance;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

/// One endpoint as the balancer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Its address.
    pub addr: SocketAddr,
    /// Requests in flight to it now.
    pub in_flight: u64,
    /// Ejected by passive health checks: used only when every untried endpoint is.
    pub ejected: bool,
    /// Already tried for this request (a retry goes elsewhere): never chosen.
    pub tried: bool,
}

/// The per-request inputs of a choice.
#[derive(Debug, Clone, Copy, Default)]
pub struct Draw {
    /// Round-robin ticket (a counter per backend).
    pub ticket: usize,
    /// Two random numbers for least request.
    pub random: (usize, usize),
    /// The hash key for consistent hashing, when the request has one.
    pub key: Option<u64>,
}

/// The hash key of a request for `balance`: the value of the header it names (`header`
/// looks a request header up by name, case-insensitively) or the client IP; `None` when the
/// policy does not hash or the header is missing (then round robin is used).
pub fn hash_key<'h>(
    balance: &Balance,
    header: impl FnOnce(&str) -> Option<&'h [u8]>,
    client: IpAddr,
) -> Option<u64> {
    let mut h = DefaultHasher::new();
    match balance {
        Balance::HashHeader(name) => header(name)?.hash(&mut h),
        Balance::HashClientIp => client.hash(&mut h),
        Balance::RoundRobin | Balance::LeastRequest => return None,
    }
    Some(h.finish())
}

fn weight(key: u64, addr: &SocketAddr) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    addr.hash(&mut h);
    h.finish()
}

/// Index into `candidates` of the endpoint to use, `None` when every one was tried. Builds
/// nothing: it runs on every request.
pub fn choose(balance: &Balance, candidates: &[Candidate], draw: Draw) -> Option<usize> {
    let untried = || (0..candidates.len()).filter(|&i| !candidates[i].tried);
    let any_healthy = untried().any(|i| !candidates[i].ejected);
    // The endpoints to choose from: the healthy untried ones, else every untried one.
    let pool = || untried().filter(move |&i| !any_healthy || !candidates[i].ejected);
    let len = pool().count();
    if len == 0 {
        return None;
    }
    let nth = |k: usize| pool().nth(k % len);
    match (balance, draw.key) {
        (Balance::HashHeader(_) | Balance::HashClientIp, Some(key)) => {
            pool().max_by_key(|&i| weight(key, &candidates[i].addr))
        }
        (Balance::LeastRequest, _) => {
            let (a, b) = (nth(draw.random.0)?, nth(draw.random.1)?);
            Some(if candidates[b].in_flight < candidates[a].in_flight {
                b
            } else {
                a
            })
        }
        _ => nth(draw.ticket),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(n: u16) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate {
                addr: SocketAddr::from(([10, 0, 0, 1], 8000 + i)),
                in_flight: 0,
                ejected: false,
                tried: false,
            })
            .collect()
    }

    fn draw(ticket: usize) -> Draw {
        Draw {
            ticket,
            ..Draw::default()
        }
    }

    #[test]
    fn round_robin_cycles_and_skips_ejected_and_tried() {
        let mut c = endpoints(3);
        let picks: Vec<_> = (0..6)
            .map(|t| choose(&Balance::RoundRobin, &c, draw(t)).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        c[1].ejected = true;
        assert!((0..6).all(|t| choose(&Balance::RoundRobin, &c, draw(t)) != Some(1)));
        c[0].ejected = true;
        c[2].tried = true;
        assert_eq!(choose(&Balance::RoundRobin, &c, draw(5)), Some(1));
        c[0].tried = true;
        c[1].tried = true;
        assert_eq!(choose(&Balance::RoundRobin, &c, draw(0)), None);
    }

    #[test]
    fn all_ejected_are_used_anyway() {
        let mut c = endpoints(2);
        c.iter_mut().for_each(|c| c.ejected = true);
        assert!(choose(&Balance::RoundRobin, &c, draw(0)).is_some());
    }

    #[test]
    fn least_request_takes_the_less_busy_of_two() {
        let mut c = endpoints(2);
        c[0].in_flight = 5;
        let d = Draw {
            random: (0, 1),
            ..Draw::default()
        };
        assert_eq!(choose(&Balance::LeastRequest, &c, d), Some(1));
        c[1].in_flight = 9;
        assert_eq!(choose(&Balance::LeastRequest, &c, d), Some(0));
    }

    #[test]
    fn hashing_sticks_and_moves_few_keys_when_an_endpoint_is_added() {
        let policy = Balance::HashClientIp;
        let four = endpoints(4);
        let five = endpoints(5);
        let mut moved = 0;
        for key in 0..1000u64 {
            let d = Draw {
                key: Some(key),
                ticket: key as usize,
                ..Draw::default()
            };
            let a = choose(&policy, &four, d).unwrap();
            assert_eq!(choose(&policy, &four, Draw { ticket: 99, ..d }), Some(a));
            let b = choose(&policy, &five, d).unwrap();
            if a != b {
                assert_eq!(b, 4, "a key only moves to the new endpoint");
                moved += 1;
            }
        }
        assert!((100..=300).contains(&moved), "moved {moved} of 1000");
    }

    #[test]
    fn hash_keys_come_from_the_header_or_the_client() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let by_header = Balance::HashHeader("x-user".into());
        let none = |_: &str| None;
        let alice = |name: &str| (name == "x-user").then_some(&b"alice"[..]);
        let bob = |name: &str| (name == "x-user").then_some(&b"bob"[..]);
        assert_eq!(hash_key(&by_header, none, ip), None);
        assert!(hash_key(&by_header, alice, ip).is_some());
        assert_eq!(
            hash_key(&by_header, alice, ip),
            hash_key(&by_header, alice, other)
        );
        assert_ne!(
            hash_key(&by_header, alice, ip),
            hash_key(&by_header, bob, ip)
        );
        assert_eq!(
            hash_key(&Balance::HashClientIp, alice, ip),
            hash_key(&Balance::HashClientIp, none, ip)
        );
        assert_ne!(
            hash_key(&Balance::HashClientIp, none, ip),
            hash_key(&Balance::HashClientIp, none, other)
        );
        assert_eq!(hash_key(&Balance::RoundRobin, alice, ip), None);
    }
}
