//! Always-on deterministic mutation fuzzing: mutates valid seed streams with
//! a seeded RNG and runs the shared harness on each input (no panics, chunked
//! decoding == whole decoding, decoded frames round-trip, host session output
//! always valid). Bounded by an input count and a wall-clock budget.
//!
//! `USBREDIR_FUZZ_ITERS` and `USBREDIR_FUZZ_SECS` override the bounds.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod harness;

use std::time::{Duration, Instant};

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Values that hit boundaries of type numbers, lengths and limits.
const INTERESTING_U32: [u32; 16] = [
    0,
    1,
    4,
    8,
    10,
    64,
    68,
    100,
    101,
    104,
    0xffff,
    0x1_0000,
    0x0800_0000,
    0x0800_0001,
    0x0800_0400,
    u32::MAX,
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], input: &mut Vec<u8>) {
    let rounds = 1 + rng.below(6);
    for _ in 0..rounds {
        let len = input.len();
        match rng.below(10) {
            0 | 1 => {
                // Flip a bit (mostly in the stream, sometimes in the config prefix).
                if len > 0 {
                    let i = rng.below(len);
                    input[i] ^= 1 << rng.below(8);
                }
            }
            2 => {
                if len > 0 {
                    let i = rng.below(len);
                    input[i] = rng.next() as u8;
                }
            }
            3 => {
                // Overwrite an aligned u32 (type, length, id, fields).
                if len >= 4 {
                    let i = rng.below(len - 3) & !3;
                    let v = INTERESTING_U32[rng.below(INTERESTING_U32.len())];
                    input[i..i + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
            4 => {
                // Delete a range.
                if len > 0 {
                    let i = rng.below(len);
                    let n = 1 + rng.below((len - i).min(32));
                    input.drain(i..i + n);
                }
            }
            5 => {
                // Insert random bytes.
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                input.splice(i..i, bytes);
            }
            6 => {
                // Duplicate a range (repeats packets).
                if len > 0 {
                    let i = rng.below(len);
                    let n = 1 + rng.below((len - i).min(64));
                    let copy = input[i..i + n].to_vec();
                    let at = rng.below(len + 1);
                    input.splice(at..at, copy);
                }
            }
            7 => {
                // Splice in part of another seed's stream.
                let other = &seeds[rng.below(seeds.len())];
                if other.len() > 9 {
                    let i = 9 + rng.below(other.len() - 9);
                    let n = 1 + rng.below((other.len() - i).min(128));
                    let at = rng.below(len + 1);
                    input.splice(at..at, other[i..i + n].iter().copied());
                }
            }
            8 => {
                // Truncate.
                if len > 0 {
                    input.truncate(rng.below(len));
                }
            }
            _ => {
                // Change the role / mode / caps prefix.
                if len >= 9 {
                    let i = rng.below(9);
                    input[i] = rng.next() as u8;
                }
            }
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn seeds_pass_the_harness() {
    let seeds = harness::seeds();
    assert!(seeds.len() >= 20);
    for s in &seeds {
        harness::run(s);
        if s[0] & 0x80 == 0 {
            let (ok, errors) = harness::decode_counts(s);
            assert_eq!(errors, 0, "seed does not decode cleanly");
            assert!(ok >= 12, "seed decodes to only {ok} packets");
        } else {
            let ours = u32::from_le_bytes(s[1..5].try_into().unwrap());
            let events =
                harness::drive_host_session(s[0], usbredir::Caps::from_bits(ours), &s[9..]);
            assert!(events >= 14, "session seed yields only {events} events");
        }
    }
}

#[test]
fn deterministic_mutation_fuzz() {
    let iters: u64 = env_or("USBREDIR_FUZZ_ITERS", 300_000);
    let budget = Duration::from_secs_f64(env_or("USBREDIR_FUZZ_SECS", 4.0));
    let seeds = harness::seeds();
    let mut rng = Rng(0x5EED_0B5E_55ED_0001);
    let start = Instant::now();
    let mut done = 0u64;
    let mut input = Vec::new();
    while done < iters {
        if done % 256 == 0 && start.elapsed() > budget {
            break;
        }
        input.clear();
        input.extend_from_slice(&seeds[rng.below(seeds.len())]);
        mutate(&mut rng, &seeds, &mut input);
        harness::run(&input);
        done += 1;
    }
    eprintln!("usbredir fuzz loop: {done} inputs in {:?}", start.elapsed());
    assert!(done >= 1000, "fuzz loop ran only {done} inputs");
}

#[test]
#[ignore = "writes the cargo-fuzz seed corpus to fuzz/seeds; run after changing the harness"]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, s) in harness::seeds().iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), s).unwrap();
    }
}
