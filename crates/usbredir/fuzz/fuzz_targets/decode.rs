//! libFuzzer target: arbitrary and mutated usbredir byte streams through the
//! decoder (both roles, fresh and negotiated) and the host session. The
//! oracles live in the shared harness, also run by `tests/fuzz_loop.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/harness/mod.rs"]
mod harness;

fuzz_target!(|data: &[u8]| {
    harness::run(data);
});
