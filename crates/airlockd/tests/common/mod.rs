//! What airlockd's tests share beyond the kit: the broker binary of this package.
#![allow(dead_code, unused_imports)]

pub use airlock_testkit::artifacts::artifacts;
pub use airlock_testkit::audit::check_invariants;
pub use airlock_testkit::broker::{ADMIN_TOKEN, TERMINAL2_TOKEN, TERMINAL_TOKEN};
pub use airlock_testkit::{Broker, BrokerConfig};
pub use anyhow::{ensure, Context, Result};

/// The demo guest's default test broker configuration (see [`BrokerConfig::new`]).
pub fn config() -> Result<BrokerConfig> {
    Ok(BrokerConfig::new(&artifacts()?.guest))
}

/// Starts this package's `airlockd` with `config`.
pub fn start(config: BrokerConfig) -> Result<Broker> {
    Broker::start(std::path::Path::new(env!("CARGO_BIN_EXE_airlockd")), config)
}

/// A broker with one desktop, clean.
pub async fn one_clean_desktop() -> Result<Broker> {
    let b = start(BrokerConfig {
        size: 1,
        ..config()?
    })?;
    b.wait_clean(1, std::time::Duration::from_secs(240)).await?;
    Ok(b)
}
