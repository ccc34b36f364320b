//! TCP socket setup and introspection: buffer sizes, TCP_NODELAY, congestion control,
//! SO_BINDTODEVICE, MSG_ZEROCOPY, and TCP_INFO (retransmits, RTT).

use crate::error::{FabricError, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Per-socket settings from the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketOptions {
    /// SO_SNDBUF and SO_RCVBUF (the kernel doubles it and caps it at [wr]mem_max).
    pub window: Option<u64>,
    /// TCP_CONGESTION, e.g. "cubic", "bbr".
    pub congestion: Option<String>,
    /// SO_BINDTODEVICE.
    pub iface: Option<String>,
    pub nodelay: bool,
}

/// Parses `HOST[:PORT]` (`[v6]:port` for IPv6) and resolves it.
pub fn resolve_peer(text: &str, default_port: u16) -> Result<SocketAddr> {
    let bad = || {
        FabricError::Config(format!(
            "'{text}' is not HOST[:PORT] (e.g. 10.0.0.2, node2:18515, [fe80::1]:18515)"
        ))
    };
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => default_port,
            None => return Err(bad()),
        };
        (host, port)
    } else if text.matches(':').count() == 1 {
        let (host, port) = text.split_once(':').ok_or_else(bad)?;
        (host, port.parse().map_err(|_| bad())?)
    } else {
        (text, default_port)
    };
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    let mut addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| FabricError::io(format!("resolving '{host}'"), e))?
        .collect();
    // Prefer IPv4, the way most cluster configs are written.
    addrs.sort_by_key(|a| !a.is_ipv4());
    addrs
        .into_iter()
        .next()
        .ok_or_else(|| FabricError::Config(format!("'{host}' resolves to no address")))
}

fn configure(socket: &Socket, options: &SocketOptions) -> Result<()> {
    if let Some(iface) = &options.iface {
        socket.bind_device(Some(iface.as_bytes())).map_err(|e| {
            FabricError::io(
                format!("binding to interface {iface} (SO_BINDTODEVICE; needs root or CAP_NET_RAW, and the interface must exist)"),
                e,
            )
        })?;
    }
    if let Some(window) = options.window {
        let window = usize::try_from(window)
            .unwrap_or(usize::MAX)
            .min(i32::MAX as usize / 2);
        socket
            .set_send_buffer_size(window)
            .and_then(|()| socket.set_recv_buffer_size(window))
            .map_err(|e| {
                FabricError::io(format!("setting the socket buffers to {window} bytes"), e)
            })?;
    }
    if let Some(name) = &options.congestion {
        socket.set_tcp_congestion(name.as_bytes()).map_err(|e| {
            FabricError::Config(format!(
                "congestion control '{name}' is not usable here ({e}): see /proc/sys/net/ipv4/tcp_available_congestion_control, or load it with `modprobe tcp_{name}`"
            ))
        })?;
    }
    if options.nodelay {
        socket
            .set_nodelay(true)
            .map_err(|e| FabricError::io("setting TCP_NODELAY", e))?;
    }
    Ok(())
}

/// Connects with a bounded wait, options set before the handshake (so the window scale
/// matches the requested buffer).
pub fn connect(addr: SocketAddr, timeout: Duration, options: &SocketOptions) -> Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| FabricError::io("creating a TCP socket", e))?;
    configure(&socket, options)?;
    match socket.connect_timeout(&SockAddr::from(addr), timeout) {
        Ok(()) => Ok(socket.into()),
        Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
            Err(FabricError::ConnectTimeout {
                addr: addr.to_string(),
                after: timeout,
            })
        }
        Err(e) => Err(FabricError::io(
            format!("connecting to {addr} (is the server running there?)"),
            e,
        )),
    }
}

/// Applies options to an accepted socket (the buffer sizes take effect from here on).
pub fn apply(stream: &TcpStream, options: &SocketOptions) -> Result<()> {
    configure(&socket2::SockRef::from(stream), options)
}

/// Listen backlog: deep enough that a burst of idle connects waits in the accept queue,
/// where accept cuts them or closing the listener resets them, instead of overflowing into
/// half-open connections nobody ever resets. The kernel caps it at net.core.somaxconn.
pub const BACKLOG: i32 = 4096;

/// Binds a plain listener (SO_REUSEADDR, as std does) with [`BACKLOG`]. It returns the io
/// error so that each caller can say what it listened for.
pub fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Listens on `addr`, optionally pinned to one interface.
pub fn listen(addr: SocketAddr, iface: Option<&str>) -> Result<TcpListener> {
    bind(addr, iface)?.listen()
}

/// A socket bound to its address but not listening yet: a bad address or a port another
/// server listens on fails here, and a client that connects meanwhile is refused at once
/// instead of waiting in a queue that nobody serves yet.
pub struct Bound {
    socket: Socket,
    addr: SocketAddr,
}

/// Binds `addr` (optionally pinned to one interface) without listening; see [`Bound`].
pub fn bind(addr: SocketAddr, iface: Option<&str>) -> Result<Bound> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| FabricError::io("creating a TCP socket", e))?;
    socket
        .set_reuse_address(true)
        .map_err(|e| FabricError::io("setting SO_REUSEADDR", e))?;
    configure(
        &socket,
        &SocketOptions {
            iface: iface.map(str::to_string),
            ..SocketOptions::default()
        },
    )?;
    socket
        .bind(&SockAddr::from(addr))
        .map_err(|e| in_use(addr, e))?;
    Ok(Bound { socket, addr })
}

fn in_use(addr: SocketAddr, e: std::io::Error) -> FabricError {
    FabricError::io(
        format!(
            "listening on {addr} (another server on this port? set {} to a free one)",
            measure::Setting::ListenPort
        ),
        e,
    )
}

impl Bound {
    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .ok_or_else(|| {
                FabricError::Config(format!("reading the address bound for {}", self.addr))
            })
    }

    /// Starts accepting connections.
    pub fn listen(self) -> Result<TcpListener> {
        let addr = self.addr;
        self.socket.listen(BACKLOG).map_err(|e| in_use(addr, e))?;
        Ok(self.socket.into())
    }
}

/// The TCP_INFO fields linkbench reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpInfo {
    pub rtt_us: u32,
    pub rttvar_us: u32,
    pub total_retrans: u32,
    pub snd_cwnd: u32,
}

/// Reads TCP_INFO; `None` if the kernel refuses (not a TCP socket).
pub fn tcp_info(stream: &TcpStream) -> Option<TcpInfo> {
    // SAFETY: tcp_info is plain old data; the kernel writes at most `len` bytes into it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(TcpInfo {
        rtt_us: info.tcpi_rtt,
        rttvar_us: info.tcpi_rttvar,
        total_retrans: info.tcpi_total_retrans,
        snd_cwnd: info.tcpi_snd_cwnd,
    })
}

/// Turns on SO_ZEROCOPY so [`ZeroCopyWriter`] can send with MSG_ZEROCOPY.
pub fn enable_zerocopy(stream: &TcpStream) -> Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: passes a valid pointer to an int and its size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ZEROCOPY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(FabricError::io(
            "enabling SO_ZEROCOPY (needs Linux 4.14+)",
            std::io::Error::last_os_error(),
        ))
    }
}

/// Sends with MSG_ZEROCOPY and reaps completions from the error queue. The buffer is never
/// modified while in flight (linkbench sends the same pattern over and over), so
/// completions only need draining, not matching.
pub struct ZeroCopyWriter<'a> {
    stream: &'a TcpStream,
    sends_since_drain: u32,
}

impl<'a> ZeroCopyWriter<'a> {
    pub fn new(stream: &'a TcpStream) -> Self {
        Self {
            stream,
            sends_since_drain: 0,
        }
    }

    fn drain(&mut self) {
        let mut control = [0u8; 256];
        loop {
            // SAFETY: msghdr points at a live stack buffer for control data and no iovecs.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = control.len() as _;
            let rc = unsafe {
                libc::recvmsg(
                    self.stream.as_raw_fd(),
                    &mut msg,
                    libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
                )
            };
            if rc < 0 {
                break;
            }
        }
        self.sends_since_drain = 0;
    }
}

impl Write for ZeroCopyWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            if self.sends_since_drain >= 64 {
                self.drain();
            }
            // SAFETY: buf is a live slice for the duration of the call.
            let rc = unsafe {
                libc::send(
                    self.stream.as_raw_fd(),
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_ZEROCOPY | libc::MSG_NOSIGNAL,
                )
            };
            if rc >= 0 {
                self.sends_since_drain += 1;
                return Ok(rc as usize);
            }
            let error = std::io::Error::last_os_error();
            match error.raw_os_error() {
                // Too many completions outstanding (optmem): reap and retry.
                Some(libc::ENOBUFS) => {
                    self.drain();
                    std::thread::yield_now();
                }
                Some(libc::EINTR) => {}
                _ => return Err(error),
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.drain();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_socket_refuses_connects_at_once_until_it_listens() {
        let bound = bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let addr = bound.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        // A port another server listens on fails at bind, before any slow start-up.
        let taken = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(bind(taken.local_addr().unwrap(), None).is_err());
        let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
        let listener = bound.listen().unwrap();
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        drop(listener);
    }

    #[test]
    fn a_burst_of_idle_connects_waits_in_the_accept_queue_and_is_reset_when_the_listener_closes() {
        // std's backlog of 128 overflowed here: the rest became half-open connections that
        // no accept and no close ever reached, so an idle client never learned it was cut.
        let listener = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let burst: Vec<TcpStream> = (0..300)
            .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        drop(listener);
        for mut idle in burst {
            idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let ended = match std::io::Read::read(&mut idle, &mut [0u8; 1]) {
                Ok(n) => n == 0,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            };
            assert!(
                ended,
                "a queued connection was not reset when its listener closed"
            );
        }
    }

    #[test]
    fn peers_parse_with_and_without_port() {
        assert_eq!(
            resolve_peer("127.0.0.1", 18515).unwrap(),
            "127.0.0.1:18515".parse().unwrap()
        );
        assert_eq!(
            resolve_peer("127.0.0.1:9", 18515).unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        assert_eq!(
            resolve_peer("[::1]:7", 18515).unwrap(),
            "[::1]:7".parse().unwrap()
        );
        assert_eq!(
            resolve_peer("::1", 18515).unwrap(),
            "[::1]:18515".parse().unwrap()
        );
        for bad in ["", ":5", "host:port", "[::1", "1.2.3.4:0", "[::1]x"] {
            assert!(resolve_peer(bad, 1).is_err(), "{bad}");
        }
    }

    #[test]
    fn tcp_info_reads_on_a_live_connection() {
        let listener = listen("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let addr = listener.local_addr().unwrap();
        let options = SocketOptions {
            window: Some(256 * 1024),
            nodelay: true,
            ..SocketOptions::default()
        };
        let client = connect(addr, Duration::from_secs(1), &options).unwrap();
        let (server, _) = listener.accept().unwrap();
        apply(&server, &options).unwrap();
        assert!(tcp_info(&client).is_some());
        let mut writer = ZeroCopyWriter::new(&client);
        if enable_zerocopy(&client).is_ok() {
            writer.write_all(&[7u8; 4096]).unwrap();
            writer.flush().unwrap();
        }
    }

    #[test]
    fn unknown_congestion_control_names_the_fix() {
        let options = SocketOptions {
            congestion: Some("no-such-cc".into()),
            ..SocketOptions::default()
        };
        let error = connect(
            "127.0.0.1:9".parse().unwrap(),
            Duration::from_secs(1),
            &options,
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("tcp_available_congestion_control"),
            "{error}"
        );
    }
}

/// What an interface name resolves to for a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfaceAddress {
    /// Its IPv4 address, else its first IPv6 one.
    Found(std::net::IpAddr),
    /// The interface exists but has no IP address.
    NoAddress,
    NoSuchInterface,
}

/// Every IP address `iface` carries (empty when it has none or does not exist).
pub fn iface_addresses(iface: &str) -> Result<Vec<std::net::IpAddr>> {
    let addrs = nix::ifaddrs::getifaddrs()
        .map_err(|e| FabricError::io("listing interface addresses", e.into()))?;
    Ok(addrs
        .filter(|a| a.interface_name == iface)
        .filter_map(|a| {
            let address = a.address?;
            if let Some(v4) = address.as_sockaddr_in() {
                return Some(std::net::IpAddr::V4(v4.ip()));
            }
            address
                .as_sockaddr_in6()
                .map(|six| std::net::IpAddr::V6(six.ip()))
        })
        .collect())
}

/// The address a listener on `iface` binds, so it serves there and not on every address.
pub fn iface_address(iface: &str) -> Result<IfaceAddress> {
    let addrs = nix::ifaddrs::getifaddrs()
        .map_err(|e| FabricError::io("listing interface addresses", e.into()))?;
    let mut found = false;
    let mut v6 = None;
    for addr in addrs.filter(|a| a.interface_name == iface) {
        found = true;
        let Some(address) = addr.address else {
            continue;
        };
        if let Some(v4) = address.as_sockaddr_in() {
            return Ok(IfaceAddress::Found(std::net::IpAddr::V4(v4.ip())));
        }
        if let Some(six) = address.as_sockaddr_in6() {
            v6.get_or_insert(std::net::IpAddr::V6(six.ip()));
        }
    }
    Ok(match (found, v6) {
        (_, Some(v6)) => IfaceAddress::Found(v6),
        (true, None) => IfaceAddress::NoAddress,
        (false, None) => IfaceAddress::NoSuchInterface,
    })
}
