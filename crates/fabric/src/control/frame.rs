//! Frame encoding and decoding: the only place that touches the wire layout.

use crate::error::ProtocolError;

/// A message set that travels in these frames. Each protocol on top of the control
/// channel (linkbench's [`super::Message`], kvxfer's) is one enum implementing this; a
/// session tells which set applies from the tool named in its Hello.
pub trait Wire: Sized {
    /// Largest payload this message set accepts; checked before anything is allocated.
    /// Control messages are small; a set that carries tables (the collective
    /// rendezvous's rank table) raises it for itself.
    const MAX_PAYLOAD: u32 = MAX_PAYLOAD;
    /// The frame's kind byte.
    fn kind(&self) -> u8;
    /// The variant's name, for "expected X, got Y" errors.
    fn name(&self) -> &'static str;
    fn write_payload(&self, out: &mut Vec<u8>);
    fn from_payload(kind: u8, payload: &[u8]) -> Result<Self, ProtocolError>;
    /// The text of the session's Error message, when this is one: a peer's refusal.
    fn refusal(&self) -> Option<&str> {
        None
    }
}

pub const MAGIC: [u8; 4] = *b"NLNK";
/// Bumped on any incompatible change; peers must match exactly.
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 11;
/// The default payload bound: control messages are small; anything larger is a bug or an
/// attack.
pub const MAX_PAYLOAD: u32 = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u16,
    pub kind: u8,
    pub len: u32,
}

/// Validates a header of message set `M`: magic, then version, then `M`'s length bound.
/// The kind is checked when the payload is decoded, so a newer peer's message is reported
/// by version first.
pub fn parse_header<M: Wire>(bytes: &[u8; HEADER_LEN]) -> Result<Header, ProtocolError> {
    let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if magic != MAGIC {
        return Err(ProtocolError::BadMagic(magic));
    }
    let version = u16::from_be_bytes([bytes[4], bytes[5]]);
    if version != VERSION {
        return Err(ProtocolError::VersionMismatch {
            peer: version,
            ours: VERSION,
        });
    }
    let kind = bytes[6];
    let len = u32::from_be_bytes([bytes[7], bytes[8], bytes[9], bytes[10]]);
    if len > M::MAX_PAYLOAD {
        return Err(ProtocolError::Oversize {
            len,
            max: M::MAX_PAYLOAD,
        });
    }
    Ok(Header { version, kind, len })
}

/// How many more bytes the first frame in `bytes` needs (0 when it is whole): the rest of
/// the header first, then the payload the header announces. A reader asks for exactly
/// this, so bytes after a frame (a data stream) stay unread. Bad headers are errors.
pub fn missing<M: Wire>(bytes: &[u8]) -> Result<usize, ProtocolError> {
    if bytes.len() < HEADER_LEN {
        // Fails early on a bad magic or version.
        decode::<M>(bytes)?;
        return Ok(HEADER_LEN - bytes.len());
    }
    let header: &[u8; HEADER_LEN] = bytes[..HEADER_LEN].try_into().expect("length checked");
    let header = parse_header::<M>(header)?;
    Ok((HEADER_LEN + header.len as usize).saturating_sub(bytes.len()))
}

/// Appends one frame holding `message` to `out`.
pub fn encode<M: Wire>(message: &M, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.push(message.kind());
    out.extend_from_slice(&[0; 4]);
    message.write_payload(out);
    let len = (out.len() - start - HEADER_LEN) as u32;
    out[start + 7..start + HEADER_LEN].copy_from_slice(&len.to_be_bytes());
}

/// Decodes the first frame in `bytes`: `Ok(None)` when more bytes are needed, otherwise
/// the message and how many bytes it used. Checks fail as early as the bytes allow: a
/// bad magic or version is reported from the first 6 bytes.
pub fn decode<M: Wire>(bytes: &[u8]) -> Result<Option<(M, usize)>, ProtocolError> {
    let prefix = bytes.len().min(HEADER_LEN);
    let mut header = [0u8; HEADER_LEN];
    header[..prefix].copy_from_slice(&bytes[..prefix]);
    if prefix >= 4 && header[..4] != MAGIC {
        return Err(ProtocolError::BadMagic([
            header[0], header[1], header[2], header[3],
        ]));
    }
    if prefix >= 6 {
        let version = u16::from_be_bytes([header[4], header[5]]);
        if version != VERSION {
            return Err(ProtocolError::VersionMismatch {
                peer: version,
                ours: VERSION,
            });
        }
    }
    if prefix < HEADER_LEN {
        return Ok(None);
    }
    let header = parse_header::<M>(&header)?;
    let end = HEADER_LEN + header.len as usize;
    if bytes.len() < end {
        return Ok(None);
    }
    let message = M::from_payload(header.kind, &bytes[HEADER_LEN..end])?;
    Ok(Some((message, end)))
}

#[cfg(test)]
mod tests {
    use super::*;
    // The richest message set on the frame: linkbench's (test-only use of `perf`).
    use crate::perf::wire::{PerfMessage as Message, *};

    fn frame(message: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        encode(message, &mut out);
        out
    }

    fn samples() -> Vec<Message> {
        vec![
            Message::Hello(Hello {
                version: VERSION,
                tool: "linkbench".into(),
                software: "0.1.0".into(),
                nonce: "00ff".into(),
                auth: true,
            }),
            Message::Auth(AuthMsg {
                mac: "ab".repeat(32),
            }),
            Message::Request(TestRequest {
                kind: TestKind::Bw,
                size: 131072,
                streams: 4,
                duration_ms: 3000,
                omit_ms: 0,
                iterations: 0,
                reverse: true,
                bidir: false,
                window: Some(1 << 20),
                congestion: Some("cubic".into()),
                zerocopy: false,
                busy_poll: true,
                no_delay: true,
                working_set: Some(256 << 20),
            }),
            Message::Accept(Accept {
                cookie: "c0ffee".into(),
            }),
            Message::Join(Join {
                cookie: "c0ffee".into(),
                index: 3,
            }),
            Message::Start,
            Message::Done(Done { iterations: 7 }),
            Message::Results(Results {
                streams: vec![StreamStats {
                    index: 0,
                    direction: Direction::ClientToServer,
                    bytes: 123,
                    first_ns: 1,
                    last_ns: 2,
                    retransmits: Some(0),
                    rtt_us: Some(40),
                }],
                cpu: CpuUsage {
                    user_pct: 1.0,
                    system_pct: 2.0,
                    total_pct: 3.0,
                },
            }),
            Message::Error(ErrorMsg {
                message: "nope".into(),
            }),
            Message::Bye,
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for message in samples() {
            let bytes = frame(&message);
            let (decoded, used) = decode::<Message>(&bytes).unwrap().unwrap();
            assert_eq!(decoded, message);
            assert_eq!(used, bytes.len());
        }
    }

    #[test]
    fn frames_decode_back_to_back() {
        let mut bytes = Vec::new();
        for message in samples() {
            encode(&message, &mut bytes);
        }
        let mut offset = 0;
        let mut count = 0;
        while offset < bytes.len() {
            let (_, used) = decode::<Message>(&bytes[offset..]).unwrap().unwrap();
            offset += used;
            count += 1;
        }
        assert_eq!(count, samples().len());
    }

    #[test]
    fn bad_magic_is_named() {
        let error = decode::<Message>(b"GET / HTTP/1.1\r\n").unwrap_err();
        assert_eq!(error, ProtocolError::BadMagic(*b"GET "));
        assert!(error
            .to_string()
            .contains("not speaking the nodelink protocol"));
    }

    #[test]
    fn other_version_says_what_to_do() {
        let mut bytes = frame(&Message::Start);
        bytes[4..6].copy_from_slice(&2u16.to_be_bytes());
        let error = decode::<Message>(&bytes).unwrap_err();
        assert_eq!(error, ProtocolError::VersionMismatch { peer: 2, ours: 1 });
        assert_eq!(
            error.to_string(),
            "peer speaks nodelink protocol v2, this is v1: run the same nodelink version on both nodes"
        );
        // Known from the first six bytes already.
        assert!(decode::<Message>(&bytes[..6]).is_err());
    }

    #[test]
    fn oversize_length_is_rejected_before_the_payload_arrives() {
        let mut bytes = frame(&Message::Start);
        bytes[7..11].copy_from_slice(&(MAX_PAYLOAD + 1).to_be_bytes());
        bytes.truncate(HEADER_LEN);
        assert!(matches!(
            decode::<Message>(&bytes),
            Err(ProtocolError::Oversize { .. })
        ));
        bytes[7..11].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decode::<Message>(&bytes),
            Err(ProtocolError::Oversize { .. })
        ));
    }

    #[test]
    fn truncated_frames_ask_for_more() {
        for message in samples() {
            let bytes = frame(&message);
            for cut in 0..bytes.len() {
                assert_eq!(
                    decode::<Message>(&bytes[..cut]),
                    Ok(None),
                    "{message:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn missing_asks_for_the_rest_of_one_frame_only() {
        for message in samples() {
            let mut bytes = frame(&message);
            for cut in 0..=bytes.len() {
                // The header first: the payload's length is unknown until it is in.
                let end = if cut < HEADER_LEN {
                    HEADER_LEN
                } else {
                    bytes.len()
                };
                assert_eq!(missing::<Message>(&bytes[..cut]), Ok(end - cut));
            }
            // Data after the frame is not this frame's business.
            bytes.extend_from_slice(b"DATA");
            assert_eq!(missing::<Message>(&bytes), Ok(0));
        }
        assert!(missing::<Message>(b"GET ").is_err());
        let mut huge = frame(&Message::Start);
        huge[7..11].copy_from_slice(&(MAX_PAYLOAD + 1).to_be_bytes());
        assert!(matches!(
            missing::<Message>(&huge),
            Err(ProtocolError::Oversize { .. })
        ));
    }

    #[test]
    fn unknown_kind_and_bad_payload_are_errors() {
        let mut bytes = frame(&Message::Start);
        bytes[6] = 200;
        assert_eq!(
            decode::<Message>(&bytes),
            Err(ProtocolError::UnknownKind(200))
        );
        let mut bytes = frame(&Message::Accept(Accept { cookie: "x".into() }));
        let last = bytes.len() - 1;
        bytes[last] = b'#';
        assert!(matches!(
            decode::<Message>(&bytes),
            Err(ProtocolError::BadPayload { kind: "Accept", .. })
        ));
    }

    /// A small xorshift generator: deterministic, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let valid: Vec<Vec<u8>> = samples().iter().map(frame).collect();
        for round in 0..20_000 {
            let len = (rng.next() % 96) as usize;
            let mut bytes: Vec<u8> = if round % 2 == 0 {
                // Pure noise.
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                // A valid frame with a few bytes flipped: reaches the payload parser.
                let mut bytes = valid[round % valid.len()].clone();
                for _ in 0..=(rng.next() % 4) {
                    let at = (rng.next() as usize) % bytes.len();
                    bytes[at] = rng.next() as u8;
                }
                bytes
            };
            if round % 3 == 0 {
                bytes.truncate((rng.next() as usize) % (bytes.len() + 1));
            }
            if let Ok(Some((_, used))) = decode::<Message>(&bytes) {
                assert!(used <= bytes.len());
            }
        }
    }
}
