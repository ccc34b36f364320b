//! Our own verbs layer: libibverbs is opened at run time with `libloading` (as NCCL's
//! `ibvwrap` does), each entry point resolved once, and called through the `#[repr(C)]`
//! structs of [`abi`]. Nothing of rdma-core is needed to build, and the same binary runs
//! on hosts without it. All unsafe FFI of the RDMA code lives in this module; the types
//! here (`Context`, `Pd`, `Mr`, `Cq`, `Qp`) are safe, reference-count what they depend on
//! (a QP keeps its PD and CQ alive, every object its context), and free in the right order.

pub mod abi;
#[cfg(test)]
mod layout_test;

use abi::*;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::io;
use std::ptr::NonNull;
use std::sync::{Arc, OnceLock};

/// Why libibverbs could not be used at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("libibverbs.so.1 cannot be loaded: {0}")]
    NotFound(String),
    #[error("libibverbs lacks {symbol}: {reason}")]
    MissingSymbol {
        symbol: &'static str,
        reason: String,
    },
}

/// A failed verbs call: which call, and the errno it left.
#[derive(Debug, thiserror::Error)]
#[error("{call}: {source}")]
pub struct VerbsError {
    pub call: &'static str,
    #[source]
    pub source: io::Error,
}

fn last_error(call: &'static str) -> VerbsError {
    VerbsError {
        call,
        source: io::Error::last_os_error(),
    }
}

fn rc_error(call: &'static str, rc: c_int) -> VerbsError {
    // Verbs return either -1 with errno set, or the errno itself.
    let source = if rc == -1 {
        io::Error::last_os_error()
    } else {
        io::Error::from_raw_os_error(rc.abs())
    };
    VerbsError { call, source }
}

type GetDeviceList = unsafe extern "C" fn(*mut c_int) -> *mut *mut ibv_device;
type FreeDeviceList = unsafe extern "C" fn(*mut *mut ibv_device);
type GetDeviceName = unsafe extern "C" fn(*mut ibv_device) -> *const c_char;
type OpenDevice = unsafe extern "C" fn(*mut ibv_device) -> *mut ibv_context;
type CloseDevice = unsafe extern "C" fn(*mut ibv_context) -> c_int;
type QueryDevice = unsafe extern "C" fn(*mut ibv_context, *mut ibv_device_attr) -> c_int;
type QueryPort = unsafe extern "C" fn(*mut ibv_context, u8, *mut ibv_port_attr) -> c_int;
type QueryGid = unsafe extern "C" fn(*mut ibv_context, u8, c_int, *mut ibv_gid) -> c_int;
type QueryGidEx =
    unsafe extern "C" fn(*mut ibv_context, u32, u32, *mut ibv_gid_entry, u32, usize) -> c_int;
type AllocPd = unsafe extern "C" fn(*mut ibv_context) -> *mut ibv_pd;
type DeallocPd = unsafe extern "C" fn(*mut ibv_pd) -> c_int;
type RegMr = unsafe extern "C" fn(*mut ibv_pd, *mut c_void, usize, c_int) -> *mut ibv_mr;
type RegDmabufMr = unsafe extern "C" fn(*mut ibv_pd, u64, usize, u64, c_int, c_int) -> *mut ibv_mr;
type DeregMr = unsafe extern "C" fn(*mut ibv_mr) -> c_int;
type CreateCq =
    unsafe extern "C" fn(*mut ibv_context, c_int, *mut c_void, *mut c_void, c_int) -> *mut ibv_cq;
type DestroyCq = unsafe extern "C" fn(*mut ibv_cq) -> c_int;
type CreateQp = unsafe extern "C" fn(*mut ibv_pd, *mut ibv_qp_init_attr) -> *mut ibv_qp;
type ModifyQp = unsafe extern "C" fn(*mut ibv_qp, *mut ibv_qp_attr, c_int) -> c_int;
type DestroyQp = unsafe extern "C" fn(*mut ibv_qp) -> c_int;
type WcStatusStr = unsafe extern "C" fn(u32) -> *const c_char;

/// The resolved entry points; `query_gid_ex` and `reg_dmabuf_mr` are newer than the rest
/// and may be missing.
struct Library {
    _lib: libloading::Library,
    get_device_list: GetDeviceList,
    free_device_list: FreeDeviceList,
    get_device_name: GetDeviceName,
    open_device: OpenDevice,
    close_device: CloseDevice,
    query_device: QueryDevice,
    query_port: QueryPort,
    query_gid: QueryGid,
    query_gid_ex: Option<QueryGidEx>,
    alloc_pd: AllocPd,
    dealloc_pd: DeallocPd,
    reg_mr: RegMr,
    reg_dmabuf_mr: Option<RegDmabufMr>,
    dereg_mr: DeregMr,
    create_cq: CreateCq,
    destroy_cq: DestroyCq,
    create_qp: CreateQp,
    modify_qp: ModifyQp,
    destroy_qp: DestroyQp,
    wc_status_str: WcStatusStr,
}

const SONAMES: [&str; 2] = ["libibverbs.so.1", "libibverbs.so"];

fn load() -> Result<Library, LoadError> {
    let mut reasons = Vec::new();
    let mut opened = None;
    for name in SONAMES {
        // SAFETY: loading libibverbs runs its initialisers, which only read its config.
        match unsafe { libloading::Library::new(name) } {
            Ok(lib) => {
                opened = Some(lib);
                break;
            }
            Err(e) => reasons.push(e.to_string()),
        }
    }
    let lib = opened.ok_or_else(|| LoadError::NotFound(reasons.join("; ")))?;
    // SAFETY: every symbol is declared with the signature rdma-core's verbs.h gives it.
    unsafe {
        macro_rules! required {
            ($name:literal) => {
                *lib.get(concat!($name, "\0").as_bytes())
                    .map_err(|e| LoadError::MissingSymbol {
                        symbol: $name,
                        reason: e.to_string(),
                    })?
            };
        }
        macro_rules! optional {
            ($name:literal) => {
                lib.get(concat!($name, "\0").as_bytes()).ok().map(|s| *s)
            };
        }
        Ok(Library {
            get_device_list: required!("ibv_get_device_list"),
            free_device_list: required!("ibv_free_device_list"),
            get_device_name: required!("ibv_get_device_name"),
            open_device: required!("ibv_open_device"),
            close_device: required!("ibv_close_device"),
            query_device: required!("ibv_query_device"),
            query_port: required!("ibv_query_port"),
            query_gid: required!("ibv_query_gid"),
            query_gid_ex: optional!("_ibv_query_gid_ex"),
            alloc_pd: required!("ibv_alloc_pd"),
            dealloc_pd: required!("ibv_dealloc_pd"),
            reg_mr: required!("ibv_reg_mr"),
            reg_dmabuf_mr: optional!("ibv_reg_dmabuf_mr"),
            dereg_mr: required!("ibv_dereg_mr"),
            create_cq: required!("ibv_create_cq"),
            destroy_cq: required!("ibv_destroy_cq"),
            create_qp: required!("ibv_create_qp"),
            modify_qp: required!("ibv_modify_qp"),
            destroy_qp: required!("ibv_destroy_qp"),
            wc_status_str: required!("ibv_wc_status_str"),
            _lib: lib,
        })
    }
}

fn library() -> Result<&'static Library, LoadError> {
    static LIBRARY: OnceLock<Result<Library, LoadError>> = OnceLock::new();
    LIBRARY.get_or_init(load).as_ref().map_err(Clone::clone)
}

/// Whether libibverbs loads and has every entry point we need.
pub fn load_library() -> Result<(), LoadError> {
    library().map(|_| ())
}

/// libibverbs' own name for a completion status (`ibv_wc_status_str`).
pub fn wc_status_str(status: u32) -> Option<String> {
    let lib = library().ok()?;
    // SAFETY: returns a pointer to a static string for any value.
    let text = unsafe { (lib.wc_status_str)(status) };
    // SAFETY: non-null results are NUL-terminated static strings.
    (!text.is_null()).then(|| {
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    })
}

/// The devices `ibv_get_device_list` returns, freed on drop.
pub struct DeviceList {
    lib: &'static Library,
    list: NonNull<*mut ibv_device>,
    len: usize,
}

/// Why the device list could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceListError {
    #[error(transparent)]
    Load(#[from] LoadError),
    /// `ibv_get_device_list` failed with this errno (ENOSYS: no RDMA in the kernel).
    #[error("ibv_get_device_list: {0}")]
    Verbs(io::Error),
}

impl DeviceList {
    pub fn new() -> Result<DeviceList, DeviceListError> {
        let lib = library()?;
        let mut len: c_int = 0;
        // SAFETY: len is a valid out-pointer.
        let list = unsafe { (lib.get_device_list)(&mut len) };
        let list =
            NonNull::new(list).ok_or_else(|| DeviceListError::Verbs(io::Error::last_os_error()))?;
        Ok(DeviceList {
            lib,
            list,
            len: len.max(0) as usize,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn device(&self, i: usize) -> *mut ibv_device {
        // SAFETY: i < len, and the list holds len device pointers.
        unsafe { *self.list.as_ptr().add(i) }
    }

    pub fn names(&self) -> Vec<String> {
        (0..self.len)
            .map(|i| {
                // SAFETY: a device of the live list; the name is NUL-terminated in it.
                let name = unsafe { (self.lib.get_device_name)(self.device(i)) };
                if name.is_null() {
                    String::new()
                } else {
                    // SAFETY: non-null, NUL-terminated, alive while the list is.
                    unsafe { CStr::from_ptr(name) }
                        .to_string_lossy()
                        .into_owned()
                }
            })
            .collect()
    }

    /// Opens the device called `name`; `None` when the list has no such device.
    pub fn open(&self, name: &str) -> Option<Result<Arc<Context>, VerbsError>> {
        let index = self.names().iter().position(|n| n == name)?;
        // SAFETY: a device of the live list; the context does not borrow the list.
        let raw = unsafe { (self.lib.open_device)(self.device(index)) };
        Some(
            NonNull::new(raw)
                .map(|raw| Arc::new(Context { lib: self.lib, raw }))
                .ok_or_else(|| last_error("ibv_open_device")),
        )
    }
}

impl Drop for DeviceList {
    fn drop(&mut self) {
        // SAFETY: the list came from ibv_get_device_list and is freed once.
        unsafe { (self.lib.free_device_list)(self.list.as_ptr()) }
    }
}

/// An open device (`ibv_context`).
pub struct Context {
    lib: &'static Library,
    raw: NonNull<ibv_context>,
}

// Verbs objects are thread-safe (rdma-core locks inside the provider where needed).
unsafe impl Send for Context {}
unsafe impl Sync for Context {}

impl Context {
    pub fn query_device(&self) -> Result<ibv_device_attr, VerbsError> {
        // SAFETY: plain old data; all-zero is valid.
        let mut attr: ibv_device_attr = unsafe { std::mem::zeroed() };
        // SAFETY: live context, valid out-pointer.
        let rc = unsafe { (self.lib.query_device)(self.raw.as_ptr(), &mut attr) };
        if rc != 0 {
            return Err(rc_error("ibv_query_device", rc));
        }
        Ok(attr)
    }

    pub fn query_port(&self, port: u8) -> Result<ibv_port_attr, VerbsError> {
        // SAFETY: plain old data; the fields the compat call leaves alone stay zero.
        let mut attr: ibv_port_attr = unsafe { std::mem::zeroed() };
        // SAFETY: live context; the struct is at least as large as the compat one.
        let rc = unsafe { (self.lib.query_port)(self.raw.as_ptr(), port, &mut attr) };
        if rc != 0 {
            return Err(rc_error("ibv_query_port", rc));
        }
        Ok(attr)
    }

    pub fn query_gid(&self, port: u8, index: u32) -> Result<[u8; 16], VerbsError> {
        let mut gid = ibv_gid::default();
        let index = c_int::try_from(index).unwrap_or(c_int::MAX);
        // SAFETY: live context, valid out-pointer.
        let rc = unsafe { (self.lib.query_gid)(self.raw.as_ptr(), port, index, &mut gid) };
        if rc != 0 {
            return Err(rc_error("ibv_query_gid", rc));
        }
        Ok(gid.raw)
    }

    /// The GID's type (`IBV_GID_TYPE_*`) through `ibv_query_gid_ex`; `None` when this
    /// libibverbs predates it or the entry is empty.
    pub fn query_gid_type(&self, port: u8, index: u32) -> Option<u32> {
        let query = self.lib.query_gid_ex?;
        let mut entry = ibv_gid_entry::default();
        // SAFETY: live context, valid out-pointer of the size passed.
        let rc = unsafe {
            query(
                self.raw.as_ptr(),
                port as u32,
                index,
                &mut entry,
                0,
                std::mem::size_of::<ibv_gid_entry>(),
            )
        };
        (rc == 0).then_some(entry.gid_type)
    }

    pub fn alloc_pd(self: &Arc<Self>) -> Result<Arc<Pd>, VerbsError> {
        // SAFETY: live context.
        let raw = unsafe { (self.lib.alloc_pd)(self.raw.as_ptr()) };
        let raw = NonNull::new(raw).ok_or_else(|| last_error("ibv_alloc_pd"))?;
        Ok(Arc::new(Pd {
            context: Arc::clone(self),
            raw,
        }))
    }

    pub fn create_cq(self: &Arc<Self>, entries: u32) -> Result<Arc<Cq>, VerbsError> {
        let entries = c_int::try_from(entries).unwrap_or(c_int::MAX);
        // SAFETY: live context; no channel, no user context.
        let raw = unsafe {
            (self.lib.create_cq)(
                self.raw.as_ptr(),
                entries,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
        let raw = NonNull::new(raw).ok_or_else(|| last_error("ibv_create_cq"))?;
        Ok(Arc::new(Cq {
            context: Arc::clone(self),
            raw,
        }))
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: every PD/CQ holds an Arc of this context, so none is left.
        unsafe { (self.lib.close_device)(self.raw.as_ptr()) };
    }
}

/// A protection domain.
pub struct Pd {
    context: Arc<Context>,
    raw: NonNull<ibv_pd>,
}

unsafe impl Send for Pd {}
unsafe impl Sync for Pd {}

impl Pd {
    /// Registers `len` bytes at `addr` with `access` (`IBV_ACCESS_*`).
    ///
    /// # Safety
    /// The memory must stay valid until the returned `Mr` is dropped: the NIC may read or
    /// write it at any time while it is registered.
    pub unsafe fn reg_mr(
        self: &Arc<Self>,
        addr: *mut u8,
        len: usize,
        access: c_int,
    ) -> Result<Mr, VerbsError> {
        // SAFETY: live PD; the caller vouches for the memory.
        let raw = unsafe { (self.context.lib.reg_mr)(self.raw.as_ptr(), addr.cast(), len, access) };
        let raw = NonNull::new(raw).ok_or_else(|| last_error("ibv_reg_mr"))?;
        Ok(Mr {
            pd: Arc::clone(self),
            raw,
            addr: addr as u64,
            len: len as u64,
        })
    }

    /// Whether this libibverbs can register dma-buf memory (GPU memory, later).
    pub fn has_dmabuf(&self) -> bool {
        self.context.lib.reg_dmabuf_mr.is_some()
    }

    /// Registers `len` bytes of the dma-buf `fd` from `offset`, seen by the NIC at `iova`.
    ///
    /// # Safety
    /// The dma-buf must stay valid until the returned `Mr` is dropped.
    pub unsafe fn reg_dmabuf_mr(
        self: &Arc<Self>,
        offset: u64,
        len: usize,
        iova: u64,
        fd: c_int,
        access: c_int,
    ) -> Result<Mr, VerbsError> {
        let reg = self.context.lib.reg_dmabuf_mr.ok_or(VerbsError {
            call: "ibv_reg_dmabuf_mr",
            source: io::Error::from_raw_os_error(libc::EOPNOTSUPP),
        })?;
        // SAFETY: live PD; the caller vouches for the dma-buf.
        let raw = unsafe { reg(self.raw.as_ptr(), offset, len, iova, fd, access) };
        let raw = NonNull::new(raw).ok_or_else(|| last_error("ibv_reg_dmabuf_mr"))?;
        Ok(Mr {
            pd: Arc::clone(self),
            raw,
            addr: iova,
            len: len as u64,
        })
    }

    /// Creates an RC QP whose sends and receives complete on `cq`.
    pub fn create_rc_qp(self: &Arc<Self>, cq: &Arc<Cq>, cap: ibv_qp_cap) -> Result<Qp, VerbsError> {
        let mut init = ibv_qp_init_attr {
            qp_context: std::ptr::null_mut(),
            send_cq: cq.raw.as_ptr(),
            recv_cq: cq.raw.as_ptr(),
            srq: std::ptr::null_mut(),
            cap,
            qp_type: IBV_QPT_RC,
            sq_sig_all: 0,
        };
        // SAFETY: live PD and CQ, valid attributes.
        let raw = unsafe { (self.context.lib.create_qp)(self.raw.as_ptr(), &mut init) };
        let raw = NonNull::new(raw).ok_or_else(|| last_error("ibv_create_qp"))?;
        Ok(Qp {
            pd: Arc::clone(self),
            _cq: Arc::clone(cq),
            raw,
        })
    }
}

impl Drop for Pd {
    fn drop(&mut self) {
        // SAFETY: every MR and QP holds an Arc of this PD, so none is left.
        unsafe { (self.context.lib.dealloc_pd)(self.raw.as_ptr()) };
    }
}

/// A registered memory region.
pub struct Mr {
    pd: Arc<Pd>,
    raw: NonNull<ibv_mr>,
    addr: u64,
    len: u64,
}

unsafe impl Send for Mr {}
unsafe impl Sync for Mr {}

impl Mr {
    pub fn lkey(&self) -> u32 {
        // SAFETY: live MR; lkey is set at registration and never changes.
        unsafe { (*self.raw.as_ptr()).lkey }
    }

    pub fn rkey(&self) -> u32 {
        // SAFETY: as above.
        unsafe { (*self.raw.as_ptr()).rkey }
    }

    /// Whether `len` bytes at `addr` lie inside the region.
    pub fn covers(&self, addr: u64, len: u64) -> bool {
        addr >= self.addr
            && addr
                .checked_add(len)
                .is_some_and(|end| end <= self.addr + self.len)
    }
}

impl Drop for Mr {
    fn drop(&mut self) {
        // SAFETY: registered once, deregistered once.
        unsafe { (self.pd.context.lib.dereg_mr)(self.raw.as_ptr()) };
    }
}

/// A completion queue.
pub struct Cq {
    context: Arc<Context>,
    raw: NonNull<ibv_cq>,
}

unsafe impl Send for Cq {}
unsafe impl Sync for Cq {}

impl Cq {
    /// Polls without blocking into `wcs`; the number filled, or `Err(rc)` from the
    /// provider (a CQ overrun).
    pub fn poll(&self, wcs: &mut [ibv_wc]) -> Result<usize, c_int> {
        let count = c_int::try_from(wcs.len()).unwrap_or(c_int::MAX);
        // SAFETY: live CQ of this context; wcs has room for `count` entries.
        let n = unsafe {
            let poll = (*self.context.raw.as_ptr())
                .ops
                .poll_cq
                .ok_or(-libc::ENOSYS)?;
            poll(self.raw.as_ptr(), count, wcs.as_mut_ptr())
        };
        if n < 0 {
            return Err(n);
        }
        Ok(n as usize)
    }
}

impl Drop for Cq {
    fn drop(&mut self) {
        // SAFETY: every QP using this CQ holds an Arc of it, so none is left.
        unsafe { (self.context.lib.destroy_cq)(self.raw.as_ptr()) };
    }
}

/// One send work request with one scatter-gather entry in `mr`.
#[derive(Debug, Clone, Copy)]
pub struct PostSend {
    pub wr_id: u64,
    /// `IBV_WR_*`.
    pub opcode: u32,
    /// `IBV_SEND_*`.
    pub flags: u32,
    pub local_addr: u64,
    pub len: u32,
    pub remote_addr: u64,
    pub rkey: u32,
    /// Host order; sent in network order.
    pub imm: u32,
}

/// An RC queue pair.
pub struct Qp {
    pd: Arc<Pd>,
    _cq: Arc<Cq>,
    raw: NonNull<ibv_qp>,
}

unsafe impl Send for Qp {}
unsafe impl Sync for Qp {}

/// A post the provider refused, or one whose local range lies outside its region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostError {
    OutsideRegion,
    Verbs(c_int),
}

impl Qp {
    pub fn qp_num(&self) -> u32 {
        // SAFETY: live QP; qp_num is set at creation.
        unsafe { (*self.raw.as_ptr()).qp_num }
    }

    /// `ibv_modify_qp` with the attributes named in `mask` (`IBV_QP_*`).
    pub fn modify(&mut self, attr: &ibv_qp_attr, mask: c_int) -> Result<(), VerbsError> {
        let mut attr = *attr;
        // SAFETY: live QP; the provider reads only the fields in mask.
        let rc = unsafe { (self.pd.context.lib.modify_qp)(self.raw.as_ptr(), &mut attr, mask) };
        if rc != 0 {
            return Err(rc_error("ibv_modify_qp", rc));
        }
        Ok(())
    }

    fn ops(&self) -> &ibv_context_ops {
        // SAFETY: the context outlives this QP (the PD holds it).
        unsafe { &(*self.pd.context.raw.as_ptr()).ops }
    }

    /// Posts one send work request, built on the stack (no allocation per post). The
    /// local range must lie in `mr`, so the NIC only touches registered, live memory.
    pub fn post_send(&self, mr: &Mr, wr: &PostSend) -> Result<(), PostError> {
        if !mr.covers(wr.local_addr, wr.len as u64) {
            return Err(PostError::OutsideRegion);
        }
        let mut sge = ibv_sge {
            addr: wr.local_addr,
            length: wr.len,
            lkey: mr.lkey(),
        };
        let mut raw = ibv_send_wr {
            wr_id: wr.wr_id,
            next: std::ptr::null_mut(),
            sg_list: &mut sge,
            num_sge: 1,
            opcode: wr.opcode,
            send_flags: wr.flags,
            imm_data: wr.imm.to_be(),
            wr: ibv_send_wr_wr {
                rdma: ibv_send_wr_rdma {
                    remote_addr: wr.remote_addr,
                    rkey: wr.rkey,
                },
            },
            qp_type: 0,
            bind_mw: [0; 6],
        };
        let mut bad: *mut ibv_send_wr = std::ptr::null_mut();
        let post = self.ops().post_send.ok_or(PostError::Verbs(libc::ENOSYS))?;
        // SAFETY: live QP; raw and sge live across the call; the range is registered.
        let rc = unsafe { post(self.raw.as_ptr(), &mut raw, &mut bad) };
        if rc != 0 {
            return Err(PostError::Verbs(rc));
        }
        Ok(())
    }

    /// Posts one receive of `len` bytes at `addr` in `mr` (`len` 0: no scatter entry, for
    /// WRITE_WITH_IMM notifications).
    pub fn post_recv(&self, mr: &Mr, wr_id: u64, addr: u64, len: u32) -> Result<(), PostError> {
        if !mr.covers(addr, len as u64) {
            return Err(PostError::OutsideRegion);
        }
        let mut sge = ibv_sge {
            addr,
            length: len,
            lkey: mr.lkey(),
        };
        let mut raw = ibv_recv_wr {
            wr_id,
            next: std::ptr::null_mut(),
            sg_list: &mut sge,
            num_sge: i32::from(len != 0),
        };
        let mut bad: *mut ibv_recv_wr = std::ptr::null_mut();
        let post = self.ops().post_recv.ok_or(PostError::Verbs(libc::ENOSYS))?;
        // SAFETY: as in post_send.
        let rc = unsafe { post(self.raw.as_ptr(), &mut raw, &mut bad) };
        if rc != 0 {
            return Err(PostError::Verbs(rc));
        }
        Ok(())
    }
}

impl Drop for Qp {
    fn drop(&mut self) {
        // SAFETY: created once, destroyed once, before its PD and CQ (held by Arc).
        unsafe { (self.pd.context.lib.destroy_qp)(self.raw.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_loads_or_says_why() {
        // On a host with libibverbs this loads; without it, the error names the soname.
        match load_library() {
            Ok(()) => assert!(wc_status_str(IBV_WC_REM_ACCESS_ERR).is_some()),
            Err(e) => assert!(e.to_string().contains("libibverbs"), "{e}"),
        }
    }
}
