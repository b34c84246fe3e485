//! Time estimates (`crate::estimate`) for `status`, the HTTP detail and dry runs: gather the
//! origin DAG's recent run durations and the backfill's progress, and let the pure rule decide.
//! The durations of a DAG are read at most once per [`DURATIONS_TTL`] per connection: a detail
//! page refreshes every few seconds, and with many backfills of one DAG the read sorts the
//! runs of all its copies.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::Connected;
use crate::config::Config;
use crate::estimate::{self, Estimate, Progress};
use crate::metadb::airflow::{Airflow, AirflowSchema};
use crate::metadb::store::{BackfillRow, NewBackfill};
use crate::metadb::{DbError, MetaDb};

/// How long the recent run durations of a DAG are reused (an estimate is a rough figure; a
/// finished run changes it a little).
pub(super) const DURATIONS_TTL: Duration = Duration::from_secs(60);

/// Most DAGs whose durations are kept; the cache is emptied when it is full.
const MAX_DAGS: usize = 1024;

/// The recent success durations of origin DAGs, as read over one connection.
#[derive(Debug, Default)]
pub(super) struct RecentDurations {
    by_dag: HashMap<String, (Instant, Vec<f64>)>,
}

impl RecentDurations {
    /// The durations of `dag_id`'s (and its copies') latest successful runs: kept ones when
    /// younger than [`DURATIONS_TTL`], else read.
    fn of(
        &mut self,
        db: &mut MetaDb,
        schema: &AirflowSchema,
        dag_id: &str,
    ) -> Result<Vec<f64>, DbError> {
        if let Some((at, durations)) = self.by_dag.get(dag_id) {
            if at.elapsed() < DURATIONS_TTL {
                return Ok(durations.clone());
            }
        }
        let durations =
            Airflow::new(db, schema).recent_success_durations(dag_id, estimate::ORIGIN_RUNS)?;
        if self.by_dag.len() >= MAX_DAGS {
            self.by_dag.clear();
        }
        self.by_dag
            .insert(dag_id.to_owned(), (Instant::now(), durations.clone()));
        Ok(durations)
    }
}

/// How many runs of a backfill may run at once: its `max_active_runs`, within the run budgets.
fn parallel(max_active_runs: u32, config: &Config) -> u32 {
    [
        Some(max_active_runs),
        config.throttle.max_running_backfill_runs,
        config.throttle.max_running_per_dag,
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(1)
}

/// The estimate of an unfinished backfill (none for a finished or deleted one).
pub(super) fn estimate_of(
    c: &mut Connected,
    b: &BackfillRow,
    config: &Config,
) -> Result<Option<Estimate>, DbError> {
    if b.state.is_terminal() || b.deleted {
        return Ok(None);
    }
    let finished = b.progress.succeeded + b.progress.failed;
    let progress = Progress {
        finished,
        left: b.progress.total.saturating_sub(finished),
        first_start: b.run_start,
    };
    let durations = c.durations.of(&mut c.db, &c.schema, &b.dag_id)?;
    Ok(estimate::estimate(
        &b.dag_id,
        &durations,
        progress,
        parallel(b.max_active_runs, config),
        Utc::now(),
    ))
}

/// The estimate a dry run reports for the backfill it would create (the origin's durations
/// read over the connection `c`).
pub(super) fn dry_run_estimate(
    c: &mut Connected,
    config: &Config,
    new: &NewBackfill,
) -> Result<Option<Estimate>, DbError> {
    let durations = c.durations.of(&mut c.db, &c.schema, &new.dag_id)?;
    let progress = Progress {
        finished: 0,
        left: u32::try_from(new.logical_dates.len()).unwrap_or(u32::MAX),
        first_start: None,
    };
    Ok(estimate::estimate(
        &new.dag_id,
        &durations,
        progress,
        parallel(new.max_active_runs, config),
        Utc::now(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_is_the_smallest_of_max_active_runs_and_the_budgets() {
        let mut config = Config::parse(
            std::path::Path::new("t.toml"),
            "[airflow]\nhome = \"/opt/airflow\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parallel(4, &config), 4);
        config.throttle.max_running_backfill_runs = Some(2);
        assert_eq!(parallel(4, &config), 2);
        config.throttle.max_running_per_dag = Some(1);
        assert_eq!(parallel(4, &config), 1);
        assert_eq!(parallel(0, &config), 0);
    }
}
