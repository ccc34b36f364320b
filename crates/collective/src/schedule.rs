//! A collective as data: per step, what this rank sends to whom and what it receives
//! from whom (copy or reduce), split into pipeline segments. Each send segment records how
//! many receive segments must be complete first, derived from byte-range overlap, so
//! forwarding a chunk starts as soon as its first segment has arrived.

use std::ops::Range;

/// Pipeline segment size: large enough for full-speed writes, small enough to overlap
/// receiving, reducing and forwarding.
pub const SEGMENT_BYTES: usize = 512 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Copy,
    Reduce,
    /// target = source op incoming: the first reduction into a chunk of an out-of-place
    /// collective reads the caller's source buffer instead of a pre-copied one.
    ReduceSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    pub peer: usize,
    pub range: Range<usize>,
    /// Read from the caller's source buffer (never written, so no dependencies).
    pub from_source: bool,
    /// Receive segments that must be complete before this one is sent.
    pub after: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recv {
    pub peer: usize,
    pub range: Range<usize>,
    pub action: Action,
}

#[derive(Debug, Clone, Default)]
pub struct Schedule {
    pub local_copies: Vec<(Range<usize>, Range<usize>)>,
    pub sends: Vec<Send>,
    pub recvs: Vec<Recv>,
    pub send_bytes: usize,
    pub max_segment: usize,
}

#[derive(Debug, Default)]
struct Step {
    sends: Vec<(usize, Range<usize>, bool)>,
    recvs: Vec<(usize, Range<usize>, Action)>,
}

/// Collects steps in byte ranges, then splits and links them.
#[derive(Debug)]
pub struct Builder {
    segment: usize,
    steps: Vec<Step>,
    local_copies: Vec<(Range<usize>, Range<usize>)>,
}

impl Builder {
    /// `element` is the dtype size: segments never split an element.
    pub fn new(element: usize) -> Self {
        let segment = SEGMENT_BYTES - SEGMENT_BYTES % element.max(1);
        Builder {
            segment,
            steps: Vec::new(),
            local_copies: Vec::new(),
        }
    }

    pub fn with_segment(mut self, segment: usize) -> Self {
        self.segment = segment.max(1);
        self
    }

    pub fn local_copy(&mut self, from: Range<usize>, to: Range<usize>) {
        if !from.is_empty() && from != to {
            self.local_copies.push((from, to));
        }
    }

    /// Starts a new step; sends of a step may overlap its receives.
    pub fn step(&mut self) -> &mut Self {
        self.steps.push(Step::default());
        self
    }

    pub fn send(&mut self, peer: usize, range: Range<usize>) -> &mut Self {
        if !range.is_empty() {
            self.current().sends.push((peer, range, false));
        }
        self
    }

    /// Sends a range of the caller's source buffer (out-of-place collectives).
    pub fn send_source(&mut self, peer: usize, range: Range<usize>) -> &mut Self {
        if !range.is_empty() {
            self.current().sends.push((peer, range, true));
        }
        self
    }

    pub fn recv(&mut self, peer: usize, range: Range<usize>, action: Action) -> &mut Self {
        if !range.is_empty() {
            self.current().recvs.push((peer, range, action));
        }
        self
    }

    fn current(&mut self) -> &mut Step {
        if self.steps.is_empty() {
            self.steps.push(Step::default());
        }
        self.steps.last_mut().expect("a step exists")
    }

    pub fn build(self) -> Schedule {
        let mut schedule = Schedule {
            local_copies: self.local_copies,
            ..Schedule::default()
        };
        for step in self.steps {
            for (peer, range, from_source) in step.sends {
                for piece in split(range, self.segment) {
                    let after = if from_source {
                        0
                    } else {
                        schedule
                            .recvs
                            .iter()
                            .rposition(|r| r.range.start < piece.end && piece.start < r.range.end)
                            .map_or(0, |index| index + 1)
                    };
                    schedule.send_bytes += piece.len();
                    schedule.max_segment = schedule.max_segment.max(piece.len());
                    schedule.sends.push(Send {
                        peer,
                        range: piece,
                        from_source,
                        after,
                    });
                }
            }
            for (peer, range, action) in step.recvs {
                for piece in split(range, self.segment) {
                    schedule.max_segment = schedule.max_segment.max(piece.len());
                    schedule.recvs.push(Recv {
                        peer,
                        range: piece,
                        action,
                    });
                }
            }
        }
        schedule
    }
}

fn split(range: Range<usize>, segment: usize) -> impl Iterator<Item = Range<usize>> {
    (range.start..range.end)
        .step_by(segment)
        .map(move |start| start..(start + segment).min(range.end))
}

/// Element range of chunk `index` when `count` elements are cut into `parts` nearly equal
/// chunks (sizes not divisible by `parts` are fine).
pub fn chunk(count: usize, parts: usize, index: usize) -> Range<usize> {
    (index * count / parts)..((index + 1) * count / parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarding_waits_for_the_matching_segment_only() {
        let mut builder = Builder::new(4).with_segment(100);
        builder.step().recv(1, 0..250, Action::Copy);
        builder.step().send(2, 0..250);
        let schedule = builder.build();
        assert_eq!(schedule.recvs.len(), 3);
        let afters: Vec<usize> = schedule.sends.iter().map(|s| s.after).collect();
        assert_eq!(afters, vec![1, 2, 3]);
        assert_eq!(schedule.send_bytes, 250);
        assert_eq!(schedule.max_segment, 100);
    }

    #[test]
    fn first_sends_depend_on_nothing_and_same_step_receives_do_not_block_sends() {
        let mut builder = Builder::new(4).with_segment(64);
        builder
            .step()
            .send(1, 0..64)
            .recv(3, 64..128, Action::Reduce);
        builder
            .step()
            .send(1, 64..128)
            .recv(3, 128..192, Action::Reduce);
        let schedule = builder.build();
        assert_eq!(schedule.sends[0].after, 0);
        assert_eq!(schedule.sends[1].after, 1);
    }

    #[test]
    fn chunks_cover_uneven_counts() {
        let parts: Vec<_> = (0..3).map(|i| chunk(10, 3, i)).collect();
        assert_eq!(parts, vec![0..3, 3..6, 6..10]);
        assert_eq!(chunk(2, 4, 0), 0..0);
    }
}
