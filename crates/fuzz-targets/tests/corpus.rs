//! Every fuzz target over the in-tree corpus (`fuzz/corpus/<target>/`: the seeds plus
//! whatever the fuzzer found and was kept), then over a fixed set of mutations of it. On
//! stable, deterministic, a second or two: CI's share of the fuzzing. `scripts/fuzz` runs
//! the same targets under libFuzzer for as long as it is given.
//! `NODELINK_WRITE_SEEDS=1` (re)writes the seed files into the corpus.

use fuzz_targets::{Target, TARGETS};
use std::path::PathBuf;

/// Mutated inputs per target.
const MUTATIONS: usize = 4000;

fn corpus_dir(target: &Target) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target.name)
}

/// A seed's file name: its FNV-1a hash, as libFuzzer names corpus files by content.
fn file_name(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    format!("seed-{hash:016x}")
}

fn corpus(target: &Target) -> Vec<Vec<u8>> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (NODELINK_WRITE_SEEDS=1 writes it)", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// Runs `input` through the target; a panic fails the test with the input in hex, so
/// it can be added to the corpus and fixed.
fn run_checked(target: &Target, input: &[u8]) -> bool {
    match std::panic::catch_unwind(|| (target.run)(input)) {
        Ok(accepted) => accepted,
        Err(_) => {
            let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
            panic!("{} panicked on {} bytes: {hex}", target.name, input.len());
        }
    }
}

#[test]
fn every_seed_is_accepted_and_in_the_corpus() {
    let write = std::env::var_os("NODELINK_WRITE_SEEDS").is_some();
    for target in TARGETS {
        let dir = corpus_dir(target);
        for seed in (target.seeds)() {
            assert!(
                run_checked(target, &seed),
                "{}: seed {:?} is refused; fix it in seeds.rs",
                target.name,
                String::from_utf8_lossy(&seed)
            );
            let path = dir.join(file_name(&seed));
            if write {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &seed).unwrap();
            }
            assert!(
                path.exists(),
                "{} is missing: run NODELINK_WRITE_SEEDS=1 cargo test -p fuzz-targets",
                path.display()
            );
        }
    }
}

/// xorshift64*: a fixed sequence, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation of `input`, the kinds libFuzzer starts with: bit flips, boundary bytes,
/// truncation, duplication, insertion, a length field rewritten, a splice with another.
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(3) {
        let at = rng.below(out.len());
        match rng.below(8) {
            0 if !out.is_empty() => out[at] ^= 1 << rng.below(8),
            1 if !out.is_empty() => out[at] = [0, 0xff, 0x7f, 0x80, b'"', b'{', b'9'][rng.below(7)],
            2 => out.truncate(at),
            3 if !out.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                let chunk = out[at..end].to_vec();
                out.splice(at..at, chunk);
            }
            4 => {
                let junk: Vec<u8> = (0..=rng.below(8)).map(|_| rng.next() as u8).collect();
                out.splice(at..at, junk);
            }
            5 if out.len() >= 11 => {
                // A frame's length field, at the control and rendezvous bounds.
                let value = [0u32, 1, 0x10000, 0x10001, 0x40000, 0x40001, u32::MAX][rng.below(7)];
                out[7..11].copy_from_slice(&value.to_be_bytes());
            }
            6 => {
                let cut = rng.below(other.len());
                out.truncate(at);
                out.extend_from_slice(&other[cut..]);
            }
            _ => {
                // Digits grow numbers past their type's range.
                let digits: Vec<u8> = (0..=rng.below(24)).map(|_| b'9').collect();
                out.splice(at..at, digits);
            }
        }
    }
    out
}

#[test]
fn no_target_panics_on_the_corpus_or_its_mutations() {
    for (index, target) in TARGETS.iter().enumerate() {
        let inputs = corpus(target);
        assert!(!inputs.is_empty(), "{}: empty corpus", target.name);
        for input in &inputs {
            run_checked(target, input);
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ index as u64);
        let mut accepted = 0;
        for n in 0..MUTATIONS {
            let base = &inputs[n % inputs.len()];
            let other = &inputs[rng.below(inputs.len())];
            let input = mutate(&mut rng, base, other);
            accepted += run_checked(target, &input) as usize;
        }
        // The mutations must reach past the first check, or they test nothing.
        assert!(
            accepted > 0,
            "{}: no mutation was accepted; the mutator never gets past the first check",
            target.name
        );
    }
}

#[test]
fn the_cargo_fuzz_crate_has_one_binary_per_target() {
    let manifest = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/Cargo.toml"),
    )
    .unwrap();
    for target in TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{}\"", target.name)),
            "fuzz/Cargo.toml has no [[bin]] {}",
            target.name
        );
    }
}
