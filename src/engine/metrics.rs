//! The engine's side of the Prometheus metrics: gather the figures after a reconcile pass,
//! render them (`crate::metrics`), write the textfile and keep the text for `/metrics`.

use super::Engine;
use crate::metadb;
use crate::metrics::{self, PassFigures, Snapshot};

impl Engine {
    /// Gather, render and publish the metrics, when `[metrics]` (or the HTTP listener's
    /// `/metrics`) wants them. Failures are logged; the previous file stays.
    pub(super) fn publish_metrics(&mut self) {
        if !self.config.metrics_wanted() {
            return;
        }
        let db = match self.conn.current() {
            Some(c) => match metadb::metrics::figures(&mut c.db) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the metrics' figures");
                    self.lost(&e);
                    None
                }
            },
            None => None,
        };
        let pass = self.last_pass_at.map(|(at, seconds)| PassFigures {
            seconds,
            queries: self.last_pass.queries,
            backfills: u64::try_from(self.last_pass.backfills).unwrap_or(u64::MAX),
            at: at.timestamp(),
        });
        let count = |n: Result<Vec<String>, crate::spool::SpoolError>| {
            n.map(|v| u64::try_from(v.len()).unwrap_or(u64::MAX))
                .unwrap_or(0)
        };
        let snapshot = Snapshot {
            db,
            pass,
            passes: self.passes,
            spool_incoming: count(self.spool.incoming()),
            spool_active: count(self.spool.claimed()),
            spool_deferred: u64::try_from(self.guards.deferred_total()).unwrap_or(u64::MAX),
            denials_suppressed: self.guards.denials_suppressed,
        };
        let text = match metrics::render(&snapshot) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot render the metrics");
                return;
            }
        };
        if let Some(path) = &self.config.metrics.textfile {
            if let Err(e) = metrics::write_textfile(path, &text) {
                tracing::warn!(error = %e, "metrics textfile not written");
            }
        }
        if let Ok(mut published) = self.metrics.lock() {
            *published = Some(text);
        }
    }
}
