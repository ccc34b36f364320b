//! What a linkbench test measures; shared by the TCP and RDMA test handshakes, so that
//! neither protocol module depends on the other.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestKind {
    Bw,
    Lat,
}
