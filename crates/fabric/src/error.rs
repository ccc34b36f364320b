//! The one error type of the fabric crate: each variant names the cause, and its message
//! says what to do about it, so binaries can print it as-is.

use std::time::Duration;

/// What went wrong while decoding control frames (pure, no I/O involved).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    #[error("peer is not speaking the nodelink protocol (first bytes {0:02x?}): check the port, another service may be listening there")]
    BadMagic([u8; 4]),
    #[error("peer speaks nodelink protocol v{peer}, this is v{ours}: run the same nodelink version on both nodes")]
    VersionMismatch { peer: u16, ours: u16 },
    #[error("peer sent an unknown message kind {0}: run the same nodelink version on both nodes")]
    UnknownKind(u8),
    #[error("peer announced a {len}-byte control message, more than the {max}-byte limit")]
    Oversize { len: u32, max: u32 },
    #[error("peer sent a malformed {kind} message: {reason}")]
    BadPayload { kind: &'static str, reason: String },
    #[error("peer sent {got} where {expected} was expected")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FabricError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: no answer within {after:?}; is the peer alive and reachable?")]
    Timeout { what: String, after: Duration },
    #[error("connecting to {addr}: no answer within {after:?}; check the address, the port and that the server runs there")]
    ConnectTimeout { addr: String, after: Duration },
    #[error("{what}: the peer closed the connection{detail}")]
    PeerClosed { what: String, detail: String },
    /// The peer sent an Error message (refusal, or its side of the test failed).
    #[error("the peer says: {0}")]
    Remote(String),
    #[error("authentication: {0}")]
    Auth(String),
    #[error("{0}")]
    Config(String),
    /// A verbs call or completion failed; the text names the call or the status.
    #[error("{0}")]
    Rdma(String),
    #[error(transparent)]
    RdmaUnavailable(#[from] crate::rdma::Unavailable),
}

impl FabricError {
    /// "peer sent X where Y was expected", for any message set.
    pub fn unexpected<M: crate::control::Wire>(expected: &'static str, got: &M) -> Self {
        FabricError::Protocol(ProtocolError::Unexpected {
            expected,
            got: got.name(),
        })
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        FabricError::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = FabricError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connect_timeout_names_no_other_tool() {
        // It used to ask kvxfer users whether `linkbench serve` was running.
        let text = FabricError::ConnectTimeout {
            addr: "10.0.0.2:18600".into(),
            after: Duration::from_secs(5),
        }
        .to_string();
        assert!(!text.contains("linkbench"), "{text}");
        assert!(text.contains("that the server runs there"), "{text}");
    }
}
