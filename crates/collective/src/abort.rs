//! Which failure to blame when several ranks fail at once, without I/O. When a rank dies,
//! its neighbours see it close, and the ranks beyond them then see the neighbours exit:
//! each would name a different rank. Every failing rank reports what it saw to rank 0;
//! rank 0 picks one verdict and tells everyone, so every rank names the same failed rank.

/// What one rank saw: the rank it blames and its sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub reporter: usize,
    pub failed: usize,
    pub reason: String,
}

impl Report {
    /// The sentence every rank prints.
    pub fn sentence(&self) -> String {
        format!("{} (seen by rank {})", self.reason, self.reporter)
    }
}

/// The report that names the cause: the first (in arrival order) whose blamed rank did not
/// report a failure itself. A rank that reports is alive, so a report blaming it shows only
/// that it exited because of the real failure.
pub fn verdict(reports: &[Report]) -> Option<&Report> {
    let reported = |rank: usize| reports.iter().any(|r| r.reporter == rank);
    reports
        .iter()
        .find(|r| !reported(r.failed))
        .or_else(|| reports.first())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(reporter: usize, failed: usize) -> Report {
        Report {
            reporter,
            failed,
            reason: format!("rank {failed} closed its connection"),
        }
    }

    #[test]
    fn a_rank_blamed_by_a_neighbour_that_exited_because_of_it_is_not_the_cause() {
        // Rank 2 died; rank 3 saw it; rank 0 then saw rank 3 exit and reported first.
        let reports = [report(0, 3), report(3, 2)];
        assert_eq!(verdict(&reports), Some(&reports[1]));
        assert_eq!(
            reports[1].sentence(),
            "rank 2 closed its connection (seen by rank 3)"
        );
    }

    #[test]
    fn the_first_report_wins_among_those_that_name_a_silent_rank() {
        let reports = [report(1, 2), report(3, 2), report(0, 1)];
        assert_eq!(verdict(&reports), Some(&reports[0]));
    }

    #[test]
    fn when_every_blamed_rank_reported_the_first_report_stands() {
        // Two ranks blaming each other (both timed out on the other): no better evidence.
        let reports = [report(0, 1), report(1, 0)];
        assert_eq!(verdict(&reports), Some(&reports[0]));
        assert_eq!(verdict(&[]), None);
    }
}
