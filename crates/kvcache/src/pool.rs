//! The KV pool's memory and its block allocator. Transfers read and write the pool in
//! place (no staging copy), from several threads at once, each touching only the blocks
//! it holds: the allocator and the prefill leases are what make those regions disjoint.

use crate::layout::KvLayout;
use crate::KvError;
use std::ptr::NonNull;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// 2 MiB, so huge pages can back the pool from its first byte.
const ALIGN: usize = 2 << 20;

pub struct KvPool {
    layout: KvLayout,
    base: NonNull<u8>,
    len: usize,
    commit_time: Duration,
}

// SAFETY: the pool is plain bytes; concurrent access is to disjoint blocks, which the
// allocator (decode) and the lease table (prefill) hand out to one holder at a time.
unsafe impl Send for KvPool {}
unsafe impl Sync for KvPool {}

impl KvPool {
    /// Maps a zeroed host pool and commits every page now (an inference engine allocates
    /// its KV cache at startup too), with huge pages where the kernel gives them.
    pub fn new(layout: KvLayout) -> Result<KvPool, KvError> {
        let started = Instant::now();
        let bytes = layout.pool_bytes();
        let too_big = |why: &str| {
            KvError::Config(format!(
                "cannot allocate {} for the KV pool ({} blocks): {why}; lower {}",
                measure::format_bytes(bytes),
                layout.num_blocks,
                measure::Setting::PoolBlocks
            ))
        };
        let len = usize::try_from(bytes)
            .ok()
            .filter(|&l| l <= isize::MAX as usize - ALIGN)
            .ok_or_else(|| too_big("larger than the address space"))?
            .max(1);
        if let Some(available) = mem_available() {
            if len as u64 > available {
                return Err(too_big(&format!(
                    "this node has {} available",
                    measure::format_bytes(available)
                )));
            }
        }
        let base = map_aligned(len).ok_or_else(|| too_big("mmap refused it"))?;
        // Huge pages: transfers sweep the whole pool, and 4 KiB pages cost a TLB miss and
        // a fault every 4 KiB of KV data. Advice only; failure is fine. Given before the
        // first touch, so the commit below faults 2 MiB at a time.
        // SAFETY: the range is the mapping just made.
        unsafe { libc::madvise(base.as_ptr().cast(), len, libc::MADV_HUGEPAGE) };
        populate(base, len);
        Ok(KvPool {
            layout,
            base,
            len,
            commit_time: started.elapsed(),
        })
    }

    /// How long mapping and committing the pool took.
    pub fn commit_time(&self) -> Duration {
        self.commit_time
    }

    pub fn layout(&self) -> &KvLayout {
        &self.layout
    }

    /// Start of the pool, for registering it with an RDMA device.
    pub(crate) fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, offset: u64, len: u64) -> (usize, usize) {
        let end = offset.checked_add(len).expect("pool range overflows");
        assert!(
            end <= self.len as u64,
            "pool range {offset}+{len} beyond {}",
            self.len
        );
        (offset as usize, len as usize)
    }

    /// Bytes at `offset..offset+len`. Panics if the range leaves the pool (a plan bug).
    ///
    /// # Safety
    /// No other thread may write this range while the slice lives.
    pub unsafe fn slice(&self, offset: u64, len: u64) -> &[u8] {
        let (offset, len) = self.check(offset, len);
        // SAFETY: in bounds (checked); no concurrent writer (caller's contract).
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(offset), len) }
    }

    /// Mutable bytes at `offset..offset+len`.
    ///
    /// # Safety
    /// No other thread may read or write this range while the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut(&self, offset: u64, len: u64) -> &mut [u8] {
        let (offset, len) = self.check(offset, len);
        // SAFETY: in bounds (checked); exclusive (caller's contract).
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(offset), len) }
    }
}

impl Drop for KvPool {
    fn drop(&mut self) {
        // SAFETY: mapped in `new` with this length; nothing borrows it past the pool.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// `MemAvailable` from /proc/meminfo, in bytes, capped by the cgroup's memory limit.
fn mem_available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let mut available = kib * 1024;
    let cgroup = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
    };
    if let (Some(max), Some(current)) = (
        cgroup("/sys/fs/cgroup/memory.max"),
        cgroup("/sys/fs/cgroup/memory.current"),
    ) {
        available = available.min(max.saturating_sub(current));
    }
    Some(available)
}

/// An anonymous, zeroed mapping of `len` bytes starting on a 2 MiB boundary. (The global
/// allocator would zero a large aligned block by writing it, faulting 4 KiB pages before
/// any huge-page advice could apply.)
fn map_aligned(len: usize) -> Option<NonNull<u8>> {
    let padded = len.checked_add(ALIGN)?;
    // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            padded,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return None;
    }
    let start = raw as usize;
    let aligned = start.next_multiple_of(ALIGN);
    let head = aligned - start;
    let tail = padded - head - len;
    // SAFETY: trimming the unaligned head and the tail of our own mapping.
    unsafe {
        if head > 0 {
            libc::munmap(raw, head);
        }
        if tail > 0 {
            libc::munmap((aligned + len) as *mut libc::c_void, tail);
        }
    }
    NonNull::new(aligned as *mut u8)
}

/// Commits every page now, so no transfer pays page faults and zeroing on first touch.
/// Page clearing runs at memory speed per core, so large pools are split across cores.
fn populate(base: NonNull<u8>, len: usize) {
    const PER_THREAD_MIN: usize = 256 << 20;
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(len / PER_THREAD_MIN)
        .clamp(1, 16);
    let chunk = len.div_ceil(threads).next_multiple_of(ALIGN);
    let base = base.as_ptr() as usize;
    std::thread::scope(|scope| {
        for start in (0..len).step_by(chunk) {
            let size = chunk.min(len - start);
            scope.spawn(move || populate_range(base + start, size));
        }
    });
}

fn populate_range(addr: usize, len: usize) {
    // SAFETY: the range lies inside the pool's mapping.
    let done =
        unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE) } == 0;
    if !done {
        // Kernels before 5.14: touch one byte per page.
        for offset in (0..len).step_by(4096) {
            // SAFETY: in bounds; the memory is ours and zero already.
            unsafe { ((addr + offset) as *mut u8).write_volatile(0) };
        }
    }
}

/// Free block ids; `take` waits (bounded) until enough are free.
pub struct BlockAllocator {
    total: u32,
    free: Mutex<Vec<u32>>,
    freed: Condvar,
}

impl BlockAllocator {
    pub fn new(total: u32) -> Self {
        BlockAllocator {
            total,
            free: Mutex::new((0..total).rev().collect()),
            freed: Condvar::new(),
        }
    }

    pub fn total(&self) -> u32 {
        self.total
    }

    pub fn free_count(&self) -> u32 {
        self.free.lock().map(|f| f.len() as u32).unwrap_or(0)
    }

    /// Takes `count` blocks, waiting up to `timeout` for other holders to release some.
    pub fn take(&self, count: u32, timeout: Duration) -> Result<Vec<u32>, KvError> {
        if count > self.total {
            return Err(KvError::Refused(format!(
                "{count} blocks needed but the pool has only {}: raise {}",
                self.total,
                measure::Setting::PoolBlocks
            )));
        }
        let deadline = Instant::now() + timeout;
        let mut free = self.free.lock().map_err(|_| KvError::poisoned())?;
        while (free.len() as u32) < count {
            let now = Instant::now();
            if now >= deadline {
                return Err(KvError::Refused(format!(
                    "pool full: {count} blocks needed, {} free after waiting {timeout:?}; raise {} or lower the concurrency",
                    free.len(),
                    measure::Setting::PoolBlocks
                )));
            }
            free = self
                .freed
                .wait_timeout(free, deadline - now)
                .map_err(|_| KvError::poisoned())?
                .0;
        }
        let at = free.len() - count as usize;
        Ok(free.split_off(at))
    }

    pub fn release(&self, blocks: &[u32]) {
        if let Ok(mut free) = self.free.lock() {
            free.extend_from_slice(blocks);
            self.freed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_waits_for_release_and_times_out_with_the_fix() {
        let alloc = std::sync::Arc::new(BlockAllocator::new(4));
        let held = alloc.take(3, Duration::ZERO).unwrap();
        assert_eq!(alloc.free_count(), 1);
        let e = alloc
            .take(2, Duration::from_millis(50))
            .unwrap_err()
            .to_string();
        assert!(e.contains("pool full"), "{e}");
        let releaser = {
            let alloc = alloc.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                alloc.release(&held);
            })
        };
        let got = alloc.take(4, Duration::from_secs(5)).unwrap();
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, vec![0, 1, 2, 3]);
        releaser.join().unwrap();
        assert!(alloc
            .take(5, Duration::ZERO)
            .unwrap_err()
            .to_string()
            .contains("only 4"));
    }
}
