//! How a library names the setting that fixes an error: "the NAME setting". Libraries
//! never know which tool runs them, so they never name a flag; each tool renders its
//! error lines through [`name_flags`] with its own table, and a hint names that tool's
//! flag (`--listen` in kvxfer, `--port` in linkbench), never another tool's.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Setting {
    /// Where a listener listens.
    ListenPort,
    GidIndex,
    SendQueueDepth,
    /// Rank 0's rendezvous address.
    Master,
    Rank,
    WorldSize,
    /// Plain TCP instead of RDMA or NCCL.
    TcpTransport,
    NcclLibrary,
    PoolBlocks,
    BlockSize,
    KvDtype,
    Model,
    KvLayout,
    PrefillAddress,
    DpRank,
    ExpectedGpus,
    Interface,
    /// What a cluster must measure (netcheck's expectations).
    Expectations,
    InputLength,
    OutputLength,
    Concurrency,
}

impl Setting {
    pub const ALL: [Setting; 21] = [
        Setting::ListenPort,
        Setting::GidIndex,
        Setting::SendQueueDepth,
        Setting::Master,
        Setting::Rank,
        Setting::WorldSize,
        Setting::TcpTransport,
        Setting::NcclLibrary,
        Setting::PoolBlocks,
        Setting::BlockSize,
        Setting::KvDtype,
        Setting::Model,
        Setting::KvLayout,
        Setting::PrefillAddress,
        Setting::DpRank,
        Setting::ExpectedGpus,
        Setting::Interface,
        Setting::Expectations,
        Setting::InputLength,
        Setting::OutputLength,
        Setting::Concurrency,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Setting::ListenPort => "listening port",
            Setting::GidIndex => "GID index",
            Setting::SendQueueDepth => "send queue depth",
            Setting::Master => "master address",
            Setting::Rank => "rank",
            Setting::WorldSize => "world size",
            Setting::TcpTransport => "TCP transport",
            Setting::NcclLibrary => "NCCL library",
            Setting::PoolBlocks => "pool blocks",
            Setting::BlockSize => "block size",
            Setting::KvDtype => "KV dtype",
            Setting::Model => "model",
            Setting::KvLayout => "KV layout",
            Setting::PrefillAddress => "prefill address",
            Setting::DpRank => "DP rank",
            Setting::ExpectedGpus => "expected GPUs",
            Setting::Interface => "interface",
            Setting::Expectations => "cluster expectations",
            Setting::InputLength => "input length",
            Setting::OutputLength => "output length",
            Setting::Concurrency => "concurrency",
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the {} setting", self.name())
    }
}

/// `text` with each setting in `flags` named by its flag ("raise the pool blocks
/// setting" -> "raise --num-blocks").
pub fn name_flags(text: &str, flags: &[(Setting, &str)]) -> String {
    flags
        .iter()
        .fold(text.to_string(), |text, (setting, flag)| {
            text.replace(&setting.to_string(), flag)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_names_its_own_flag_for_a_setting() {
        let text = format!(
            "port 80 is taken: set {} to a free one",
            Setting::ListenPort
        );
        assert_eq!(
            text,
            "port 80 is taken: set the listening port setting to a free one"
        );
        assert_eq!(
            name_flags(&text, &[(Setting::ListenPort, "--listen")]),
            "port 80 is taken: set --listen to a free one"
        );
        assert_eq!(
            name_flags(&text, &[(Setting::ListenPort, "--port")]),
            "port 80 is taken: set --port to a free one"
        );
        // Settings a tool has no flag for keep their name.
        assert_eq!(name_flags(&text, &[]), text);
    }

    #[test]
    fn every_setting_has_its_own_name() {
        let mut names: Vec<&str> = Setting::ALL.iter().map(|s| s.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Setting::ALL.len());
    }
}
