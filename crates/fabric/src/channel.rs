//! The thin I/O shell around [`crate::control`]: reads and writes whole frames on a TCP
//! stream, every wait bounded by a deadline. It reads exactly the bytes of one frame, so
//! a data connection's first frame can be followed directly by data.

use crate::control::{decode, encode, missing, Message, Wire};
use crate::error::{FabricError, Result};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

pub struct Channel {
    stream: TcpStream,
    buf: Vec<u8>,
    out: Vec<u8>,
    /// "10.0.0.2:18515", for error messages.
    peer: String,
}

impl Channel {
    pub fn new(stream: TcpStream, peer: impl Into<String>) -> Self {
        Self {
            stream,
            buf: Vec::with_capacity(256),
            out: Vec::with_capacity(256),
            peer: peer.into(),
        }
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// Writes one frame; fails if the peer does not take it within `timeout`.
    pub fn send<M: Wire>(&mut self, message: &M, timeout: Duration) -> Result<()> {
        self.out.clear();
        encode(message, &mut self.out);
        let context = || format!("sending {} to {}", message.name(), self.peer);
        self.stream
            .set_write_timeout(Some(timeout.max(Duration::from_millis(1))))
            .map_err(|e| FabricError::io(context(), e))?;
        match self.stream.write_all(&self.out) {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(FabricError::Timeout {
                    what: context(),
                    after: timeout,
                })
            }
            Err(e) => Err(FabricError::io(context(), e)),
        }
    }

    /// Whether no frame is half-read: after a timed-out receive, the peer sent nothing
    /// (an idle session), not part of a message (a stuck one).
    pub fn idle(&self) -> bool {
        self.buf.is_empty()
    }

    /// Whether the peer has closed the connection or sent something unasked. On a link
    /// where this side speaks first, either means the peer ended the session (an idle
    /// timeout, a restart): open a new one instead of using this.
    pub fn is_stale(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut fd = libc::pollfd {
            fd: self.stream.as_raw_fd(),
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a zero timeout never blocks.
        let ready = unsafe { libc::poll(&mut fd, 1, 0) };
        ready != 0
    }

    /// Reads one session frame (Hello, Auth, Error) within `timeout`. `what` names the wait in errors
    /// ("waiting for results from 10.0.0.2:18515").
    pub fn recv(&mut self, timeout: Duration, what: &str) -> Result<Message> {
        self.recv_as(timeout, what)
    }

    /// Reads one frame of message set `M` (another protocol on the same framing).
    pub fn recv_as<M: Wire>(&mut self, timeout: Duration, what: &str) -> Result<M> {
        let deadline = Instant::now() + timeout;
        self.buf.clear();
        loop {
            if let Some((message, used)) = decode(&self.buf)? {
                debug_assert_eq!(used, self.buf.len());
                return Ok(message);
            }
            // Read only what this frame still needs (the header first, then its payload).
            let need = missing::<M>(&self.buf)?;
            let now = Instant::now();
            if now >= deadline {
                return Err(FabricError::Timeout {
                    what: format!("{what} {}", self.peer),
                    after: timeout,
                });
            }
            self.stream
                .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
                .map_err(|e| FabricError::io(format!("{what} {}", self.peer), e))?;
            let start = self.buf.len();
            self.buf.resize(start + need, 0);
            match self.stream.read(&mut self.buf[start..]) {
                Ok(0) => {
                    self.buf.truncate(start);
                    let detail = if start == 0 {
                        String::new()
                    } else {
                        format!(" in the middle of a message ({start} bytes read)")
                    };
                    return Err(FabricError::PeerClosed {
                        what: format!("{what} {}", self.peer),
                        detail,
                    });
                }
                Ok(n) => self.buf.truncate(start + n),
                Err(e) => {
                    self.buf.truncate(start);
                    match e.kind() {
                        ErrorKind::Interrupted | ErrorKind::WouldBlock | ErrorKind::TimedOut => {}
                        _ => return Err(FabricError::io(format!("{what} {}", self.peer), e)),
                    }
                }
            }
        }
    }

    /// Like [`recv`](Self::recv), but a peer's Error message becomes [`FabricError::Remote`].
    pub fn recv_ok(&mut self, timeout: Duration, what: &str) -> Result<Message> {
        self.recv_ok_as(timeout, what)
    }

    /// [`recv_as`](Self::recv_as), with a peer's Error message as [`FabricError::Remote`].
    pub fn recv_ok_as<M: Wire>(&mut self, timeout: Duration, what: &str) -> Result<M> {
        let message = self.recv_as::<M>(timeout, what)?;
        match message.refusal() {
            Some(text) => Err(FabricError::Remote(text.to_string())),
            None => Ok(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perf::wire::{Join, PerfMessage};
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    #[test]
    fn frames_cross_a_socket_and_data_after_them_stays_unread() {
        let (client, server) = pair();
        let mut tx = Channel::new(client, "server");
        let mut rx = Channel::new(server, "client");
        let join = PerfMessage::Join(Join {
            cookie: "ab".into(),
            index: 1,
        });
        tx.send(&join, Duration::from_secs(1)).unwrap();
        tx.stream.write_all(b"DATA").unwrap();
        assert_eq!(
            rx.recv_as::<PerfMessage>(Duration::from_secs(1), "test")
                .unwrap(),
            join
        );
        let mut rest = [0u8; 4];
        rx.stream.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"DATA");
    }

    #[test]
    fn silence_times_out_and_garbage_fails_fast() {
        let (mut client, server) = pair();
        let mut rx = Channel::new(server, "client");
        let started = Instant::now();
        let error = rx
            .recv(Duration::from_millis(200), "waiting for")
            .unwrap_err();
        assert!(matches!(error, FabricError::Timeout { .. }), "{error}");
        assert!(started.elapsed() < Duration::from_secs(2));
        client.write_all(b"GET / HTTP/1.0\r\n").unwrap();
        let error = rx.recv(Duration::from_secs(5), "waiting for").unwrap_err();
        assert!(error.to_string().contains("not speaking"), "{error}");
        drop(client);
    }

    #[test]
    fn close_mid_frame_is_reported() {
        let (mut client, server) = pair();
        let mut rx = Channel::new(server, "client");
        client.write_all(b"NLNK\x00\x01").unwrap();
        drop(client);
        let error = rx.recv(Duration::from_secs(5), "waiting for").unwrap_err();
        assert!(error.to_string().contains("middle of a message"), "{error}");
    }
}
