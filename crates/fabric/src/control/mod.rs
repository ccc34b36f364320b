//! The versioned control protocol, sans-IO: frames and messages are plain functions over
//! byte buffers, so every rule (magic, version, size bounds) is testable without sockets.
//!
//! Frame: `"NLNK"` | u16 version (BE) | u8 kind | u32 payload length (BE) | JSON payload.
//! The length is checked against the message set's [`Wire::MAX_PAYLOAD`] before anything is
//! allocated.

mod auth;
mod frame;
mod message;

pub use auth::{nonce, proof, sign, verify, verify_proof, AuthPlan, Role};
pub use frame::{
    decode, encode, missing, parse_header, Header, Wire, HEADER_LEN, MAGIC, MAX_PAYLOAD, VERSION,
};
pub use message::{
    empty_payload, parse_payload, AuthMsg, ErrorMsg, Hello, Message, AUTH, ERROR, HELLO,
};
