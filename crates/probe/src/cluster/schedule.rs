//! Which pairs of nodes test each other, and in which rounds: every node is in at most
//! one pair per round, so bandwidth tests never share a node's NIC. Small clusters test
//! every pair (the circle method: N-1 rounds for even N); large ones a ring plus `k`
//! random partners per node, so the cost grows as O(N).

/// A pair of node indices, the connecting side first.
pub type Pair = (usize, usize);

/// Every pair, in rounds of disjoint pairs (round-robin tournament, "circle method").
pub fn full_mesh(n: usize) -> Vec<Vec<Pair>> {
    if n < 2 {
        return Vec::new();
    }
    // An odd count gets a phantom node; whoever meets it sits the round out.
    let slots = n + n % 2;
    let mut rounds = Vec::with_capacity(slots - 1);
    for round in 0..slots - 1 {
        let mut pairs = Vec::with_capacity(slots / 2);
        for i in 0..slots / 2 {
            let (x, y) = if i == 0 {
                (slots - 1, round)
            } else {
                (
                    (round + i) % (slots - 1),
                    (round + slots - 1 - i) % (slots - 1),
                )
            };
            if x < n && y < n {
                pairs.push((x.min(y), x.max(y)));
            }
        }
        rounds.push(pairs);
    }
    rounds
}

/// splitmix64: a tiny deterministic generator, so every run of a cluster picks the same
/// partners for the same seed.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A ring (i, i+1) plus `k` random partners per node, each pair once.
pub fn ring_plus_random(n: usize, k: usize, seed: u64) -> Vec<Pair> {
    let mut pairs: Vec<Pair> = Vec::new();
    let add = |a: usize, b: usize, pairs: &mut Vec<Pair>| {
        let p = (a.min(b), a.max(b));
        if a != b && !pairs.contains(&p) {
            pairs.push(p);
        }
    };
    if n < 2 {
        return pairs;
    }
    for i in 0..n {
        add(i, (i + 1) % n, &mut pairs);
    }
    let mut state = seed;
    for i in 0..n {
        for _ in 0..k {
            let partner = (next(&mut state) % n as u64) as usize;
            add(i, partner, &mut pairs);
        }
    }
    pairs.sort_unstable();
    pairs
}

/// Places pairs in rounds greedily: each in the first round where neither node is busy.
pub fn rounds_of(pairs: &[Pair]) -> Vec<Vec<Pair>> {
    let mut rounds: Vec<Vec<Pair>> = Vec::new();
    let mut busy: Vec<Vec<bool>> = Vec::new();
    let n = pairs.iter().map(|&(a, b)| a.max(b) + 1).max().unwrap_or(0);
    for &(a, b) in pairs {
        let slot = (0..rounds.len()).find(|&r| !busy[r][a] && !busy[r][b]);
        let r = slot.unwrap_or_else(|| {
            rounds.push(Vec::new());
            busy.push(vec![false; n]);
            rounds.len() - 1
        });
        busy[r][a] = true;
        busy[r][b] = true;
        rounds[r].push((a, b));
    }
    rounds
}

/// The plan for `n` nodes: every pair when `full_mesh`, else a ring plus `k` partners.
pub fn plan(n: usize, full_mesh_pairs: bool, k: usize, seed: u64) -> Vec<Vec<Pair>> {
    if full_mesh_pairs {
        full_mesh(n)
    } else {
        rounds_of(&ring_plus_random(n, k, seed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_disjoint(rounds: &[Vec<Pair>], n: usize) {
        for round in rounds {
            let mut seen = vec![false; n];
            for &(a, b) in round {
                assert!(a != b && a < n && b < n);
                assert!(
                    !seen[a] && !seen[b],
                    "a node is in two tests at once: {round:?}"
                );
                seen[a] = true;
                seen[b] = true;
            }
        }
    }

    #[test]
    fn full_mesh_covers_every_pair_once_in_n_minus_1_rounds() {
        for n in 2..=17 {
            let rounds = full_mesh(n);
            assert_eq!(rounds.len(), if n % 2 == 0 { n - 1 } else { n }, "n={n}");
            assert_disjoint(&rounds, n);
            let mut all: Vec<Pair> = rounds.concat();
            all.sort_unstable();
            all.dedup();
            assert_eq!(all.len(), n * (n - 1) / 2, "n={n}");
        }
    }

    /// 1,024 simulated nodes: the ring-plus-2 plan covers every node, never puts a node
    /// in two bandwidth tests at once, and needs a handful of rounds, not N-1.
    #[test]
    fn a_thousand_nodes_are_scheduled_in_few_disjoint_rounds() {
        let n = 1024;
        let pairs = ring_plus_random(n, 2, 7);
        assert!(pairs.len() <= n * 3, "{} pairs", pairs.len());
        let rounds = rounds_of(&pairs);
        assert_disjoint(&rounds, n);
        let mut covered = vec![0usize; n];
        for &(a, b) in rounds.iter().flatten() {
            covered[a] += 1;
            covered[b] += 1;
        }
        assert!(
            covered.iter().all(|&c| c >= 2),
            "every node has its ring links"
        );
        assert_eq!(rounds.iter().map(Vec::len).sum::<usize>(), pairs.len());
        assert!(rounds.len() <= 12, "{} rounds", rounds.len());
        // Same seed, same plan.
        assert_eq!(ring_plus_random(n, 2, 7), pairs);
        eprintln!(
            "1024 nodes: {} pairs in {} rounds",
            pairs.len(),
            rounds.len()
        );
    }
}
