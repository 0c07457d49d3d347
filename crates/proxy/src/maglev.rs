//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table in which every
//! backend owns an almost equal share of the slots, and adding or removing one backend
//! moves few slots, so few clients change backend.

use sha2::{Digest, Sha256};

/// Slots of a table: a prime, so every skip visits every slot.
pub const TABLE_SIZE: usize = 251;

fn hash(text: &str, salt: u8) -> u64 {
    let d = Sha256::digest([&[salt], text.as_bytes()].concat());
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// For each of the `size` slots, the index of the backend that owns it. `backends` names
/// must be stable (an address and port); `size` must be prime. Empty for no backend.
pub fn table(backends: &[String], size: usize) -> Vec<usize> {
    if backends.is_empty() {
        return Vec::new();
    }
    let perms: Vec<(u64, u64)> = backends
        .iter()
        .map(|b| (hash(b, 0) % size as u64, hash(b, 1) % (size as u64 - 1) + 1))
        .collect();
    let mut next = vec![0u64; backends.len()];
    let mut slots: Vec<Option<usize>> = vec![None; size];
    let mut filled = 0;
    while filled < size {
        for (i, (offset, skip)) in perms.iter().enumerate() {
            // The backend's next preferred slot that is still free.
            let mut c = ((offset + next[i] * skip) % size as u64) as usize;
            while slots[c].is_some() {
                next[i] += 1;
                c = ((offset + next[i] * skip) % size as u64) as usize;
            }
            slots[c] = Some(i);
            next[i] += 1;
            filled += 1;
            if filled == size {
                break;
            }
        }
    }
    slots
        .into_iter()
        .map(|s| s.expect("every slot filled"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("10.42.{}.{}:8080", i / 200, i % 200 + 2))
            .collect()
    }

    #[test]
    fn shares_are_almost_equal() {
        for n in [1, 2, 3, 7, 10] {
            let t = table(&names(n), TABLE_SIZE);
            assert_eq!(t.len(), TABLE_SIZE);
            for b in 0..n {
                let share = t.iter().filter(|x| **x == b).count();
                let fair = TABLE_SIZE / n;
                assert!(
                    share.abs_diff(fair) <= 1,
                    "n={n} backend {b}: {share} slots, fair {fair}"
                );
            }
        }
    }

    #[test]
    fn adding_a_backend_moves_few_slots() {
        let before = names(10);
        let mut after = before.clone();
        after.push("10.42.9.9:8080".into());
        let (a, b) = (table(&before, TABLE_SIZE), table(&after, TABLE_SIZE));
        // Slots that changed owner, other than to the new backend.
        let moved_between_old = a
            .iter()
            .zip(&b)
            .filter(|(x, y)| x != y && **y != 10)
            .count();
        let to_new = b.iter().filter(|y| **y == 10).count();
        assert!(to_new.abs_diff(TABLE_SIZE / 11) <= 1);
        // Random reassignment would move ~90% of the slots; Maglev moves few beyond the new share.
        assert!(
            moved_between_old < TABLE_SIZE / 10,
            "{moved_between_old} slots moved between old backends"
        );
    }

    #[test]
    fn is_deterministic_and_empty_without_backends() {
        assert_eq!(table(&names(5), TABLE_SIZE), table(&names(5), TABLE_SIZE));
        assert!(table(&[], TABLE_SIZE).is_empty());
    }
}
