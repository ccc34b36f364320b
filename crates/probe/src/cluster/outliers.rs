//! Which links and nodes are slow, from the bandwidth matrix: a link is slow below the
//! expected rate or below 80 % of the median link; a node is slow when most of its links
//! are (one bad NIC drags every link it is on, so naming the node beats naming N links).

/// `bw[i][j]`: Gbit/s from node i to node j, `None` where not measured.
pub type Matrix = Vec<Vec<Option<f64>>>;

/// The fraction of the median below which a link is slow.
pub const SLOW_FRACTION: f64 = 0.8;

#[derive(Debug, Clone, PartialEq)]
pub struct Outliers {
    pub median_gbps: Option<f64>,
    /// (from, to, Gbit/s).
    pub slow_links: Vec<(usize, usize, f64)>,
    /// Nodes most of whose measured links are slow.
    pub slow_nodes: Vec<usize>,
}

pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

pub fn find(bw: &Matrix, expect_gbps: Option<f64>) -> Outliers {
    let mut all: Vec<f64> = bw.iter().flatten().flatten().copied().collect();
    let median_gbps = median(&mut all);
    let floor = match (median_gbps, expect_gbps) {
        (Some(m), Some(e)) => (m * SLOW_FRACTION).max(e),
        (Some(m), None) => m * SLOW_FRACTION,
        (None, Some(e)) => e,
        (None, None) => 0.0,
    };
    let mut slow_links = Vec::new();
    for (i, row) in bw.iter().enumerate() {
        for (j, cell) in row.iter().enumerate() {
            if let Some(rate) = *cell {
                if rate < floor {
                    slow_links.push((i, j, rate));
                }
            }
        }
    }
    let n = bw.len();
    let slow_nodes = (0..n)
        .filter(|&node| {
            let links: Vec<(usize, usize)> = (0..n)
                .flat_map(|o| [(node, o), (o, node)])
                .filter(|&(i, j)| bw[i][j].is_some())
                .collect();
            let slow = links
                .iter()
                .filter(|&&(i, j)| slow_links.iter().any(|&(a, b, _)| (a, b) == (i, j)))
                .count();
            // "Most": more than half, and at least two links to go on.
            links.len() >= 2 && slow * 2 > links.len()
        })
        .collect();
    Outliers {
        median_gbps,
        slow_links,
        slow_nodes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(n: usize, rate: f64) -> Matrix {
        (0..n)
            .map(|i| (0..n).map(|j| (i != j).then_some(rate)).collect())
            .collect()
    }

    #[test]
    fn a_node_at_a_quarter_rate_is_named_as_the_node() {
        let mut bw = matrix(4, 2.0);
        for o in [0, 1, 3] {
            bw[2][o] = Some(0.5);
            bw[o][2] = Some(0.5);
        }
        let found = find(&bw, None);
        assert_eq!(found.slow_nodes, vec![2]);
        assert_eq!(found.slow_links.len(), 6);
        // Half the links are slow, so the median sits between the two rates.
        assert_eq!(found.median_gbps, Some(1.25));
    }

    #[test]
    fn one_slow_link_is_a_link_not_a_node() {
        let mut bw = matrix(4, 2.0);
        bw[0][1] = Some(1.0);
        let found = find(&bw, None);
        assert_eq!(found.slow_links, vec![(0, 1, 1.0)]);
        assert!(found.slow_nodes.is_empty());
    }

    #[test]
    fn the_expectation_raises_the_floor() {
        let bw = matrix(3, 2.0);
        assert!(find(&bw, None).slow_links.is_empty());
        assert_eq!(find(&bw, Some(10.0)).slow_links.len(), 6);
        assert!(find(&matrix(3, 2.0), Some(1.0)).slow_links.is_empty());
    }
}
