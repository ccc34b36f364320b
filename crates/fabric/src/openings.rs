//! Connections still in their opening (accepted, not yet authenticated), bounded without
//! locking anyone out: when the budget is full, the oldest opening is cut to make room.
//! Strangers that connect and say nothing therefore cannot keep a real client out however
//! many sockets they hold; a real client finishes its opening in milliseconds, long before
//! it would be the oldest.

use std::collections::VecDeque;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Inner {
    next: u64,
    /// Oldest first. A descriptor stays valid while its entry exists: the ticket that
    /// removes the entry is dropped before its stream (see [`Openings::admit`]).
    open: VecDeque<(u64, RawFd)>,
}

/// The openings of one listener.
#[derive(Clone)]
pub struct Openings {
    budget: usize,
    inner: Arc<Mutex<Inner>>,
}

/// One connection's place among the openings; dropping it (when the opening ends, either
/// way) gives the place back. Keep it in a variable declared after the stream, so it is
/// dropped first.
pub struct Ticket {
    id: u64,
    inner: Arc<Mutex<Inner>>,
}

impl Openings {
    pub fn new(budget: usize) -> Self {
        Openings {
            budget: budget.max(1),
            inner: Arc::default(),
        }
    }

    /// Registers `stream` as opening. At the budget, the oldest opening's socket is shut
    /// down (its reader fails at once and its thread ends); returns the ticket and
    /// whether one was cut.
    pub fn admit(&self, stream: &TcpStream) -> (Ticket, bool) {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut cut = false;
        while inner.open.len() >= self.budget {
            if let Some((_, fd)) = inner.open.pop_front() {
                // SAFETY: the fd is open: its ticket (still alive, since its entry was
                // here) is dropped before its stream, and we hold the lock it takes.
                unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
                cut = true;
            }
        }
        let id = inner.next;
        inner.next += 1;
        inner.open.push_back((id, stream.as_raw_fd()));
        (
            Ticket {
                id,
                inner: Arc::clone(&self.inner),
            },
            cut,
        )
    }

    /// Openings in progress.
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |i| i.open.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cuts every opening (the listener is done).
    pub fn cut_all(&self) {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (_, fd) in inner.open.drain(..) {
            // SAFETY: as in `admit`.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(at) = inner.open.iter().position(|(id, _)| *id == self.id) {
            inner.open.remove(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    #[test]
    fn a_full_budget_cuts_the_oldest_opening_not_the_newcomer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let openings = Openings::new(2);
        let (_c1, mut oldest) = pair(&listener);
        let (t1, cut) = openings.admit(&oldest);
        assert!(!cut);
        let (_c2, second) = pair(&listener);
        let (_t2, _) = openings.admit(&second);
        let (_c3, newest) = pair(&listener);
        let (_t3, cut) = openings.admit(&newest);
        assert!(cut, "the budget was full");
        assert_eq!(openings.len(), 2);
        // The oldest one's reader sees the end at once instead of waiting for its peer.
        let mut byte = [0u8; 1];
        assert_eq!(oldest.read(&mut byte).unwrap(), 0);
        drop(t1);
        assert_eq!(openings.len(), 2, "a cut ticket is already gone");
    }

    #[test]
    fn a_finished_opening_gives_its_place_back_and_cut_all_ends_the_rest() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let openings = Openings::new(4);
        let (_c1, a) = pair(&listener);
        let (_c2, mut b) = pair(&listener);
        let (ta, _) = openings.admit(&a);
        let (_tb, _) = openings.admit(&b);
        drop(ta);
        assert_eq!(openings.len(), 1);
        openings.cut_all();
        assert!(openings.is_empty());
        let mut byte = [0u8; 1];
        assert_eq!(b.read(&mut byte).unwrap(), 0);
    }
}
