//! The opening of every control session, whatever protocol follows: Hello both ways (tool,
//! version, nonce), then the NODELINK_TOKEN proofs when both sides have a token. A tool
//! that finds another tool on the port is told so in one sentence.

use crate::channel::Channel;
use crate::control::{
    nonce, proof, verify_proof, AuthMsg, AuthPlan, Hello, Message, Role, VERSION,
};
use crate::error::{FabricError, Result};
use std::time::{Duration, Instant};

/// The variable every tool reads its shared secret from.
pub const TOKEN_VAR: &str = "NODELINK_TOKEN";

/// Why `NODELINK_TOKEN` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("NODELINK_TOKEN is set but empty: give it the shared secret, or unset it to run without authentication")]
    Empty,
}

/// The token, read one way by every tool, failing closed: unset means no authentication;
/// any non-empty value (text or not) is the key; set-but-empty is an error, never a
/// usable empty key nor a silent "unset".
pub fn token_from(
    value: Option<std::ffi::OsString>,
) -> std::result::Result<Option<Vec<u8>>, TokenError> {
    match value {
        None => Ok(None),
        Some(v) if v.is_empty() => Err(TokenError::Empty),
        Some(v) => Ok(Some(v.into_encoded_bytes())),
    }
}

/// [`token_from`] over the process environment.
pub fn token_from_env() -> std::result::Result<Option<Vec<u8>>, TokenError> {
    token_from(std::env::var_os(TOKEN_VAR))
}

/// How long each step of the opening may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn hello(tool: &str, nonce: &str, token: Option<&[u8]>) -> Message {
    Message::Hello(Hello {
        version: VERSION,
        tool: tool.into(),
        software: env!("CARGO_PKG_VERSION").into(),
        nonce: nonce.into(),
        auth: token.is_some(),
    })
}

fn check_tool(peer: &Hello, tool: &str, channel: &Channel) -> Result<()> {
    if peer.tool == tool {
        return Ok(());
    }
    Err(FabricError::Config(format!(
        "{} is a {} endpoint, not {tool}: check the port",
        channel.peer(),
        peer.tool
    )))
}

/// Client side: greets, checks the server runs `tool`, authenticates; returns its Hello.
/// Each step may take [`HANDSHAKE_TIMEOUT`]; [`open_client_within`] bounds the whole.
pub fn open_client(channel: &mut Channel, tool: &str, token: Option<&[u8]>) -> Result<Hello> {
    open_client_within(channel, tool, token, HANDSHAKE_TIMEOUT)
}

/// What is left of `timeout` since `started`: a deadline on a whole opening, so a peer
/// that answers each step just in time cannot stretch it.
fn left(started: Instant, timeout: Duration) -> Duration {
    timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(1))
}

/// [`open_client`] with one deadline, `timeout`, for the whole opening (a tool's
/// `--timeout`).
pub fn open_client_within(
    channel: &mut Channel,
    tool: &str,
    token: Option<&[u8]>,
    timeout: Duration,
) -> Result<Hello> {
    let started = Instant::now();
    let client_nonce = nonce()?;
    channel.send(&hello(tool, &client_nonce, token), left(started, timeout))?;
    let hello = match channel.recv_ok(left(started, timeout), "waiting for the greeting from")? {
        Message::Hello(hello) => hello,
        other => return Err(FabricError::unexpected("Hello", &other)),
    };
    check_tool(&hello, tool, channel)?;
    let plan = AuthPlan::decide(Role::Client, token.is_some(), hello.auth)?;
    if let (AuthPlan::Hmac, Some(token)) = (plan, token) {
        channel.send(
            &Message::Auth(AuthMsg {
                mac: proof(token, Role::Client, &client_nonce, &hello.nonce),
            }),
            left(started, timeout),
        )?;
        let mac =
            match channel.recv_ok(left(started, timeout), "waiting for authentication from")? {
                Message::Auth(AuthMsg { mac }) => mac,
                other => return Err(FabricError::unexpected("Auth", &other)),
            };
        if !verify_proof(token, Role::Server, &client_nonce, &hello.nonce, &mac) {
            return Err(FabricError::Auth(
                "the server's proof does not match NODELINK_TOKEN: set the same token on both nodes".into(),
            ));
        }
    }
    Ok(hello)
}

/// Server side, after the client's Hello arrived: answers, checks the client wants
/// `tool`, verifies its proof and proves itself. Returns the nonce this side sent (a
/// protocol on top may have the client sign more with it).
pub fn open_server(
    channel: &mut Channel,
    client: &Hello,
    tool: &str,
    token: Option<&[u8]>,
) -> Result<String> {
    open_server_within(channel, client, tool, token, HANDSHAKE_TIMEOUT)
}

/// [`open_server`] with one deadline, `timeout`, for the rest of the opening.
pub fn open_server_within(
    channel: &mut Channel,
    client: &Hello,
    tool: &str,
    token: Option<&[u8]>,
    timeout: Duration,
) -> Result<String> {
    let started = Instant::now();
    let plan = AuthPlan::decide(Role::Server, token.is_some(), client.auth)?;
    let server_nonce = nonce()?;
    channel.send(&hello(tool, &server_nonce, token), left(started, timeout))?;
    check_tool(client, tool, channel)?;
    if let (AuthPlan::Hmac, Some(token)) = (plan, token) {
        let mac =
            match channel.recv_ok(left(started, timeout), "waiting for authentication from")? {
                Message::Auth(AuthMsg { mac }) => mac,
                other => return Err(FabricError::unexpected("Auth", &other)),
            };
        if !verify_proof(token, Role::Client, &client.nonce, &server_nonce, &mac) {
            return Err(FabricError::Auth(
                "refused: NODELINK_TOKEN differs between the two nodes; set the same token on both"
                    .into(),
            ));
        }
        channel.send(
            &Message::Auth(AuthMsg {
                mac: proof(token, Role::Server, &client.nonce, &server_nonce),
            }),
            left(started, timeout),
        )?;
    }
    Ok(server_nonce)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    #[test]
    fn a_silent_server_costs_the_callers_timeout_not_ten_seconds() {
        // The server accepts and says nothing (stopped, or a stranger's port). The opening
        // gives up at the caller's deadline; it used to wait 10 s per step.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let held = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
        let stream = std::net::TcpStream::connect(addr).unwrap();
        let mut channel = Channel::new(stream, addr.to_string());
        let started = Instant::now();
        let error = open_client_within(&mut channel, "kvxfer", None, Duration::from_millis(300))
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(error.to_string().contains("greeting"), "{error}");
        drop(held.join());
    }

    #[test]
    fn the_token_fails_closed() {
        assert_eq!(token_from(None), Ok(None));
        assert_eq!(token_from(Some(OsString::new())), Err(TokenError::Empty));
        assert_eq!(
            token_from(Some("s3cret".into())),
            Ok(Some(b"s3cret".to_vec()))
        );
        // Not UTF-8: still the key, never "unset".
        let raw = vec![0xff, 0xfe, b'x'];
        assert_eq!(
            token_from(Some(OsString::from_vec(raw.clone()))),
            Ok(Some(raw))
        );
    }
}
