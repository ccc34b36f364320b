//! The opening of every control session, whatever protocol follows: Hello both ways (tool,
//! version, nonce), then the NODELINK_TOKEN proofs when both sides have a token. A tool
//! that finds another tool on the port is told so in one sentence.

use crate::channel::Channel;
use crate::control::{
    nonce, proof, verify_proof, AuthMsg, AuthPlan, Hello, Message, Role, VERSION,
};
use crate::error::{FabricError, Result};
use std::time::Duration;

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
pub fn open_client(channel: &mut Channel, tool: &str, token: Option<&[u8]>) -> Result<Hello> {
    let client_nonce = nonce()?;
    channel.send(&hello(tool, &client_nonce, token), HANDSHAKE_TIMEOUT)?;
    let hello = match channel.recv_ok(HANDSHAKE_TIMEOUT, "waiting for the greeting from")? {
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
            HANDSHAKE_TIMEOUT,
        )?;
        let mac = match channel.recv_ok(HANDSHAKE_TIMEOUT, "waiting for authentication from")? {
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
/// `tool`, verifies its proof and proves itself.
pub fn open_server(
    channel: &mut Channel,
    client: &Hello,
    tool: &str,
    token: Option<&[u8]>,
) -> Result<()> {
    let plan = AuthPlan::decide(Role::Server, token.is_some(), client.auth)?;
    let server_nonce = nonce()?;
    channel.send(&hello(tool, &server_nonce, token), HANDSHAKE_TIMEOUT)?;
    check_tool(client, tool, channel)?;
    if let (AuthPlan::Hmac, Some(token)) = (plan, token) {
        let mac = match channel.recv_ok(HANDSHAKE_TIMEOUT, "waiting for authentication from")? {
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
            HANDSHAKE_TIMEOUT,
        )?;
    }
    Ok(())
}
