//! Multi-rail striping: which rail carries which piece of a transfer. Both sides compute
//! the same map from the plan alone: block i of the request travels on rail i mod rails,
//! so each rail carries whole blocks (a block's checksum is taken on one rail, in order)
//! and the rails get equal shares when blocks are equal.

use crate::plan::Piece;
use std::net::TcpStream;

/// What one rail's share of a transfer gave: its blocks' checksums, and how it ended.
pub(crate) type RailOutcome = (Vec<u32>, std::io::Result<()>);

/// Runs `work` on every rail's share at once: rail 0 (`primary`) on this thread, the
/// others (`rails`, rail 1..) on scoped threads; outcomes in rail order.
pub(crate) fn on_every_rail<'a>(
    primary: &TcpStream,
    rails: impl Iterator<Item = &'a TcpStream>,
    shares: &[Vec<Piece>],
    work: &(dyn Fn(&TcpStream, &[Piece]) -> RailOutcome + Sync),
) -> Vec<RailOutcome> {
    std::thread::scope(|scope| {
        let others: Vec<_> = rails
            .zip(&shares[1..])
            .map(|(stream, share)| scope.spawn(move || work(stream, share)))
            .collect();
        let mut outcomes = vec![work(primary, &shares[0])];
        for handle in others {
            outcomes.push(handle.join().unwrap_or_else(|_| {
                (
                    Vec::new(),
                    Err(std::io::Error::other("a rail thread panicked")),
                )
            }));
        }
        outcomes
    })
}

/// Most rails one session may stripe over.
pub const MAX_RAILS: usize = 16;

/// The rail that carries block `block` of a request.
pub fn rail_of(block: u32, rails: usize) -> usize {
    block as usize % rails.max(1)
}

/// Splits `pieces` (in stream order) into one list per rail, each in stream order.
/// `out` is reused: its lists keep their capacity from one pull to the next.
pub fn split(pieces: &[Piece], rails: usize, out: &mut Vec<Vec<Piece>>) {
    let rails = rails.max(1);
    out.resize_with(rails, Vec::new);
    for list in out.iter_mut() {
        list.clear();
    }
    for piece in pieces {
        out[rail_of(piece.block, rails)].push(*piece);
    }
}

/// Merges per-rail checksums: rail r computed the blocks it carried, in `per_rail[r]`.
pub fn merge_checksums(per_rail: &[Vec<u32>], blocks: usize) -> Vec<u32> {
    (0..blocks)
        .map(|b| {
            per_rail
                .get(rail_of(b as u32, per_rail.len()))
                .and_then(|crcs| crcs.get(b).copied())
                .unwrap_or(0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(block: u32, src: u64) -> Piece {
        Piece {
            src,
            dst: src,
            len: 8,
            block,
        }
    }

    #[test]
    fn every_piece_lands_on_exactly_one_rail_in_order_whole_blocks_per_rail() {
        let pieces: Vec<Piece> = (0..10u32)
            .flat_map(|b| (0..3u64).map(move |i| piece(b, (b as u64 * 3 + i) * 8)))
            .collect();
        let mut out = Vec::new();
        for rails in 1..=4 {
            split(&pieces, rails, &mut out);
            assert_eq!(out.len(), rails);
            let total: usize = out.iter().map(Vec::len).sum();
            assert_eq!(total, pieces.len());
            for (r, list) in out.iter().enumerate() {
                assert!(list.iter().all(|p| rail_of(p.block, rails) == r));
                assert!(list.windows(2).all(|w| w[0].src < w[1].src), "stream order");
            }
            // Equal blocks, equal shares (within one block).
            let sizes: Vec<usize> = out.iter().map(Vec::len).collect();
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 3);
        }
        // Reusing `out` with fewer rails leaves no stale lists behind.
        split(&pieces, 4, &mut out);
        split(&pieces, 2, &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn checksums_merge_from_the_rail_that_carried_each_block() {
        let per_rail = vec![vec![10, 0, 12, 0], vec![0, 21, 0, 23]];
        assert_eq!(merge_checksums(&per_rail, 4), vec![10, 21, 12, 23]);
    }
}
