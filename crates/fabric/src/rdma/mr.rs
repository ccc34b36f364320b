//! Registered memory: a page-aligned buffer the NIC may read and write, and the remote
//! side's (address, length, rkey) triple, both addressed by (offset, len) with bounds checks
//! so a peer's numbers never turn into an out-of-range access.

use serde::{Deserialize, Serialize};
use std::alloc::{self, Layout};
use std::ptr::NonNull;

/// A remote region as the peer advertised it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteRegion {
    pub addr: u64,
    pub len: u64,
    pub rkey: u32,
}

/// (offset, len) outside a region.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{len} bytes at offset {offset} fall outside the {size}-byte {which} region")]
pub struct OutOfRange {
    pub which: &'static str,
    pub offset: u64,
    pub len: u64,
    pub size: u64,
}

fn check(which: &'static str, size: u64, offset: u64, len: u64) -> Result<(), OutOfRange> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(OutOfRange {
            which,
            offset,
            len,
            size,
        }),
    }
}

impl RemoteRegion {
    /// The remote address of `len` bytes at `offset`, if they lie inside the region.
    pub fn at(&self, offset: u64, len: u64) -> Result<u64, OutOfRange> {
        check("remote", self.len, offset, len)?;
        self.addr.checked_add(offset).ok_or(OutOfRange {
            which: "remote",
            offset,
            len,
            size: self.len,
        })
    }

    /// Whether the advertised region is itself sane: non-empty, at least `need` bytes, no
    /// address wrap-around.
    pub fn validate(&self, need: u64) -> Result<(), String> {
        if self.len < need {
            return Err(format!(
                "peer's region is {} bytes, the test needs {need}",
                self.len
            ));
        }
        if self.addr.checked_add(self.len).is_none() {
            return Err(format!(
                "peer's region {:#x} + {} wraps around the address space",
                self.addr, self.len
            ));
        }
        Ok(())
    }
}

/// Zeroed, page-aligned memory (registration pins whole pages; alignment keeps neighbours out),
/// or memory owned elsewhere (a KV pool) lent for registration.
pub struct Buffer {
    ptr: NonNull<u8>,
    len: usize,
    owned: bool,
}

// The buffer is plain memory; the NIC's concurrent access is synchronised by completions.
unsafe impl Send for Buffer {}

const PAGE: usize = 4096;

impl Buffer {
    pub fn new(len: usize) -> Option<Buffer> {
        let layout = Layout::from_size_align(len.max(1), PAGE).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc::alloc_zeroed(layout) })?;
        Some(Buffer {
            ptr,
            len,
            owned: true,
        })
    }

    /// Lends `len` bytes at `ptr` (never freed by the Buffer).
    ///
    /// # Safety
    /// The memory must stay valid for the Buffer's lifetime and any registration of it.
    pub unsafe fn borrowed(ptr: *mut u8, len: usize) -> Option<Buffer> {
        Some(Buffer {
            ptr: NonNull::new(ptr)?,
            len,
            owned: false,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// The local address of `len` bytes at `offset`, bounds-checked.
    pub fn at(&self, offset: u64, len: u64) -> Result<u64, OutOfRange> {
        check("local", self.len as u64, offset, len)?;
        Ok(self.addr() + offset)
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for len bytes for the buffer's lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self gives exclusive access from this side.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Reads a byte the peer may be writing right now (latency tests poll this way).
    pub fn read_volatile(&self, offset: usize) -> Option<u8> {
        if offset >= self.len {
            return None;
        }
        // SAFETY: in bounds; volatile because the NIC writes behind the compiler's back.
        Some(unsafe { std::ptr::read_volatile(self.ptr.as_ptr().add(offset)) })
    }

    pub fn write_byte(&mut self, offset: usize, value: u8) {
        if offset < self.len {
            // SAFETY: in bounds.
            unsafe { std::ptr::write_volatile(self.ptr.as_ptr().add(offset), value) }
        }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if let Ok(layout) = Layout::from_size_align(self.len.max(1), PAGE) {
            // SAFETY: allocated in `new` with this layout.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) }
        }
    }
}

/// The test pattern: a byte per (seed, offset), cheap and never constant over a message.
pub fn pattern(seed: u64, offset: u64) -> u8 {
    let x = (offset ^ seed.rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8
}

pub fn fill(buf: &mut [u8], seed: u64, base: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern(seed, base + i as u64);
    }
}

/// Bytes of `buf` that differ from the pattern.
pub fn wrong_bytes(buf: &[u8], seed: u64, base: u64) -> u64 {
    buf.iter()
        .enumerate()
        .filter(|(i, b)| **b != pattern(seed, base + *i as u64))
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_ranges_are_bounds_checked() {
        let r = RemoteRegion {
            addr: 0x1000,
            len: 4096,
            rkey: 7,
        };
        assert_eq!(r.at(0, 4096).unwrap(), 0x1000);
        assert_eq!(r.at(4095, 1).unwrap(), 0x1fff);
        assert!(r.at(4095, 2).is_err());
        assert!(r.at(u64::MAX, 2).is_err());
        let e = r.at(4096, 1).unwrap_err();
        assert!(
            e.to_string()
                .contains("outside the 4096-byte remote region"),
            "{e}"
        );
        assert!(r.validate(4096).is_ok());
        assert!(r.validate(4097).is_err());
        let wrap = RemoteRegion {
            addr: u64::MAX - 10,
            len: 100,
            rkey: 1,
        };
        assert!(wrap.validate(1).unwrap_err().contains("wraps"));
    }

    #[test]
    fn buffers_are_aligned_zeroed_and_checked() {
        let mut b = Buffer::new(10_000).unwrap();
        assert_eq!(b.addr() % 4096, 0);
        assert!(b.as_slice().iter().all(|&x| x == 0));
        assert!(b.at(9_999, 1).is_ok());
        assert!(b.at(9_999, 2).is_err());
        fill(b.as_mut_slice(), 42, 0);
        assert_eq!(wrong_bytes(b.as_slice(), 42, 0), 0);
        b.write_byte(5, !pattern(42, 5));
        assert_eq!(wrong_bytes(b.as_slice(), 42, 0), 1);
        assert_eq!(b.read_volatile(10_000), None);
    }
}
