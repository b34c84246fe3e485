//! How the web UI words things for people: state names, times, and errors as a sentence
//! with the form field they are about. Pure functions of their inputs.

/// A state name (`awaiting_approval`) as a label (`Awaiting approval`).
pub fn state_label(state: &str) -> String {
    let spaced = state.replace('_', " ");
    let mut c = spaced.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// An RFC 3339 UTC time as shown: the date alone at midnight (`2024-02-01`), else the date
/// and time to the minute with `UTC` (`2024-02-01 06:30 UTC`); text that is no such time is
/// shown as it is.
pub fn short_time(ts: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(ts) {
        Ok(t) => {
            let t = t.with_timezone(&chrono::Utc);
            if t.time() == chrono::NaiveTime::MIN {
                t.format("%Y-%m-%d").to_string()
            } else {
                t.format("%Y-%m-%d %H:%M UTC").to_string()
            }
        }
        Err(_) => ts.to_owned(),
    }
}

/// Whether an RFC 3339 time is midnight UTC (a date, which no browser zone should shift).
pub fn is_midnight(ts: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(ts)
        .is_ok_and(|t| t.with_timezone(&chrono::Utc).time() == chrono::NaiveTime::MIN)
}

/// An error as the UI words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// One or two sentences for the banner.
    pub message: String,
    /// The create form's field it is about (its `name`), if any.
    pub field: Option<&'static str>,
    /// What to show next to that field.
    pub field_message: String,
}

/// The create form's fields an error can be about, as request keys (also their form names).
const FIELDS: [&str; 15] = [
    "dag_id",
    "start",
    "end",
    "description",
    "max_active_runs",
    "params",
    "scheduled_at",
    "delete_after_days",
    "tasks",
    "include_upstream",
    "include_downstream",
    "after",
    "priority",
    "reprocess",
    "notify",
];

/// The headline of a reason code and the field it is about.
fn headline(code: &str) -> (Option<&'static str>, Option<&'static str>) {
    match code {
        "start_after_end" => (Some("The end date is before the start date."), Some("end")),
        "max_active_runs_out_of_bounds" => (
            Some("That many runs at a time is not allowed."),
            Some("max_active_runs"),
        ),
        "params_not_table" => (Some("Params must be a JSON object."), Some("params")),
        "unknown_dag" => (Some("Airflow has no such DAG."), Some("dag_id")),
        "dag_deleted" => (
            Some("That DAG is no longer active in Airflow."),
            Some("dag_id"),
        ),
        "dag_not_serialized" => (
            Some("Airflow has not parsed that DAG yet; try again in a minute."),
            Some("dag_id"),
        ),
        "unsupported_schedule" | "backfill_not_allowed" => {
            (Some("That DAG cannot be backfilled."), Some("dag_id"))
        }
        "copy_id_too_long" => (Some("That DAG's id is too long to copy."), Some("dag_id")),
        "no_logical_dates" => (Some("The DAG has no run in that range."), Some("start")),
        "too_many_dates" => (Some("That range has too many dates."), Some("end")),
        "overlap" => (
            Some("Another active backfill of this DAG covers some of these dates."),
            Some("start"),
        ),
        "no_matching_task" => (Some("A task pattern matches no task."), Some("tasks")),
        "unknown_prerequisite" | "prerequisite_failed" => (
            Some("A backfill to wait for cannot be used."),
            Some("after"),
        ),
        "too_many_active_backfills" => (Some("You have too many unfinished backfills."), None),
        "missing_backfill_permission" | "missing_dag_edit" | "missing_dag_read" => {
            (Some("You are not allowed to do that."), None)
        }
        "not_an_approver" | "self_approval" => {
            (Some("You cannot approve or reject this backfill."), None)
        }
        "illegal_transition" => (Some("That is not possible in the backfill's state."), None),
        "unknown_backfill" => (Some("There is no such backfill."), None),
        _ => (None, None),
    }
}

/// `text` as a sentence: first letter upper case, ending in a full stop.
fn sentence(text: &str) -> String {
    let t = text.trim();
    let mut c = t.chars();
    let mut s: String = match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => return String::new(),
    };
    if !s.ends_with(['.', '!', '?']) {
        s.push('.');
    }
    s
}

/// The field a detail names first (`priority = 11 is out of bounds`, `missing field
/// `start``, `tasks pattern "[": ...`).
fn field_named(detail: &str) -> Option<&'static str> {
    let key = match detail.strip_prefix("missing field `") {
        Some(rest) => rest.split('`').next().unwrap_or_default(),
        None => detail
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .next()
            .unwrap_or_default(),
    };
    let field = FIELDS.into_iter().find(|f| *f == key)?;
    Some(match field {
        "include_upstream" | "include_downstream" => "tasks",
        f => f,
    })
}

/// An error (a reason code, if any, and its detail) as the UI words it: a headline sentence
/// for the code, then the detail as a sentence; the field it is about.
pub fn problem(code: Option<&str>, detail: &str) -> Problem {
    let (head, code_field) = code.map(headline).unwrap_or((None, None));
    let field = code_field.or_else(|| field_named(detail));
    let said = sentence(detail);
    let message = match head {
        Some(h) if said.is_empty() => h.to_owned(),
        Some(h) => format!("{h} {said}"),
        None if said.is_empty() => "Something went wrong.".to_owned(),
        None => said.clone(),
    };
    Problem {
        message,
        field,
        field_message: if said.is_empty() {
            head.unwrap_or_default().to_owned()
        } else {
            said
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_times() {
        assert_eq!(state_label("awaiting_approval"), "Awaiting approval");
        assert_eq!(state_label("success"), "Success");
        assert_eq!(state_label(""), "");
        for (ts, shown, midnight) in [
            ("2024-02-01T00:00:00Z", "2024-02-01", true),
            ("2024-02-01T06:30:15Z", "2024-02-01 06:30 UTC", false),
            ("2024-02-01T01:00:00+01:00", "2024-02-01", true),
            ("not a time", "not a time", false),
        ] {
            assert_eq!(short_time(ts), shown, "{ts}");
            assert_eq!(is_midnight(ts), midnight, "{ts}");
        }
    }

    #[test]
    fn errors_read_as_sentences_about_a_field() {
        let p = problem(
            Some("start_after_end"),
            "start 2024-02-03T00:00:00Z is after end 2024-02-01T00:00:00Z",
        );
        assert_eq!(
            p.message,
            "The end date is before the start date. Start 2024-02-03T00:00:00Z is after end 2024-02-01T00:00:00Z."
        );
        assert_eq!(p.field, Some("end"));
        assert!(!p.message.contains("start_after_end"));
        for (code, detail, field) in [
            (
                Some("invalid_value"),
                "priority = 11 is out of bounds",
                Some("priority"),
            ),
            (
                Some("missing_key"),
                "missing field `start` (required)",
                Some("start"),
            ),
            (
                Some("invalid_value"),
                "include_upstream applies only with tasks",
                Some("tasks"),
            ),
            (
                Some("invalid_value"),
                "tasks pattern \"[\": bad",
                Some("tasks"),
            ),
            (
                Some("no_matching_task"),
                "pattern \"x\" matches no task",
                Some("tasks"),
            ),
            (Some("overlap"), "overlaps sales_backfill_1", Some("start")),
            (
                None,
                "max_active_runs must be a whole number",
                Some("max_active_runs"),
            ),
            (
                Some("illegal_transition"),
                "cannot pause a failed backfill",
                None,
            ),
            (None, "the metadata DB is unavailable", None),
        ] {
            assert_eq!(problem(code, detail).field, field, "{detail}");
        }
        let bare = problem(None, "");
        assert_eq!(bare.message, "Something went wrong.");
        assert_eq!(
            problem(Some("unknown_backfill"), "").message,
            "There is no such backfill."
        );
    }
}
