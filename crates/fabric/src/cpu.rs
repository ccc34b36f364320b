//! CPU utilization as iperf3 reports it: user and system CPU time over wall time, in
//! percent of one core. Threads measure themselves so a server's figure covers only the
//! session it reports on, not other clients served at the same time.

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// CPU time over wall time of one side, in percent of one core (may exceed 100).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct CpuUsage {
    pub user_pct: f64,
    pub system_pct: f64,
    pub total_pct: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Process,
    Thread,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTime {
    pub user: Duration,
    pub system: Duration,
}

impl std::ops::Add for CpuTime {
    type Output = CpuTime;
    fn add(self, other: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user + other.user,
            system: self.system + other.system,
        }
    }
}

impl CpuTime {
    pub fn now(scope: Scope) -> CpuTime {
        let who = match scope {
            Scope::Process => libc::RUSAGE_SELF,
            Scope::Thread => libc::RUSAGE_THREAD,
        };
        // SAFETY: rusage is plain old data; getrusage fills it and only reads `who`.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(who, &mut usage) } != 0 {
            return CpuTime::default();
        }
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        CpuTime {
            user: tv(usage.ru_utime),
            system: tv(usage.ru_stime),
        }
    }

    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }

    pub fn usage(self, wall: Duration) -> CpuUsage {
        let wall = wall.as_secs_f64();
        if wall <= 0.0 {
            return CpuUsage::default();
        }
        let user_pct = self.user.as_secs_f64() / wall * 100.0;
        let system_pct = self.system.as_secs_f64() / wall * 100.0;
        CpuUsage {
            user_pct,
            system_pct,
            total_pct: user_pct + system_pct,
        }
    }
}

/// Measures CPU over a span of wall time.
pub struct CpuMeter {
    scope: Scope,
    wall: Instant,
    start: CpuTime,
}

impl CpuMeter {
    pub fn start(scope: Scope) -> Self {
        Self {
            scope,
            wall: Instant::now(),
            start: CpuTime::now(scope),
        }
    }

    /// CPU used since `start` (by this thread, for [`Scope::Thread`]).
    pub fn used(&self) -> CpuTime {
        CpuTime::now(self.scope).since(self.start)
    }

    pub fn wall(&self) -> Duration {
        self.wall.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_thread_shows_cpu() {
        let meter = CpuMeter::start(Scope::Thread);
        let mut x = 0u64;
        while meter.wall() < Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let usage = meter.used().usage(meter.wall());
        assert!(
            usage.total_pct > 20.0 && usage.total_pct < 150.0,
            "{usage:?} {x}"
        );
    }
}
