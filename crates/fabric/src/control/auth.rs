//! `NODELINK_TOKEN` authentication: an HMAC-SHA256 challenge over both sides' nonces, so
//! the token never crosses the wire and a recorded exchange cannot be replayed.

use crate::error::FabricError;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Which side computes a proof; each side signs a different label so one proof cannot be
/// reflected back as the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Client => b"nodelink-v1 client",
            Role::Server => b"nodelink-v1 server",
        }
    }
}

/// 16 random bytes, hex.
pub fn nonce() -> Result<String, FabricError> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| FabricError::Config(format!("no randomness for the auth nonce: {e}")))?;
    Ok(hex(&bytes))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() & 1 == 1 || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn mac(token: &[u8], role: Role, client_nonce: &str, server_nonce: &str) -> HmacSha256 {
    // HMAC accepts keys of any length.
    let mut mac = HmacSha256::new_from_slice(token).expect("HMAC takes any key length");
    mac.update(role.label());
    mac.update(&[0]);
    mac.update(client_nonce.as_bytes());
    mac.update(&[0]);
    mac.update(server_nonce.as_bytes());
    mac
}

/// The proof `role` sends: hex HMAC-SHA256(token, label | client nonce | server nonce).
pub fn proof(token: &[u8], role: Role, client_nonce: &str, server_nonce: &str) -> String {
    hex(&mac(token, role, client_nonce, server_nonce)
        .finalize()
        .into_bytes())
}

/// Checks the other side's proof in constant time.
pub fn verify_proof(
    token: &[u8],
    role: Role,
    client_nonce: &str,
    server_nonce: &str,
    proof: &str,
) -> bool {
    match unhex(proof) {
        Some(bytes) => mac(token, role, client_nonce, server_nonce)
            .verify_slice(&bytes)
            .is_ok(),
        None => false,
    }
}

fn labelled(key: &[u8], label: &str, parts: &[&[u8]]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(label.as_bytes());
    for part in parts {
        // Length-prefixed, so no two different part lists sign the same bytes.
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac
}

/// Hex HMAC-SHA256(key, label | each part length-prefixed): a proof for message sets
/// other than the Hello exchange (the collective rendezvous), each with its own label so
/// no proof can be replayed as another.
pub fn sign(key: &[u8], label: &str, parts: &[&[u8]]) -> String {
    hex(&labelled(key, label, parts).finalize().into_bytes())
}

/// Checks a [`sign`] proof in constant time.
pub fn verify(key: &[u8], label: &str, parts: &[&[u8]], proof: &str) -> bool {
    match unhex(proof) {
        Some(bytes) => labelled(key, label, parts).verify_slice(&bytes).is_ok(),
        None => false,
    }
}

/// Whether a session authenticates, decided from the two Hello messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthPlan {
    None,
    Hmac,
}

impl AuthPlan {
    /// Both sides must agree: a token on only one side is refused with the fix spelled out.
    pub fn decide(we: Role, local_token: bool, peer_auth: bool) -> Result<AuthPlan, FabricError> {
        match (we, local_token, peer_auth) {
            (_, true, true) => Ok(AuthPlan::Hmac),
            (_, false, false) => Ok(AuthPlan::None),
            (Role::Client, false, true) => Err(FabricError::Auth(
                "the server requires NODELINK_TOKEN: set the server's token on this node".into(),
            )),
            (Role::Client, true, false) => Err(FabricError::Auth(
                "NODELINK_TOKEN is set here but the server does not authenticate: set the same token on the server, or unset it here".into(),
            )),
            (Role::Server, true, false) => Err(FabricError::Auth(
                "this server requires NODELINK_TOKEN: set the same token on the client".into(),
            )),
            (Role::Server, false, true) => Err(FabricError::Auth(
                "the client sent NODELINK_TOKEN but this server has none: set the same token on the server".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_verify_only_with_the_same_token_role_and_nonces() {
        let (cn, sn) = (nonce().unwrap(), nonce().unwrap());
        assert_ne!(cn, sn);
        let p = proof(b"secret", Role::Client, &cn, &sn);
        assert!(verify_proof(b"secret", Role::Client, &cn, &sn, &p));
        assert!(!verify_proof(b"Secret", Role::Client, &cn, &sn, &p));
        assert!(!verify_proof(b"secret", Role::Server, &cn, &sn, &p));
        assert!(!verify_proof(b"secret", Role::Client, &sn, &cn, &p));
        assert!(!verify_proof(b"secret", Role::Client, &cn, &sn, "zz"));
        assert!(!verify_proof(b"secret", Role::Client, &cn, &sn, ""));
    }

    #[test]
    fn labelled_proofs_bind_key_label_and_every_part() {
        let p = sign(b"k", "rv-hello", &[b"ab", b"c"]);
        assert!(verify(b"k", "rv-hello", &[b"ab", b"c"], &p));
        assert!(!verify(b"k", "rv-hello", &[b"a", b"bc"], &p));
        assert!(!verify(b"k", "rv-peer", &[b"ab", b"c"], &p));
        assert!(!verify(b"K", "rv-hello", &[b"ab", b"c"], &p));
        assert!(!verify(b"k", "rv-hello", &[b"ab", b"c"], ""));
    }

    #[test]
    fn token_on_one_side_only_is_refused_with_the_fix() {
        assert_eq!(
            AuthPlan::decide(Role::Client, true, true).unwrap(),
            AuthPlan::Hmac
        );
        assert_eq!(
            AuthPlan::decide(Role::Server, false, false).unwrap(),
            AuthPlan::None
        );
        let e = AuthPlan::decide(Role::Client, false, true).unwrap_err();
        assert!(e.to_string().contains("requires NODELINK_TOKEN"), "{e}");
        let e = AuthPlan::decide(Role::Server, true, false).unwrap_err();
        assert!(e.to_string().contains("same token on the client"), "{e}");
    }
}
