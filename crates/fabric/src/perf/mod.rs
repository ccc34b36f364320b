//! The linkbench engine: a server that runs any number of tests at once, and a client
//! that negotiates a test over the control channel, moves the bytes, and merges both
//! sides' measurements into one report.
//!
//! Bandwidth is measured on the receiving side, from the first to the last byte each
//! receiver saw (connection setup excluded, no warm-up omitted); every direction's figure
//! comes from its receiver, whichever node that is.

mod client;
mod rdma;
mod report;
mod server;
mod stream;
pub mod wire;

pub use client::{BwSpec, Client, ClientConfig, LatSpec, Mode};
pub use rdma::{RdmaBwReport, RdmaLatReport, RdmaOptions, RDMA_STALL};
pub use report::{BwReport, CpuReport, DirectionReport, LatReport, StreamReport};
pub use server::{Server, ServerConfig};
pub use stream::{Until, STALL_TIMEOUT};

use std::time::Duration;
use wire::{TestKind, TestRequest};

/// perftest's port, for familiarity.
pub const DEFAULT_PORT: u16 = 18515;
pub const MAX_STREAMS: u32 = 128;
/// Largest message; the receiving side allocates buffers of this size.
pub const MAX_MESSAGE: u64 = 64 << 20;
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
pub const MAX_WINDOW: u64 = 1 << 30;
/// Hello, auth, accept, joins: each step must answer within this.
pub use crate::handshake::HANDSHAKE_TIMEOUT;
/// The tool name both ends put in their Hello.
pub const TOOL: &str = "linkbench";
/// After the test time, how long draining and the result exchange may take.
pub const FINISH_GRACE: Duration = Duration::from_secs(15);

/// Send buffers one test may make the server commit (streams x message size).
pub const MAX_TEST_BUFFERS: u64 = 256 << 20;
/// Send buffers all running tests together may commit on one server.
pub const MAX_SERVER_BUFFERS: u64 = 1 << 30;

/// Bytes of stream buffers a test commits on each side: each sending stream holds one
/// message, or the working set when that is larger; with a working set, so does each
/// receiving stream.
pub fn test_buffers(request: &TestRequest) -> u64 {
    let sending = if request.bidir {
        request.streams * 2
    } else {
        request.streams
    };
    let per_stream = request.size.max(request.working_set.unwrap_or(0));
    sending as u64 * per_stream
}

/// A request's working set as a stream buffer size (0: none). `validate` bounds it.
pub(crate) fn working_set_bytes(working_set: Option<u64>) -> usize {
    working_set.map_or(0, |set| usize::try_from(set).unwrap_or(usize::MAX))
}

/// Checks a request's bounds; both sides use it (the server never trusts the client).
pub fn validate(request: &TestRequest) -> Result<(), String> {
    if request.size == 0 || request.size > MAX_MESSAGE {
        return Err(format!(
            "message size {} is out of range (1 byte .. {} MiB)",
            request.size,
            MAX_MESSAGE >> 20
        ));
    }
    if request.streams == 0 || request.streams > MAX_STREAMS {
        return Err(format!(
            "{} streams is out of range (1 .. {MAX_STREAMS})",
            request.streams
        ));
    }
    if Duration::from_millis(request.duration_ms) > MAX_DURATION {
        return Err(format!("duration {} ms exceeds 24 h", request.duration_ms));
    }
    if Duration::from_millis(request.omit_ms) > MAX_DURATION {
        return Err(format!("warm-up {} ms exceeds 24 h", request.omit_ms));
    }
    if request.kind == TestKind::Lat && request.omit_ms > 0 {
        return Err("a latency test has no warm-up to omit".into());
    }
    if request.kind == TestKind::Bw && request.duration_ms == 0 {
        return Err("a bandwidth test needs a duration".into());
    }
    if request.kind == TestKind::Lat && (request.streams != 1 || request.reverse || request.bidir) {
        return Err(
            "a latency test uses one stream in one direction (not reverse or bidirectional)".into(),
        );
    }
    if request.kind == TestKind::Lat && request.duration_ms == 0 && request.iterations == 0 {
        return Err("a latency test needs iterations or a duration".into());
    }
    if request.reverse && request.bidir {
        return Err("reverse and bidirectional cannot be combined".into());
    }
    if request.kind == TestKind::Lat && request.working_set.is_some() {
        return Err("a latency test has no working set: it echoes one message".into());
    }
    if request.working_set == Some(0) {
        return Err("a working set of 0 bytes holds no message".into());
    }
    if test_buffers(request) > MAX_TEST_BUFFERS {
        let what = match request.working_set {
            Some(set) if set > request.size => format!("working sets of {} MiB", set >> 20),
            _ => format!("{} MiB messages", request.size >> 20),
        };
        return Err(format!(
            "{} streams of {what} commit {} MiB of buffers; one test may commit at most {} MiB",
            request.streams,
            test_buffers(request) >> 20,
            MAX_TEST_BUFFERS >> 20
        ));
    }
    if let Some(window) = request.window {
        if window == 0 || window > MAX_WINDOW {
            return Err(format!("window {window} is out of range (1 byte .. 1 GiB)"));
        }
    }
    if let Some(name) = &request.congestion {
        if name.is_empty()
            || name.len() > 15
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!("'{name}' is not a congestion control name"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(streams: u32, size: u64, reverse: bool, bidir: bool) -> TestRequest {
        TestRequest {
            kind: TestKind::Bw,
            size,
            streams,
            duration_ms: 1000,
            omit_ms: 0,
            iterations: 0,
            reverse,
            bidir,
            window: None,
            congestion: None,
            zerocopy: false,
            busy_poll: false,
            no_delay: false,
            working_set: None,
        }
    }

    /// Hole: a 164-byte reverse request for 8 streams of 64 MiB made a server commit
    /// 517 MiB; one test may commit 256 MiB, and all tests together 1 GiB.
    #[test]
    fn one_small_request_cannot_commit_a_large_buffer() {
        let e = validate(&request(8, 64 << 20, true, false)).unwrap_err();
        assert!(
            e.contains("commit 512 MiB") && e.contains("at most 256 MiB"),
            "{e}"
        );
        assert!(validate(&request(4, 32 << 20, false, true)).is_ok());
        assert!(validate(&request(3, 64 << 20, false, true)).is_err());
        assert!(validate(&request(1, 1 << 20, false, false)).is_ok());
    }

    /// A working set is committed on both sides for every stream, like a message.
    #[test]
    fn a_working_set_counts_against_the_same_budget() {
        let with = |streams, set, bidir| TestRequest {
            working_set: Some(set),
            ..request(streams, 1 << 20, false, bidir)
        };
        assert_eq!(test_buffers(&with(1, 256 << 20, false)), 256 << 20);
        assert!(validate(&with(1, 256 << 20, false)).is_ok());
        let e = validate(&with(2, 256 << 20, false)).unwrap_err();
        assert!(
            e.contains("2 streams of working sets of 256 MiB commit 512 MiB"),
            "{e}"
        );
        assert!(validate(&with(1, 256 << 20, true)).is_err());
        // Smaller than a message: the message is the buffer.
        assert_eq!(test_buffers(&with(1, 4096, false)), 1 << 20);
        assert!(validate(&with(1, 0, false))
            .unwrap_err()
            .contains("0 bytes"));
        let lat = TestRequest {
            kind: TestKind::Lat,
            ..with(1, 8 << 20, false)
        };
        assert!(validate(&lat).unwrap_err().contains("latency"));
        // A client from before the field sends none: one message, as before.
        let old = r#"{"kind":"bw","size":1,"streams":1,"duration_ms":1,"iterations":0,
            "reverse":false,"bidir":false,"window":null,"congestion":null,"zerocopy":false}"#;
        let old: TestRequest = serde_json::from_str(old).unwrap();
        assert_eq!(old.working_set, None);
    }

    #[test]
    fn tests_together_share_one_server_budget() {
        let held: Vec<_> = (0..4)
            .map(|_| server::Commitment::take(MAX_TEST_BUFFERS).unwrap())
            .collect();
        let e = server::Commitment::take(1)
            .err()
            .expect("over the budget")
            .to_string();
        assert!(e.contains("server busy"), "{e}");
        drop(held);
        assert!(server::Commitment::take(MAX_TEST_BUFFERS).is_ok());
    }
}
