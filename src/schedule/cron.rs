//! Cron schedules: croniter-compatible parsing of cron expressions and presets, and the
//! stepping of a cron schedule in its zone the way Airflow's `_cron.py` does.

use super::*;

/// A cron timetable's expression and timezone, validated.
pub(super) fn cron_schedule(
    expression: &Value,
    timezone: &Value,
) -> Result<CronSchedule, ScheduleError> {
    let expression = expression.as_str().ok_or_else(|| {
        ScheduleError::Invalid(format!("cron expression is not a string: {expression}"))
    })?;
    let zone = Zone::from_serialized(timezone)?;
    let timezone = show_timezone(timezone);
    let parsed = parse_cron(expression)?;
    let normalized = parsed.normalized();
    let cron = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .build()
        .parse(&normalized)
        .map_err(|e| {
            ScheduleError::Invalid(format!(
                "cron expression '{expression}' (read as '{normalized}'): {e}"
            ))
        })?;
    Ok(CronSchedule {
        expression: expression.to_string(),
        timezone,
        zone,
        normalized,
        satisfiable: parsed.satisfiable(),
        covers_every_hour: parsed.hour.values.count_ones() == HOUR.len_means_all,
        cron,
    })
}

impl CronSchedule {
    pub(super) fn no_tick(
        &self,
        direction: &str,
        at: DateTime<Utc>,
        e: croner::errors::CronError,
    ) -> ScheduleError {
        ScheduleError::Invalid(format!(
            "cron expression '{}': no tick {direction} {at}: {e}",
            self.expression
        ))
    }

    /// croniter's `get_next` on a naive time: the first tick strictly after `naive`.
    pub(super) fn naive_next(&self, naive: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
        let floor = floor_to_minute(naive)?;
        self.cron
            .find_next_occurrence(&floor, false)
            .map_err(|e| self.no_tick("after", naive, e))
    }

    /// croniter's `get_prev` on a naive time: the last tick strictly before `naive`.
    pub(super) fn naive_prev(&self, naive: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
        let floor = floor_to_minute(naive)?;
        self.cron
            .find_previous_occurrence(&floor, floor != naive)
            .map_err(|e| self.no_tick("before", naive, e))
    }

    /// Airflow's `CronMixin._get_next`: the next tick after instant `current`.
    pub(super) fn get_next(&self, current: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
        let naive = self.zone.wall_clock(current)?;
        let scheduled = self.naive_next(naive)?;
        if self.covers_every_hour {
            // pendulum adds a plain timedelta as elapsed seconds.
            add(current, scheduled - naive)
        } else {
            self.zone.localize(scheduled)
        }
    }

    /// Airflow's `CronMixin._get_prev`: the previous tick before instant `current`.
    pub(super) fn get_prev(&self, current: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
        let naive = self.zone.wall_clock(current)?;
        let scheduled = self.naive_prev(naive)?;
        if self.covers_every_hour {
            add(current, scheduled - naive)
        } else {
            self.zone.localize(scheduled)
        }
    }

    /// Airflow's `_align_to_next`: `current` when it is on the schedule, else the next tick.
    pub(super) fn align_to_next(
        &self,
        current: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, ScheduleError> {
        let next = self.get_next(current)?;
        Ok(if self.get_prev(next)? != current {
            next
        } else {
            current
        })
    }

    /// Airflow's `_align_to_prev`: `current` when it is on the schedule, else the previous tick.
    pub(super) fn align_to_prev(
        &self,
        current: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, ScheduleError> {
        let prev = self.get_prev(current)?;
        Ok(if self.get_next(prev)? != current {
            prev
        } else {
            current
        })
    }

    /// The dates of `CronDataIntervalTimetable` in a zone with DST (see the module doc).
    pub(super) fn data_interval_dates(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        dates: &mut Dates,
    ) -> Result<(), ScheduleError> {
        // croniter raises "failed to find next date" for a schedule that never matches; Airflow
        // then schedules nothing.
        if !self.satisfiable || start > end {
            return Ok(());
        }
        let first = self.align_to_next(start)?;
        let mut at = first;
        while at <= end {
            dates.push(at)?;
            let mut next = self.align_to_prev(self.get_next(at)?)?.max(first);
            if next <= at {
                // Airflow 3.3 steps once more; older releases would stall the DAG here.
                next = self.get_next(next)?;
                if next <= at {
                    return Err(not_advancing(&self.expression, &self.timezone, at));
                }
            }
            at = next;
        }
        Ok(())
    }

    /// Calls `found` with every tick in `start..=end`, ascending, for a fixed-offset zone.
    pub(super) fn ticks(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        found: &mut dyn FnMut(DateTime<Utc>) -> Result<(), ScheduleError>,
    ) -> Result<(), ScheduleError> {
        // croniter raises "failed to find next date" for a schedule that never matches (such as
        // February 30th) and Airflow then schedules nothing; croner would search until year 5000.
        if !self.satisfiable || start > end {
            return Ok(());
        }
        let offset = self.zone.offset_at(start)?;
        let (start, end) = (add(start, offset)?, add(end, offset)?);
        // Ticks fall on whole minutes, and croner ignores sub-seconds: search from the first
        // whole minute at or after `start`, inclusively.
        let mut at = ceil_to_minute(start)?;
        let mut inclusive = true;
        loop {
            let tick = self
                .cron
                .find_next_occurrence(&at, inclusive)
                .map_err(|e| self.no_tick("after", at, e))?;
            if tick > end {
                return Ok(());
            }
            found(add(tick, -offset)?)?;
            at = tick;
            inclusive = false;
        }
    }
}

/// The error for a schedule on which Airflow's scheduler would not move forward.
pub(super) fn not_advancing(expression: &str, timezone: &str, at: DateTime<Utc>) -> ScheduleError {
    ScheduleError::Unsupported(format!(
        "cron '{expression}' ({timezone}) does not advance after {at} across a daylight-saving \
         change: Airflow's scheduler would stall there"
    ))
}

/// The dates of `CronTriggerTimetable` / `MultipleCronTriggerTimetable` (zero `interval`): the
/// earliest aligned start, then each time the earliest `_get_next` of the previous date.
pub(super) fn cron_trigger_dates(
    crons: &[CronSchedule],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    dates: &mut Dates,
) -> Result<(), ScheduleError> {
    let crons: Vec<&CronSchedule> = crons.iter().filter(|c| c.satisfiable).collect();
    if crons.is_empty() || start > end {
        return Ok(());
    }
    let earliest = |step: &dyn Fn(&CronSchedule) -> Result<DateTime<Utc>, ScheduleError>| {
        crons
            .iter()
            .map(|c| step(c))
            .try_fold(None::<DateTime<Utc>>, |best, t| {
                let t = t?;
                Ok::<_, ScheduleError>(Some(best.map_or(t, |b| b.min(t))))
            })
    };
    let mut at = earliest(&|c| c.align_to_next(start))?;
    while let Some(current) = at.filter(|t| *t <= end) {
        dates.push(current)?;
        let next = earliest(&|c| c.get_next(current))?;
        if next.is_some_and(|n| n <= current) {
            let first = crons[0];
            return Err(not_advancing(&first.expression, &first.timezone, current));
        }
        at = next;
    }
    Ok(())
}

/// `at + delta`, or an error when out of range.
pub(super) fn add(at: DateTime<Utc>, delta: TimeDelta) -> Result<DateTime<Utc>, ScheduleError> {
    at.checked_add_signed(delta)
        .ok_or_else(|| ScheduleError::Invalid(format!("date {at} + {delta} is out of range")))
}

/// The whole minute at or before `at`.
pub(super) fn floor_to_minute(at: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
    let secs = at.timestamp();
    DateTime::from_timestamp(secs - secs.rem_euclid(60), 0)
        .ok_or_else(|| ScheduleError::Invalid(format!("date {at} is out of range")))
}

// ---------------------------------------------------------------------------------------------
// Cron expressions, read the way croniter (used by Airflow) reads them.

/// One cron field: the set of matching values and whether croniter treats it as `*`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct CronField {
    /// Bit `v` set when value `v` matches.
    values: u64,
    /// croniter's expansion of the field is `["*"]` (decides the day-of-month/day-of-week OR).
    star: bool,
}

/// The day-of-month field: values, or `L` (last day of the month).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum DomField {
    Values(CronField),
    Last,
}

/// A parsed 5-field cron expression.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ParsedCron {
    minute: CronField,
    hour: CronField,
    dom: DomField,
    month: CronField,
    dow: CronField,
}

/// What a field accepts: croniter's `RANGES` bounds, plus the names (index = value - offset).
pub(super) struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    /// Largest number accepted as a single value (7 for Sunday in day-of-week).
    max_single: u32,
    names: &'static [&'static str],
    names_from: u32,
    /// croniter's `LEN_MEANS_ALL`: a set this large is "every value".
    len_means_all: u32,
}

pub(super) const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    max_single: 59,
    names: &[],
    names_from: 0,
    len_means_all: 60,
};
pub(super) const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    max_single: 23,
    names: &[],
    names_from: 0,
    len_means_all: 24,
};
pub(super) const DOM: FieldSpec = FieldSpec {
    name: "day-of-month",
    min: 1,
    max: 31,
    max_single: 31,
    names: &[],
    names_from: 1,
    len_means_all: 31,
};
pub(super) const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    max_single: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
    names_from: 1,
    len_means_all: 12,
};
pub(super) const DOW: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 6,
    max_single: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    names_from: 0,
    len_means_all: 7,
};

/// Airflow's `cron_presets` (exact match), then croniter's own aliases (case-insensitive).
pub(super) fn expand_preset(expression: &str) -> Option<&'static str> {
    match expression {
        "@hourly" => return Some("0 * * * *"),
        "@daily" => return Some("0 0 * * *"),
        "@weekly" => return Some("0 0 * * 0"),
        "@monthly" => return Some("0 0 1 * *"),
        "@quarterly" => return Some("0 0 1 */3 *"),
        "@yearly" => return Some("0 0 1 1 *"),
        _ => {}
    }
    match expression.to_ascii_lowercase().as_str() {
        "@midnight" | "@daily" => Some("0 0 * * *"),
        "@hourly" => Some("0 * * * *"),
        "@weekly" => Some("0 0 * * 0"),
        "@monthly" => Some("0 0 1 * *"),
        "@yearly" | "@annually" => Some("0 0 1 1 *"),
        _ => None,
    }
}

pub(super) fn parse_cron(expression: &str) -> Result<ParsedCron, ScheduleError> {
    let trimmed = expression.trim();
    let text = if trimmed.starts_with('@') {
        expand_preset(trimmed)
            .ok_or_else(|| ScheduleError::Invalid(format!("unknown cron preset '{expression}'")))?
    } else {
        trimmed
    };
    let lower = text.to_ascii_lowercase();
    let fields: Vec<&str> = lower.split_whitespace().collect();
    let [minute, hour, dom, month, dow] = match fields.as_slice() {
        [a, b, c, d, e] => [*a, *b, *c, *d, *e],
        [_, _, _, _, _, _] | [_, _, _, _, _, _, _] => {
            return Err(ScheduleError::Unsupported(format!(
                "cron expression '{expression}' has a seconds (or year) field: backfilld only \
                 supports 5-field cron expressions"
            )))
        }
        _ => {
            return Err(ScheduleError::Invalid(format!(
                "cron expression '{expression}' does not have 5 fields"
            )))
        }
    };
    let context = |e: String| {
        // Unsupported syntax stays unsupported, everything else is a malformed expression.
        match e.strip_prefix("unsupported: ") {
            Some(why) => {
                ScheduleError::Unsupported(format!("cron expression '{expression}': {why}"))
            }
            None => ScheduleError::Invalid(format!("cron expression '{expression}': {e}")),
        }
    };
    let minute_field = parse_field(minute, &MINUTE).map_err(context)?;
    let hour_field = parse_field(hour, &HOUR).map_err(context)?;
    let month_field = parse_field(month, &MONTH).map_err(context)?;
    let mut dow_field = parse_field(dow, &DOW).map_err(context)?;
    let dom_field = if dom == "l" {
        DomField::Last
    } else {
        let mut field = parse_field(dom, &DOM).map_err(context)?;
        // croniter: a full day-of-month set reads as "*" only when the day-of-week text has a
        // "*" in it, and vice versa (`_expand`, "avoid over-optimization").
        if !field.star && field.values.count_ones() == DOM.len_means_all && dow.contains('*') {
            field.star = true;
        }
        DomField::Values(field)
    };
    if !dow_field.star && dow_field.values.count_ones() == DOW.len_means_all && dom.contains('*') {
        dow_field.star = true;
    }
    Ok(ParsedCron {
        minute: minute_field,
        hour: hour_field,
        dom: dom_field,
        month: month_field,
        dow: dow_field,
    })
}

/// Parses one field (already lower-case). Errors starting with "unsupported: " are syntax
/// croniter accepts but backfilld does not.
pub(super) fn parse_field(text: &str, spec: &FieldSpec) -> Result<CronField, String> {
    let name = spec.name;
    let full = (spec.min..=spec.max).fold(0u64, |bits, v| bits | 1 << v);
    if text == "*" || (text == "?" && (spec.name == DOM.name || spec.name == DOW.name)) {
        return Ok(CronField {
            values: full,
            star: true,
        });
    }
    let mut values = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("empty item in {name} field '{text}'"));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = parse_number(step)
                    .ok_or_else(|| format!("step '{step}' in {name} field is not a number"))?;
                if step == 0 {
                    return Err(format!("step 0 in {name} field '{text}'"));
                }
                (range, Some(step))
            }
            None => (item, None),
        };
        let (low, high) = if range == "*" {
            match step {
                Some(_) => (spec.min, spec.max),
                None => {
                    return Err(format!(
                        "unsupported: '*' inside a list in the {name} field ('{text}')"
                    ))
                }
            }
        } else if let Some((low, high)) = range.split_once('-') {
            let low = parse_value(low, spec)?;
            let high = parse_value(high, spec)?;
            if low == high {
                return Err(format!(
                    "unsupported: equal range '{range}' in the {name} field (croniter reads it \
                     as the whole cycle)"
                ));
            }
            if low > high {
                return Err(format!(
                    "unsupported: wrapping range '{range}' in the {name} field"
                ));
            }
            (low, high)
        } else {
            let value = parse_value(range, spec)?;
            match step {
                // croniter: "a/n" is "a-max/n", and just "a" when a is the field's maximum.
                Some(_) if value >= spec.max => {
                    if value > spec.max {
                        return Err(format!("unsupported: '{item}' in the {name} field"));
                    }
                    (value, value)
                }
                Some(_) => (value, spec.max),
                None => (value, value),
            }
        };
        let step = step.unwrap_or(1);
        let mut v = low;
        while v <= high {
            // Day-of-week 7 is Sunday (croniter's LOWMAP).
            let v_alias = if spec.name == DOW.name && v == 7 {
                0
            } else {
                v
            };
            values |= 1 << v_alias;
            v += step;
        }
    }
    Ok(CronField {
        values,
        star: false,
    })
}

/// A field value: digits or (for month and day-of-week) a three-letter name.
pub(super) fn parse_value(text: &str, spec: &FieldSpec) -> Result<u32, String> {
    let name = spec.name;
    let value = match parse_number(text) {
        Some(value) => value,
        None => match spec.names.iter().position(|n| *n == text) {
            // At most 12 names, so the cast is exact.
            Some(index) => index as u32 + spec.names_from,
            None if is_croniter_extension(text) => {
                return Err(format!("unsupported: '{text}' in the {name} field"))
            }
            None => return Err(format!("'{text}' is not a valid {name} value")),
        },
    };
    if value < spec.min || value > spec.max_single {
        return Err(format!(
            "{name} value {value} is out of range {}-{}",
            spec.min, spec.max_single
        ));
    }
    Ok(value)
}

/// croniter syntax beyond plain cron: `L` (last), `W` (nearest weekday), `#` (nth weekday) and
/// `H` (hashed) forms such as `5l`, `l`, `15w`, `1#2`, `h`, `h(0-29)`.
pub(super) fn is_croniter_extension(text: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    text.contains('#')
        || text.starts_with('h')
        || text == "l"
        || ["l", "w"].iter().any(|suffix| {
            text.strip_suffix(suffix).is_some_and(digits)
                || text.strip_prefix(suffix).is_some_and(digits)
        })
}

/// A non-empty string of ASCII digits (no sign) as a number.
pub(super) fn parse_number(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.len() > 4 {
        return None;
    }
    text.parse().ok()
}

impl ParsedCron {
    /// The expression as croner must read it to match croniter: a field is `*` exactly when
    /// croniter reads it as `*` (that decides whether day of month and day of week are ORed).
    pub(super) fn normalized(&self) -> String {
        fn render(field: &CronField) -> String {
            if field.star {
                return "*".to_string();
            }
            (0..64u32)
                .filter(|v| field.values & (1 << v) != 0)
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(",")
        }
        let dom = match &self.dom {
            DomField::Last => "L".to_string(),
            DomField::Values(field) => render(field),
        };
        format!(
            "{} {} {} {} {}",
            render(&self.minute),
            render(&self.hour),
            dom,
            render(&self.month),
            render(&self.dow)
        )
    }

    /// Whether some date can match. A day-of-month list matched alone (day of week `*`) may
    /// fall on no month at all, e.g. `0 0 30 2 *`.
    pub(super) fn satisfiable(&self) -> bool {
        const MAX_DAYS: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        let DomField::Values(dom) = &self.dom else {
            return true;
        };
        if dom.star || !self.dow.star {
            // Either any day, or (OR with day of week) every month has every weekday.
            return true;
        }
        (1..=12u32).any(|month| {
            self.month.values & (1 << month) != 0
                && (1..=MAX_DAYS[month as usize - 1]).any(|day| dom.values & (1 << day) != 0)
        })
    }
}
