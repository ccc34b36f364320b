//! Finding NCCL and a GPU for `--backend nccl`. The search is a pure function over the
//! places users have libnccl: `--nccl-lib`, LD_LIBRARY_PATH, system paths, and Python
//! site-packages (`nvidia/nccl/lib`, what the `nvidia-nccl-cu12` wheel installs).

use measure::Setting;
use std::path::{Path, PathBuf};

pub const SONAME: &str = "libnccl.so.2";

/// Directories to search, in order.
pub fn search_dirs(ld_library_path: Option<&str>, site_packages: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = ld_library_path
        .unwrap_or("")
        .split(':')
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect();
    for system in [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib64",
        "/usr/local/lib",
        "/usr/local/cuda/lib64",
        "/usr/lib",
    ] {
        dirs.push(PathBuf::from(system));
    }
    for site in site_packages {
        dirs.push(site.join("nvidia/nccl/lib"));
    }
    dirs
}

/// Finds libnccl.so.2: an explicit path must exist; otherwise the first directory holding it.
pub fn find_library(explicit: Option<&Path>, dirs: &[PathBuf]) -> Result<PathBuf, String> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(format!(
                "{} {} does not exist: give the path of {SONAME}",
                Setting::NcclLibrary,
                path.display()
            ))
        };
    }
    dirs.iter()
        .map(|dir| dir.join(SONAME))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            format!(
                "{SONAME} not found in LD_LIBRARY_PATH, system library paths or Python site-packages: install NCCL (`pip install nvidia-nccl-cu12` or the libnccl2 package) or pass its path as {}",
                Setting::NcclLibrary
            )
        })
}

/// Why `--backend nccl` cannot run here, or Ok(library path) when NCCL and a GPU exist.
pub fn check_environment(
    explicit: Option<&Path>,
    dirs: &[PathBuf],
    proc_root: &Path,
) -> Result<PathBuf, String> {
    if probe::read_gpus(proc_root).gpus.is_empty() {
        return Err(format!(
            "no NVIDIA GPU on this node (/proc/driver/nvidia/gpus is empty or missing): the nccl backend needs GPUs; use {} to measure the network from the CPU",
            Setting::TcpTransport
        ));
    }
    find_library(explicit, dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_order_is_ld_path_then_system_then_site_packages() {
        let dirs = search_dirs(
            Some("/opt/a::/opt/b"),
            &[PathBuf::from("/venv/lib/python3.11/site-packages")],
        );
        assert_eq!(dirs[0], PathBuf::from("/opt/a"));
        assert_eq!(dirs[1], PathBuf::from("/opt/b"));
        assert_eq!(
            dirs.last().unwrap(),
            &PathBuf::from("/venv/lib/python3.11/site-packages/nvidia/nccl/lib")
        );
    }

    #[test]
    fn finds_the_wheel_library_and_rejects_a_missing_explicit_path() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("nvidia/nccl/lib");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(lib.join(SONAME), b"").unwrap();
        let dirs = search_dirs(None, &[dir.path().to_path_buf()]);
        assert_eq!(find_library(None, &dirs).unwrap(), lib.join(SONAME));
        let missing = find_library(Some(Path::new("/nope/libnccl.so.2")), &dirs).unwrap_err();
        assert!(missing.contains("the NCCL library setting /nope/libnccl.so.2 does not exist"));
        assert!(find_library(None, &[])
            .unwrap_err()
            .contains("pip install nvidia-nccl-cu12"));
    }

    /// Loads a real libnccl.so.2 when one is named (e.g. from the nvidia-nccl-cu12 wheel):
    /// version and unique id work without a GPU.
    #[test]
    fn a_real_nccl_library_loads_when_one_is_given() {
        let Ok(path) = std::env::var("NODELINK_NCCL_LIB") else {
            eprintln!("NODELINK_NCCL_LIB unset: not loading a real NCCL");
            return;
        };
        let lib = NcclLib::open(Path::new(&path)).unwrap();
        assert!(lib.version >= 20000, "version {}", lib.version);
        let id = lib.unique_id().unwrap();
        assert!(id.internal.iter().any(|&b| b != 0));
        let not_nccl = NcclLib::open(Path::new("/etc/hostname"))
            .err()
            .unwrap_or_default();
        assert!(not_nccl.contains("cannot load"), "{not_nccl}");
    }

    #[test]
    fn no_gpu_is_one_clear_sentence() {
        let root = tempfile::tempdir().unwrap();
        let error = check_environment(None, &[], root.path()).unwrap_err();
        assert!(error.contains("no NVIDIA GPU") && error.contains("use the TCP transport setting"));
    }
}

/// The NCCL entry points collbench uses, loaded from the exact file the search found
/// (cudarc's own loader does not try the `libnccl.so.2` soname NCCL installs).
pub struct NcclLib {
    _library: libloading::Library,
    pub version: i32,
    get_unique_id: unsafe extern "C" fn(*mut UniqueId) -> c_int,
    comm_init_rank: unsafe extern "C" fn(*mut RawComm, c_int, UniqueId, c_int) -> c_int,
    comm_destroy: unsafe extern "C" fn(RawComm) -> c_int,
    get_error_string: unsafe extern "C" fn(c_int) -> *const c_char,
    all_reduce: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        c_int,
        c_int,
        RawComm,
        RawStream,
    ) -> c_int,
    all_gather:
        unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, RawComm, RawStream) -> c_int,
    reduce_scatter: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        c_int,
        c_int,
        RawComm,
        RawStream,
    ) -> c_int,
    broadcast: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        c_int,
        c_int,
        RawComm,
        RawStream,
    ) -> c_int,
    reduce: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        c_int,
        c_int,
        c_int,
        RawComm,
        RawStream,
    ) -> c_int,
    send: unsafe extern "C" fn(*const c_void, usize, c_int, c_int, RawComm, RawStream) -> c_int,
    recv: unsafe extern "C" fn(*mut c_void, usize, c_int, c_int, RawComm, RawStream) -> c_int,
    group_start: unsafe extern "C" fn() -> c_int,
    group_end: unsafe extern "C" fn() -> c_int,
}

use std::ffi::{c_char, c_int, c_void};

type RawComm = *mut c_void;
type RawStream = *mut c_void;

/// ncclUniqueId: 128 opaque bytes, passed by value to ncclCommInitRank.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UniqueId {
    pub internal: [u8; 128],
}

impl NcclLib {
    pub fn open(path: &Path) -> Result<NcclLib, String> {
        let fail = |what: &str, e: libloading::Error| format!("{}: {what}: {e}", path.display());
        // SAFETY: loading NCCL runs its initialisers, which is what using NCCL means; every
        // symbol below is declared with the signature of NCCL 2.x's nccl.h.
        unsafe {
            let library = libloading::Library::new(path).map_err(|e| fail("cannot load", e))?;
            macro_rules! symbol {
                ($name:literal) => {
                    *library
                        .get($name)
                        .map_err(|e| fail("missing symbol (not NCCL 2.x?)", e))?
                };
            }
            let get_version: unsafe extern "C" fn(*mut c_int) -> c_int =
                symbol!(b"ncclGetVersion\0");
            let mut version = 0;
            get_version(&mut version);
            Ok(NcclLib {
                version,
                get_unique_id: symbol!(b"ncclGetUniqueId\0"),
                comm_init_rank: symbol!(b"ncclCommInitRank\0"),
                comm_destroy: symbol!(b"ncclCommDestroy\0"),
                get_error_string: symbol!(b"ncclGetErrorString\0"),
                all_reduce: symbol!(b"ncclAllReduce\0"),
                all_gather: symbol!(b"ncclAllGather\0"),
                reduce_scatter: symbol!(b"ncclReduceScatter\0"),
                broadcast: symbol!(b"ncclBroadcast\0"),
                reduce: symbol!(b"ncclReduce\0"),
                send: symbol!(b"ncclSend\0"),
                recv: symbol!(b"ncclRecv\0"),
                group_start: symbol!(b"ncclGroupStart\0"),
                group_end: symbol!(b"ncclGroupEnd\0"),
                _library: library,
            })
        }
    }

    /// A fresh ncclUniqueId (works without a GPU: it only opens a bootstrap socket).
    pub fn unique_id(&self) -> Result<UniqueId, CollError> {
        let mut id = UniqueId { internal: [0; 128] };
        // SAFETY: writes 128 bytes into `id`.
        self.check("ncclGetUniqueId", unsafe { (self.get_unique_id)(&mut id) })?;
        Ok(id)
    }

    fn check(&self, what: &str, code: c_int) -> Result<(), CollError> {
        if code == 0 {
            return Ok(());
        }
        // SAFETY: ncclGetErrorString returns a static NUL-terminated string for any code.
        let text = unsafe { std::ffi::CStr::from_ptr((self.get_error_string)(code)) };
        Err(CollError::Invalid(format!(
            "{what} failed: {} (ncclResult {code})",
            text.to_string_lossy()
        )))
    }
}

fn nccl_dtype(dtype: Dtype) -> c_int {
    match dtype {
        Dtype::I32 => 2,
        Dtype::Fp16 => 6,
        Dtype::Fp32 => 7,
        Dtype::Bf16 => 9,
        // ncclFloat8e4m3 (NCCL 2.24+); runs refuse fp8 before they get here.
        Dtype::Fp8 => 10,
    }
}

fn nccl_redop(op: RedOp) -> c_int {
    match op {
        RedOp::Sum => 0,
        RedOp::Max => 2,
        RedOp::Min => 3,
    }
}

use crate::comm::Communicator;
use crate::dtype::{Dtype, RedOp};
use crate::error::CollError;
use crate::harness::{count_wrong, plan, summarize, words_for, Row, RunConfig, Timing};
use crate::ops::{by_name, input, Ctx};
use cudarc::driver::{CudaContext, CudaStream, DevicePtr};
use std::sync::Arc;

fn driver(what: &str) -> impl Fn(cudarc::driver::DriverError) -> CollError + '_ {
    move |e| CollError::Invalid(format!("CUDA {what}: {e:?}"))
}

/// Runs the sweep on GPU `device` with NCCL; the TCP communicator carries the unique id
/// and the per-rank timings, exactly as the TCP backend's rows are formed.
pub fn run(
    comm: &mut Communicator,
    lib: &NcclLib,
    device: Option<usize>,
    config: &RunConfig,
    mut on_row: impl FnMut(&Row),
) -> Result<Vec<Row>, CollError> {
    config.validate(comm.world)?;
    // SAFETY: only asks the loader whether libcuda can be opened.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(CollError::Invalid(format!(
            "libcuda.so.1 (the NVIDIA driver library) cannot be loaded: install the driver or use {}",
            Setting::TcpTransport
        )));
    }
    let device = match device {
        Some(d) => d,
        None => {
            let count = CudaContext::device_count()
                .map_err(driver("counting GPUs"))?
                .max(1) as usize;
            local_rank().unwrap_or(comm.rank) % count
        }
    };
    let context = CudaContext::new(device).map_err(driver("opening the GPU"))?;
    let stream = context.new_stream().map_err(driver("creating a stream"))?;

    // Rank 0 makes the id; the TCP broadcast hands it to everyone.
    let mut id_words = words_for(128);
    let id_bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut id_words);
    if comm.rank == 0 {
        id_bytes.copy_from_slice(&lib.unique_id()?.internal);
    }
    let broadcast = by_name("broadcast").expect("built-in op");
    let (_, schedule) = plan(broadcast, comm, 32, Dtype::I32, 0);
    comm.execute(&schedule, id_bytes, Dtype::I32, RedOp::Sum)?;
    let mut id = UniqueId { internal: [0; 128] };
    id.internal.copy_from_slice(id_bytes);
    let mut raw: RawComm = std::ptr::null_mut();
    // SAFETY: NCCL writes the communicator handle; all ranks pass the same id.
    lib.check("ncclCommInitRank", unsafe {
        (lib.comm_init_rank)(&mut raw, comm.world as c_int, id, comm.rank as c_int)
    })?;
    let nccl = NcclComm { lib, raw };

    let op = config.op;
    let dtype = config.dtype;
    let mut rows = Vec::new();
    for &size in &config.sizes {
        let count = (size / dtype.size() as u64) as usize;
        let (ctx, _) = plan(op, comm, count, dtype, config.root);
        if ctx.shape.send_count == 0 || ctx.shape.recv_count == 0 {
            continue;
        }
        let elem = dtype.size();
        let mut host_words = words_for(ctx.shape.work_count * elem);
        let host: &mut [u8] =
            &mut bytemuck::cast_slice_mut(&mut host_words)[..ctx.shape.work_count * elem];
        let send_range = ctx.bytes(ctx.shape.send_at..ctx.shape.send_at + ctx.shape.send_count);
        let rank = comm.rank;
        crate::dtype::fill(dtype, &mut host[send_range.clone()], |i| input(rank, i));
        let mut work = stream
            .alloc_zeros::<u8>(host.len())
            .map_err(driver("allocating"))?;
        let mut send = stream
            .alloc_zeros::<u8>(send_range.len())
            .map_err(driver("allocating"))?;
        stream
            .memcpy_htod(&host[send_range.clone()], &mut send)
            .map_err(driver("copying to the GPU"))?;
        let work_ptr = work.device_ptr(&stream).0;
        let send_ptr = send.device_ptr(&stream).0;

        let mut timings = [Timing::default(); 2];
        let mut latency = measure::LatencyRecorder::new();
        for (mode, in_place) in [false, true].into_iter().enumerate() {
            let source = if in_place {
                work_ptr + send_range.start as u64
            } else {
                send_ptr
            };
            let target = work_ptr + ctx.bytes(ctx.shape.recv_at..ctx.shape.recv_at).start as u64;
            let upload = |work: &mut cudarc::driver::CudaSlice<u8>, host: &[u8]| {
                let mut view = work.slice_mut(send_range.clone());
                stream
                    .memcpy_htod(&host[send_range.clone()], &mut view)
                    .map_err(driver("copying to the GPU"))
            };
            upload(&mut work, host)?;
            for _ in 0..config.warmup {
                nccl.launch(&ctx, op.name(), source, target, config, &stream)?;
            }
            stream.synchronize().map_err(driver("synchronising"))?;
            comm.barrier()?;
            let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
            let mut marks = Vec::with_capacity(config.iters + 1);
            marks.push(
                stream
                    .record_event(flags)
                    .map_err(driver("recording an event"))?,
            );
            for _ in 0..config.iters {
                nccl.launch(&ctx, op.name(), source, target, config, &stream)?;
                marks.push(
                    stream
                        .record_event(flags)
                        .map_err(driver("recording an event"))?,
                );
            }
            marks
                .last()
                .expect("at least one mark")
                .synchronize()
                .map_err(driver("synchronising"))?;
            let mut total_ms = 0.0f64;
            for pair in marks.windows(2) {
                let ms = pair[0]
                    .elapsed_ms(&pair[1])
                    .map_err(driver("reading an event"))? as f64;
                total_ms += ms;
                if !in_place {
                    latency.record(std::time::Duration::from_secs_f64(ms / 1e3));
                }
            }
            let mut wrong = 0;
            if config.check {
                upload(&mut work, host)?;
                nccl.launch(&ctx, op.name(), source, target, config, &stream)?;
                let mut result = vec![0u64; host_words_len(&ctx)];
                let result_bytes: &mut [u8] =
                    &mut bytemuck::cast_slice_mut(&mut result)[..ctx.shape.work_count * elem];
                stream
                    .memcpy_dtoh(&work, result_bytes)
                    .map_err(driver("copying from the GPU"))?;
                stream.synchronize().map_err(driver("synchronising"))?;
                wrong = count_wrong(op, &ctx, dtype, config.redop, result_bytes);
            }
            timings[mode] = Timing {
                time_us: total_ms * 1e3 / config.iters.max(1) as f64,
                wrong,
                ..Timing::default()
            };
        }
        let row = summarize(comm, op, &ctx, config, timings, &latency)?;
        on_row(&row);
        rows.push(row);
    }
    drop(nccl);
    Ok(rows)
}

/// The node-local rank launchers export (torchrun, Slurm, Open MPI), to pick a GPU.
fn local_rank() -> Option<usize> {
    [
        "LOCAL_RANK",
        "SLURM_LOCALID",
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
    ]
    .iter()
    .find_map(|k| std::env::var(k).ok()?.parse().ok())
}

fn host_words_len(ctx: &Ctx) -> usize {
    (ctx.shape.work_count * ctx.elem).div_ceil(8)
}

/// An NCCL communicator, destroyed on drop.
struct NcclComm<'a> {
    lib: &'a NcclLib,
    raw: RawComm,
}

impl Drop for NcclComm<'_> {
    fn drop(&mut self) {
        // SAFETY: `raw` came from ncclCommInitRank and is destroyed once.
        unsafe { (self.lib.comm_destroy)(self.raw) };
    }
}

impl NcclComm<'_> {
    /// Enqueues one collective on `stream`; buffers follow the descriptor's layout.
    fn launch(
        &self,
        ctx: &Ctx,
        name: &str,
        source: u64,
        target: u64,
        config: &RunConfig,
        stream: &Arc<CudaStream>,
    ) -> Result<(), CollError> {
        let lib = self.lib;
        let (send, recv) = (source as *const c_void, target as *mut c_void);
        let s = stream.cu_stream() as RawStream;
        let dtype = nccl_dtype(config.dtype);
        let redop = nccl_redop(config.redop);
        let root = config.root as c_int;
        let shape = ctx.shape;
        // SAFETY: pointers are device allocations sized by the descriptor's shape; NCCL only
        // enqueues work on `stream`.
        unsafe {
            let code = match name {
                "all_reduce" => {
                    (lib.all_reduce)(send, recv, shape.recv_count, dtype, redop, self.raw, s)
                }
                "all_gather" => (lib.all_gather)(send, recv, shape.send_count, dtype, self.raw, s),
                "reduce_scatter" => {
                    (lib.reduce_scatter)(send, recv, shape.recv_count, dtype, redop, self.raw, s)
                }
                "broadcast" => {
                    (lib.broadcast)(send, recv, shape.recv_count, dtype, root, self.raw, s)
                }
                "reduce" => (lib.reduce)(
                    send,
                    recv,
                    shape.recv_count,
                    dtype,
                    redop,
                    root,
                    self.raw,
                    s,
                ),
                "alltoall" | "sendrecv" => {
                    lib.check("ncclGroupStart", (lib.group_start)())?;
                    let block = if name == "alltoall" {
                        shape.send_count / ctx.world
                    } else {
                        shape.send_count
                    };
                    let bytes = (block * ctx.elem) as u64;
                    let peers: Vec<(usize, usize)> = if name == "alltoall" {
                        (0..ctx.world).map(|p| (p, p)).collect()
                    } else {
                        vec![(ctx.next(), ctx.prev())]
                    };
                    for (index, (to, from)) in peers.into_iter().enumerate() {
                        let offset = if name == "alltoall" {
                            index as u64 * bytes
                        } else {
                            0
                        };
                        lib.check(
                            "ncclSend",
                            (lib.send)(
                                (source
                                    + if name == "alltoall" {
                                        to as u64 * bytes
                                    } else {
                                        0
                                    }) as *const c_void,
                                block,
                                dtype,
                                to as c_int,
                                self.raw,
                                s,
                            ),
                        )?;
                        lib.check(
                            "ncclRecv",
                            (lib.recv)(
                                (target + offset) as *mut c_void,
                                block,
                                dtype,
                                from as c_int,
                                self.raw,
                                s,
                            ),
                        )?;
                    }
                    (lib.group_end)()
                }
                other => {
                    return Err(CollError::Invalid(format!(
                        "the nccl backend has no '{other}'"
                    )))
                }
            };
            lib.check(name, code)
        }
    }
}
