//! Airflow 3.2+'s `allowed_run_types` DAG argument: the run types a DAG's author allows. Airflow's
//! native backfill refuses a DAG whose list leaves out `backfill` ("does not allow backfill
//! runs"); backfilld, whose copies stand in for a backfill, refuses it the same way. Pure: reads
//! the serialized DAG (`serialized_dag.data -> dag`), where Airflow stores the list (sorted
//! values) or nothing.

use serde_json::Value;

/// Airflow's value of `DagRunType.BACKFILL_JOB`.
const BACKFILL_RUN_TYPE: &str = "backfill";

/// Why the DAG may not be backfilled, when its `allowed_run_types` leaves out backfill runs;
/// `None` when it allows them (no list, as on Airflow 2 and 3.1, means every type).
pub fn backfill_refusal(dag_id: &str, serialized_dag: &Value) -> Option<String> {
    let allowed = serialized_dag.get("allowed_run_types")?.as_array()?;
    if allowed
        .iter()
        .any(|t| t.as_str() == Some(BACKFILL_RUN_TYPE))
    {
        return None;
    }
    let names: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
    Some(format!(
        "DAG {dag_id:?} does not allow backfill runs (its allowed_run_types are {names:?}); \
         Airflow refuses to backfill it too"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_list_without_backfill_is_refused() {
        // As Airflow 3.3 serializes allowed_run_types=["scheduled", "manual"].
        let dag = json!({"dag_id": "d", "allowed_run_types": ["manual", "scheduled"]});
        let reason = backfill_refusal("d", &dag).unwrap_or_default();
        assert!(reason.contains("does not allow backfill runs"), "{reason}");
        assert!(reason.contains("\"manual\", \"scheduled\""), "{reason}");
    }

    #[test]
    fn no_list_or_a_list_with_backfill_is_allowed() {
        assert_eq!(backfill_refusal("d", &json!({"dag_id": "d"})), None);
        assert_eq!(
            backfill_refusal("d", &json!({"allowed_run_types": null})),
            None
        );
        assert_eq!(
            backfill_refusal(
                "d",
                &json!({"allowed_run_types": ["backfill", "scheduled"]})
            ),
            None
        );
    }
}
