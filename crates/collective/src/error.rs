//! Errors of the collective layer, each a sentence with the cause and what to do.

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollError {
    #[error("{0}")]
    Bootstrap(String),
    #[error("{0}")]
    Protocol(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("{0}")]
    PeerGone(String),
    /// A peer rank failed mid-collective (closed its connection or stopped sending);
    /// `rank` is the one blamed.
    #[error("{reason}")]
    RankFailed { rank: usize, reason: String },
    /// The job's verdict on a failure, the same on every rank (see `Communicator::settle`).
    #[error("{reason}")]
    JobFailed { rank: usize, reason: String },
    #[error("rank 0 aborted the run: {0}")]
    Aborted(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl CollError {
    pub(crate) fn io(context: &'static str) -> impl Fn(std::io::Error) -> CollError {
        move |source| CollError::Io {
            context: context.to_string(),
            source,
        }
    }
}

impl From<fabric::bootstrap::BootstrapError> for CollError {
    fn from(e: fabric::bootstrap::BootstrapError) -> Self {
        CollError::Bootstrap(e.0)
    }
}
