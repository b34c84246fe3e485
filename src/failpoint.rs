//! Named crash points for tests: with `BACKFILLD_FAILPOINTS=name[,name...]` in its environment
//! the daemon stops dead at those points (logging first), so a test can `kill -9` it in a
//! precise window and check that a restart recovers. Unset in production: the check is one
//! environment lookup.

/// The accept transaction committed; the DAG copy is not written and the file not moved yet.
pub const AFTER_ACCEPT: &str = "after_accept";

/// A seed import job committed a batch; the next one is not started.
pub const AFTER_IMPORT_BATCH: &str = "after_import_batch";

/// Whether the named failpoint is armed.
pub fn armed(name: &str) -> bool {
    std::env::var("BACKFILLD_FAILPOINTS")
        .map(|v| v.split(',').any(|n| n.trim() == name))
        .unwrap_or(false)
}

/// Park the calling thread forever if the failpoint is armed (the test then kills the process).
pub fn hang_if_armed(name: &str) {
    if armed(name) {
        tracing::warn!(failpoint = name, "failpoint reached: parking until killed");
        loop {
            std::thread::park();
        }
    }
}
