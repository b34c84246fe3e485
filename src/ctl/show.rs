//! How `backfillctl` prints: a decided request, a backfill's status, the list table (and its
//! JSON written one item at a time), a seed import's report.

use super::*;

/// A pretty-printed JSON array written one item at a time, byte for byte what
/// `serde_json::to_string_pretty` prints for the whole array.
#[derive(Debug, Default)]
pub(super) struct JsonArray {
    items: usize,
}

impl JsonArray {
    pub(super) fn item(
        &mut self,
        out: &mut impl Write,
        value: &impl Serialize,
    ) -> anyhow::Result<()> {
        out.write_all(if self.items == 0 { b"[\n" } else { b",\n" })?;
        let text = serde_json::to_string_pretty(value)?;
        for (i, line) in text.split('\n').enumerate() {
            if i > 0 {
                out.write_all(b"\n")?;
            }
            write!(out, "  {line}")?;
        }
        self.items += 1;
        Ok(())
    }

    pub(super) fn finish(self, out: &mut impl Write) -> anyhow::Result<()> {
        out.write_all(if self.items == 0 { b"[]\n" } else { b"\n]\n" })?;
        Ok(())
    }
}

/// One line for a time estimate: "about 12m30s left, done around 2026-12-05T22:10:00Z
/// (median of ...)", or why there is none.
pub(super) fn estimate_line(e: &crate::estimate::Estimate) -> String {
    match (e.remaining_secs, &e.finish_at) {
        (Some(secs), Some(at)) => format!(
            "estimate: about {} left, done around {at} ({})",
            crate::estimate::human(secs as f64),
            e.basis
        ),
        _ => format!("estimate: {}", e.basis),
    }
}

/// Print a decided request; exit code 0 when accepted, 1 when rejected.
pub(super) fn print_outcome(request: &RequestView, json: bool) -> anyhow::Result<i32> {
    let accepted = request.outcome.is_accepted();
    if json {
        println!("{}", serde_json::to_string_pretty(request)?);
    } else if request.dry_run && accepted {
        let dates = request.dates.clone().unwrap_or_default();
        let skipped = request.skipped_dates.clone().unwrap_or_default();
        println!(
            "dry run: {} logical dates would run, {} skipped (nothing created)",
            dates.len(),
            skipped.len()
        );
        for w in request.warnings.iter().flatten() {
            eprintln!("warning: {w}");
        }
        if let Some(e) = &request.estimate {
            println!("{}", estimate_line(e));
        }
        println!("{:>5}  {:<22}  WHAT", "#", "LOGICAL DATE");
        let mut all: Vec<(&String, &str)> = dates
            .iter()
            .map(|d| (d, "run"))
            .chain(
                skipped
                    .iter()
                    .map(|d| (d, "skipped: the DAG already ran it")),
            )
            .collect();
        all.sort();
        for (i, (d, what)) in all.iter().enumerate() {
            println!("{:>5}  {d:<22}  {what}", i + 1);
        }
    } else if let Some(id) = &request.backfill_id {
        println!("{id}");
        for w in request.warnings.iter().flatten() {
            eprintln!("warning: {w}");
        }
        if let Some(skipped) = request.skipped_dates.as_ref().filter(|s| !s.is_empty()) {
            eprintln!(
                "skipped {} dates the DAG already ran: {}",
                skipped.len(),
                skipped.join(", ")
            );
        }
    } else {
        let code = request
            .reason_code
            .and_then(|c| serde_json::to_value(c).ok())
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        eprintln!(
            "rejected ({code}): {}",
            request.reason.clone().unwrap_or_default()
        );
    }
    Ok(if accepted { 0 } else { 1 })
}

/// `backfillctl status` without `--json`: one backfill, field by field.
pub(super) fn print_status(b: &BackfillView) {
    println!("{}  ({} {} .. {})", b.id, b.dag_id, b.start, b.end);
    println!(
        "state: {}{}",
        b.state,
        b.reason
            .as_ref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    let done = b.dates_succeeded + b.dates_failed;
    let width = 40usize;
    let filled = if b.dates_total == 0 {
        0
    } else {
        (done as usize * width) / b.dates_total as usize
    };
    println!(
        "[{}{}] {done}/{} dates",
        "=".repeat(filled),
        " ".repeat(width - filled.min(width)),
        b.dates_total
    );
    println!(
        "succeeded {}  failed {}  running {}  queued {}  pending {}",
        b.dates_succeeded, b.dates_failed, b.dates_running, b.dates_queued, b.dates_pending
    );
    println!("submitted by {} at {}", b.submitted_by, b.submitted_at);
    if let Some(e) = &b.estimate {
        println!("{}", estimate_line(e));
    }
    let notes = [
        ("deleted", b.deleted.then(|| "yes".to_owned())),
        ("paused by a user", b.user_paused.then(|| "yes".to_owned())),
        ("retry of", b.retry_of.clone()),
        (
            "approved by",
            b.approved_by
                .as_ref()
                .map(|by| format!("{by} at {}", b.approved_at.clone().unwrap_or_default())),
        ),
        (
            "rejected by",
            b.rejected_by
                .as_ref()
                .map(|by| format!("{by} at {}", b.rejected_at.clone().unwrap_or_default())),
        ),
        ("scheduled at", b.scheduled_at.clone()),
        ("deleted automatically at", b.delete_at.clone()),
        (
            "skipped (the DAG already ran them)",
            (!b.skipped_dates.is_empty()).then(|| b.skipped_dates.join(", ")),
        ),
        (
            "tasks",
            (!b.options.tasks.is_empty()).then(|| {
                let mut relatives = Vec::new();
                if b.options.include_upstream {
                    relatives.push("upstream");
                }
                if b.options.include_downstream {
                    relatives.push("downstream");
                }
                format!(
                    "{} (selected: {}{})",
                    b.options.tasks.join(", "),
                    b.options.task_ids.join(", "),
                    if relatives.is_empty() {
                        String::new()
                    } else {
                        format!("; with their {}", relatives.join(" and "))
                    }
                )
            }),
        ),
        (
            "asset events",
            Some(if b.options.emit_asset_events {
                "emitted".to_owned()
            } else {
                "suppressed".to_owned()
            }),
        ),
        (
            "after",
            (!b.options.after.is_empty()).then(|| b.options.after.join(", ")),
        ),
        ("imported", b.import_note.clone()),
    ];
    for (what, value) in notes {
        if let Some(v) = value {
            println!("{what}: {v}");
        }
    }
    for w in &b.options.warnings {
        println!("warning: {w}");
    }
}

/// A seed import's report: what was (or would be) imported and skipped.
pub(super) fn print_seed_report(r: &crate::seed::SeedReport) {
    let verb = if r.dry_run {
        "would import"
    } else {
        "imported"
    };
    if !r.active_system_dags.is_empty() {
        println!(
            "warning: the seed plugin's system DAGs {} are active and unpaused; pause them before importing",
            r.active_system_dags.join(", ")
        );
    }
    println!(
        "{:<48} {:<24} {:<20} {:<10} DATES",
        "SEED ID", "DAG", "SEED STATE", "STATE"
    );
    for i in r.imported.iter().chain(&r.skipped) {
        let state = i.state.map_or("-", |s| s.as_str());
        let dates = match (i.dates.first(), i.dates.last()) {
            (Some(a), Some(b)) => format!("{} ({a} .. {b})", i.dates.len()),
            _ => "0".to_owned(),
        };
        println!(
            "{:<48} {:<24} {:<20} {:<10} {dates}",
            i.seed_id, i.dag_id, i.seed_state, state
        );
        if let Some(why) = &i.skipped {
            println!("    not imported: {why}");
        } else if let Some(note) = &i.note {
            println!("    {note}");
        }
    }
    println!(
        "{verb} {}, not imported {}, imported before {}",
        r.imported.len(),
        r.skipped.len(),
        r.already_imported.len()
    );
}

/// The header of the `list` table.
pub(super) fn write_table_header(out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<48} {:<24} {:<10} {:>9}  RANGE",
        "ID", "DAG", "STATE", "DONE"
    )
}

/// One backfill as a row of the `list` table.
pub(super) fn write_table_row(out: &mut impl Write, b: &BackfillView) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<48} {:<24} {:<10} {:>4}/{:<4}  {} .. {}",
        b.id,
        b.dag_id,
        if b.deleted {
            "deleted"
        } else {
            b.state.as_str()
        },
        b.dates_succeeded + b.dates_failed,
        b.dates_total,
        b.start,
        b.end
    )
}
