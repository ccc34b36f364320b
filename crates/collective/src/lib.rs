//! Collective operations with nccl-tests semantics over N ranks: rendezvous, a full TCP
//! mesh, ring/chain schedules pipelined in segments, and one harness that times and checks
//! every operation. Runs on any CPU node, the way Gloo does.

pub mod abort;
mod comm;
pub mod dtype;
mod error;
mod harness;
pub mod nccl;
pub mod ops;
pub mod rendezvous;
mod schedule;

pub use comm::Communicator;
pub use dtype::{reduce_into, Dtype, RedOp};
pub use error::CollError;
pub use harness::{
    avg_busbw, plan, plan_group, run, sum_over_ranks, sweep, Row, RunConfig, Timing,
};
pub use rendezvous::{Bootstrap, BootstrapFlags};
pub use schedule::{chunk, Action, Builder, Schedule};

use std::net::TcpListener;
use std::time::Duration;

/// Starts `world` ranks as threads in this process over loopback and runs `body` on each
/// (like nccl-tests' `-g N` on one node). Results come back in rank order.
pub fn run_local<T: Send>(
    world: usize,
    timeout: Duration,
    body: impl Fn(&mut Communicator) -> Result<T, CollError> + Sync,
) -> Result<Vec<T>, CollError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| CollError::Io {
        context: "binding a loopback port".into(),
        source: e,
    })?;
    let master = listener
        .local_addr()
        .map_err(|e| CollError::Io {
            context: "reading the loopback port".into(),
            source: e,
        })?
        .to_string();
    let mut listener = Some(listener);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..world)
            .map(|rank| {
                let boot = Bootstrap {
                    rank,
                    world,
                    master: master.clone(),
                    source: "local",
                };
                let own = if rank == 0 { listener.take() } else { None };
                let body = &body;
                scope.spawn(move || {
                    // In-process ranks on loopback: nothing for an operator to act on.
                    let quiet: measure::Log = std::sync::Arc::new(|_: &str| {});
                    let mut comm = Communicator::join(&boot, timeout, own, None, &quiet)?;
                    body(&mut comm)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(CollError::Invalid("a rank thread panicked".into())))
            })
            .collect()
    })
}
