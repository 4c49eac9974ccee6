use rusqlite_migration::{Migrations, M};

/// Schema migrations, applied in order and recorded in SQLite's `user_version`.
/// Never edit a released migration: append a new one.
pub(crate) fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            r#"
CREATE TABLE desktops (
    id                TEXT PRIMARY KEY NOT NULL,
    state             TEXT NOT NULL CHECK (state IN
                        ('starting','clean','leased','dirty','resetting','broken')),
    since             INTEGER NOT NULL,
    reason            TEXT,
    resets            INTEGER NOT NULL DEFAULT 0,
    last_reset_ms     INTEGER,
    last_reset_method TEXT,
    generation        INTEGER NOT NULL DEFAULT 0,
    proof             TEXT,
    retired           INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE leases (
    id           TEXT PRIMARY KEY NOT NULL,
    desktop_id   TEXT NOT NULL REFERENCES desktops(id),
    terminal     TEXT NOT NULL,
    user         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    ended_at     INTEGER,
    end_reason   TEXT,
    CHECK ((ended_at IS NULL) = (end_reason IS NULL))
) STRICT;

-- One active lease per desktop, enforced by the database itself.
CREATE UNIQUE INDEX leases_one_active_per_desktop ON leases(desktop_id) WHERE ended_at IS NULL;
CREATE INDEX leases_active ON leases(ended_at) WHERE ended_at IS NULL;

CREATE TABLE audit (
    seq        INTEGER PRIMARY KEY NOT NULL,
    ts         INTEGER NOT NULL,
    action     TEXT NOT NULL,
    terminal   TEXT,
    user       TEXT,
    desktop_id TEXT,
    lease_id   TEXT,
    details    TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
) STRICT;

-- The audit log is append-only for this program; the hash chain catches anyone else.
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"#,
        ),
        // A desktop's state and its active lease cannot disagree: `leased` exactly when
        // one lease is active, and a lease starts only on a clean desktop.
        M::up(
            r#"
CREATE TRIGGER desktops_leased_has_one_lease BEFORE UPDATE OF state ON desktops
WHEN NEW.state = 'leased'
 AND (SELECT COUNT(*) FROM leases WHERE desktop_id = NEW.id AND ended_at IS NULL) != 1
BEGIN SELECT RAISE(ABORT, 'a leased desktop needs exactly one active lease'); END;
CREATE TRIGGER desktops_unleased_have_no_lease BEFORE UPDATE OF state ON desktops
WHEN NEW.state != 'leased'
 AND EXISTS (SELECT 1 FROM leases WHERE desktop_id = NEW.id AND ended_at IS NULL)
BEGIN SELECT RAISE(ABORT, 'a desktop with an active lease must be leased'); END;
CREATE TRIGGER leases_start_on_clean_desktops BEFORE INSERT ON leases
WHEN NEW.ended_at IS NULL
 AND (SELECT state FROM desktops WHERE id = NEW.desktop_id) IS NOT 'clean'
BEGIN SELECT RAISE(ABORT, 'a lease starts only on a clean desktop'); END;
"#,
        ),
        // 3: the indexes the audit and session searches need (airlock-store `reader`).
        // Single-column indexes keep the rowid (= `seq`) order within a value, so a
        // search by one of them pages newest first without sorting.
        M::up(
            r#"
CREATE INDEX IF NOT EXISTS audit_ts ON audit(ts);
CREATE INDEX IF NOT EXISTS audit_terminal ON audit(terminal);
CREATE INDEX IF NOT EXISTS audit_user ON audit(user);
CREATE INDEX IF NOT EXISTS audit_desktop ON audit(desktop_id);
CREATE INDEX IF NOT EXISTS audit_lease ON audit(lease_id);
CREATE INDEX IF NOT EXISTS audit_action ON audit(action);
CREATE INDEX IF NOT EXISTS leases_user ON leases(user, created_at);
CREATE INDEX IF NOT EXISTS leases_terminal ON leases(terminal, created_at);
CREATE INDEX IF NOT EXISTS leases_created ON leases(created_at);
"#,
        ),
        // Admins drain desktops (kept out of service, their lease runs to its end) and
        // return them; acquires skip drained desktops.
        M::up(
            r#"
ALTER TABLE desktops ADD COLUMN drained INTEGER NOT NULL DEFAULT 0 CHECK (drained IN (0, 1));
ALTER TABLE desktops ADD COLUMN drain_reason TEXT;
"#,
        ),
        // 5: the patient a lease's key images belong to, as the HIS gave it (JSON,
        // validated by the broker); set and replaced while the lease is active.
        M::up(
            r#"
CREATE TABLE lease_patients (
    lease_id TEXT PRIMARY KEY NOT NULL REFERENCES leases(id),
    context  TEXT NOT NULL,
    set_at   INTEGER NOT NULL
) STRICT;
"#,
        ),
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        super::migrations().validate().unwrap();
    }
}
