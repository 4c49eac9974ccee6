use airlock_core::{DesktopId, TransitionError};

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error; check the state directory's disk space and permissions")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database schema migration failed; restore a backup or remove the state directory to start afresh")]
    Migration(#[from] rusqlite_migration::Error),
    #[error("no clean desktop is free")]
    NoFreeDesktop,
    #[error("the terminal already holds {held} active lease(s), its limit is {limit}")]
    LeaseLimit { held: u32, limit: u32 },
    #[error("no active lease with that id for this terminal")]
    LeaseNotFound,
    #[error("unknown desktop {0}")]
    UnknownDesktop(DesktopId),
    #[error("desktop {desktop}: state change refused")]
    Transition {
        desktop: DesktopId,
        #[source]
        source: TransitionError,
    },
    #[error("the database holds a value this version does not understand ({0}); was it written by a newer airlockd?")]
    Corrupt(String),
}
