//! A budget on log lines that peers can cause: a flood of bad requests must not become a
//! flood of lines. Sans-IO: the clock is passed in.

use std::time::{Duration, Instant};

/// Lines admitted per window; past that, lines are counted, not written.
pub const LINES_PER_WINDOW: u32 = 20;
pub const WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Write the line; first say how many lines were dropped since the last one written.
    Write {
        dropped_before: u64,
    },
    Drop,
}

#[derive(Debug, Default)]
pub struct LogBudget {
    window_start: Option<Instant>,
    written: u32,
    dropped: u64,
}

impl LogBudget {
    pub fn admit(&mut self, now: Instant) -> Admit {
        let window_over = self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= WINDOW);
        if window_over {
            self.window_start = Some(now);
            self.written = 0;
        }
        if self.written >= LINES_PER_WINDOW {
            self.dropped += 1;
            return Admit::Drop;
        }
        self.written += 1;
        Admit::Write {
            dropped_before: std::mem::take(&mut self.dropped),
        }
    }

    /// Lines dropped and not yet reported.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_budget_and_the_drop_count_is_reported_next_window() {
        let mut budget = LogBudget::default();
        let t0 = Instant::now();
        let written = (0..20_000)
            .filter(|i| {
                let now = t0 + Duration::from_micros(*i);
                matches!(budget.admit(now), Admit::Write { .. })
            })
            .count();
        assert_eq!(written, LINES_PER_WINDOW as usize);
        assert_eq!(budget.dropped(), 20_000 - u64::from(LINES_PER_WINDOW));
        assert_eq!(
            budget.admit(t0 + WINDOW),
            Admit::Write {
                dropped_before: 20_000 - u64::from(LINES_PER_WINDOW)
            }
        );
        assert_eq!(budget.dropped(), 0);
        assert_eq!(
            budget.admit(t0 + WINDOW + Duration::from_millis(1)),
            Admit::Write { dropped_before: 0 }
        );
    }

    #[test]
    fn lines_under_the_budget_are_all_written() {
        let mut budget = LogBudget::default();
        let t0 = Instant::now();
        for second in 0..5u64 {
            for i in 0..LINES_PER_WINDOW {
                let now = t0 + Duration::from_secs(second) + Duration::from_millis(u64::from(i));
                assert_eq!(budget.admit(now), Admit::Write { dropped_before: 0 });
            }
        }
    }
}
