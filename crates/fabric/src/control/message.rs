//! The session messages every protocol on the frame opens with (Hello, Auth) or ends
//! with (Error), and the payload helpers every message set shares: JSON inside a frame,
//! readable in a packet capture and small next to the data it negotiates. Each tool's own
//! message set lives next to its code (linkbench's in `perf::wire`).

use super::frame::Wire;
use crate::error::ProtocolError;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Decodes a JSON payload; shared by every [`Wire`] message set.
pub fn parse_payload<T: DeserializeOwned>(
    name: &'static str,
    payload: &[u8],
) -> Result<T, ProtocolError> {
    serde_json::from_slice(payload).map_err(|e| ProtocolError::BadPayload {
        kind: name,
        reason: e.to_string(),
    })
}

/// Accepts `message` only if its frame carried no payload.
pub fn empty_payload<M>(
    name: &'static str,
    payload: &[u8],
    message: M,
) -> Result<M, ProtocolError> {
    if payload.is_empty() {
        Ok(message)
    } else {
        Err(ProtocolError::BadPayload {
            kind: name,
            reason: format!("expected no payload, got {} bytes", payload.len()),
        })
    }
}

/// First message each way: who is talking, and whether it wants authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u16,
    pub tool: String,
    /// Software version, for error messages when the two nodes differ.
    pub software: String,
    /// 16 random bytes, hex: the challenge the other side signs.
    pub nonce: String,
    /// True when `NODELINK_TOKEN` is set on the sender.
    pub auth: bool,
}

/// HMAC-SHA256 proof of the shared token over both nonces, hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthMsg {
    pub mac: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMsg {
    pub message: String,
}

/// The session layer's own messages. Every message set that opens with the shared Hello
/// keeps these kinds for them, so a first frame reads the same whatever follows.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Hello(Hello),
    Auth(AuthMsg),
    Error(ErrorMsg),
}

pub const HELLO: u8 = 1;
pub const AUTH: u8 = 2;
pub const ERROR: u8 = 9;

impl Wire for Message {
    fn kind(&self) -> u8 {
        match self {
            Message::Hello(_) => HELLO,
            Message::Auth(_) => AUTH,
            Message::Error(_) => ERROR,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::Auth(_) => "Auth",
            Message::Error(_) => "Error",
        }
    }

    fn write_payload(&self, out: &mut Vec<u8>) {
        // Serialising these plain structs into a Vec cannot fail.
        let _ = match self {
            Message::Hello(m) => serde_json::to_writer(&mut *out, m),
            Message::Auth(m) => serde_json::to_writer(&mut *out, m),
            Message::Error(m) => serde_json::to_writer(&mut *out, m),
        };
    }

    fn from_payload(kind: u8, payload: &[u8]) -> Result<Message, ProtocolError> {
        Ok(match kind {
            HELLO => Message::Hello(parse_payload("Hello", payload)?),
            AUTH => Message::Auth(parse_payload("Auth", payload)?),
            ERROR => Message::Error(parse_payload("Error", payload)?),
            other => return Err(ProtocolError::UnknownKind(other)),
        })
    }

    fn refusal(&self) -> Option<&str> {
        match self {
            Message::Error(e) => Some(&e.message),
            _ => None,
        }
    }
}
