//! Task subsets (`tasks = ["regex", ...]`) and what a serialized DAG says about its tasks.
//!
//! A backfill may run only some tasks of its DAG, selected the way Airflow 2's
//! `DAG.partial_subset(task_ids_or_regex)` (behind `airflow dags backfill -t`) selects them: a
//! task is matched when a pattern is found anywhere in its `task_id` (a regex *search*, with
//! Google RE2, which Airflow uses). Airflow 3's `partial_subset` takes a string as a plain
//! substring instead, so the overlay never hands it a pattern: the daemon resolves the patterns
//! to task ids here, the overlay re-evaluates them with RE2 (Python `re` when RE2 is missing)
//! against the tasks it finds, refuses to build a copy if the two disagree, and passes the
//! list of ids to `partial_subset`, which treats a list the same way on both majors.
//!
//! The daemon evaluates patterns with the `regex` crate (ASCII mode), whose syntax is a close
//! relative of RE2's. Patterns are accepted only within the part of the syntax that RE2,
//! Python's `re` and the `regex` crate read the same way; everything else is refused with the
//! construct named (see [`check_pattern`]). Nothing here does I/O.

use regex_syntax::ast::{self, Ast, Visitor};
use serde_json::Value;

/// Most patterns in one request.
pub const PATTERNS_MAX: usize = 50;
/// Longest pattern, in bytes.
pub const PATTERN_LEN_MAX: usize = 500;
/// Compiled-size limit of one pattern (bounds memory and time of evaluating it).
const COMPILED_SIZE_MAX: usize = 1 << 20;

/// Operator classes that wait on (or are cleared with) another DAG for the same logical date.
const CROSS_DAG_TYPES: [&str; 2] = ["ExternalTaskSensor", "ExternalTaskMarker"];

/// A compiled pattern, evaluated the way the overlay does (a search anywhere in the task id).
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    regex: regex::bytes::Regex,
}

impl Pattern {
    /// Whether the pattern is found in `task_id`.
    pub fn is_match(&self, task_id: &str) -> bool {
        self.regex.is_match(task_id.as_bytes())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Most unbounded quantifiers (`*`, `+`, `{n,}`) in one pattern: the copy evaluates patterns
/// with Python's backtracking `re` where RE2 is missing, in which k of them in sequence cost up
/// to n^k steps on an n-character task id.
const UNBOUNDED_MAX: usize = 3;

/// Refuses the parts of the syntax that RE2, Python's `re` and the `regex` crate do not read
/// alike, and what makes a backtracking engine (Python's `re`, used by the DAG copy when RE2
/// is missing) take exponential time: a quantifier or an alternation inside a repeated group
/// (`(a+)+`, `(a|a)*`), or more than [`UNBOUNDED_MAX`] unbounded quantifiers. The first one
/// found, described for the requester.
#[derive(Default)]
struct Portable {
    /// Repetitions (other than `?`) enclosing the node visited.
    repeated: usize,
    /// Unbounded quantifiers seen.
    unbounded: usize,
}

/// Whether a repetition may match its sub-expression more than once.
fn repeats(rep: &ast::Repetition) -> bool {
    !matches!(
        rep.op.kind,
        ast::RepetitionKind::ZeroOrOne
            | ast::RepetitionKind::Range(ast::RepetitionRange::Exactly(0 | 1))
            | ast::RepetitionKind::Range(ast::RepetitionRange::Bounded(_, 0 | 1))
    )
}

fn unbounded(rep: &ast::Repetition) -> bool {
    matches!(
        rep.op.kind,
        ast::RepetitionKind::ZeroOrMore
            | ast::RepetitionKind::OneOrMore
            | ast::RepetitionKind::Range(ast::RepetitionRange::AtLeast(_))
    )
}

impl Portable {
    fn flags(flags: &ast::Flags) -> Result<(), String> {
        for item in &flags.items {
            if let ast::FlagsItemKind::Flag(flag) = &item.kind {
                let name = match flag {
                    ast::Flag::CaseInsensitive
                    | ast::Flag::MultiLine
                    | ast::Flag::DotMatchesNewLine => continue,
                    ast::Flag::SwapGreed => "U",
                    ast::Flag::Unicode => "u",
                    ast::Flag::CRLF => "R",
                    ast::Flag::IgnoreWhitespace => "x",
                };
                return Err(format!(
                    "the flag (?{name}) (only i, m and s mean the same in RE2 and Python)"
                ));
            }
        }
        Ok(())
    }

    fn literal(lit: &ast::Literal) -> Result<(), String> {
        match &lit.kind {
            ast::LiteralKind::HexBrace(_) => Err(format!(
                "the escape \\x{{...}} at {} (write \\xHH)",
                lit.span.start.offset
            )),
            ast::LiteralKind::HexFixed(ast::HexLiteralKind::X) => Ok(()),
            ast::LiteralKind::HexFixed(_) => Err(format!(
                "the escape \\u/\\U at {} (not in RE2)",
                lit.span.start.offset
            )),
            ast::LiteralKind::Octal => Err("an octal escape".into()),
            _ => Ok(()),
        }
    }
}

impl Visitor for Portable {
    type Output = ();
    type Err = String;

    fn finish(self) -> Result<(), String> {
        Ok(())
    }

    fn visit_post(&mut self, node: &Ast) -> Result<(), String> {
        if let Ast::Repetition(rep) = node {
            if repeats(rep) {
                self.repeated = self.repeated.saturating_sub(1);
            }
        }
        Ok(())
    }

    fn visit_pre(&mut self, node: &Ast) -> Result<(), String> {
        match node {
            Ast::Repetition(rep) => {
                if self.repeated > 0 && repeats(rep) {
                    return Err(format!(
                        "a quantifier inside a repeated group at {} (exponential backtracking in \
                         Python's re; write the group once, e.g. (ab)+ rather than (a+b)+)",
                        rep.span.start.offset
                    ));
                }
                if unbounded(rep) {
                    self.unbounded += 1;
                    if self.unbounded > UNBOUNDED_MAX {
                        return Err(format!(
                            "more than {UNBOUNDED_MAX} unbounded quantifiers (*, +, {{n,}}) \
                             (slow backtracking in Python's re)"
                        ));
                    }
                }
                if repeats(rep) {
                    self.repeated += 1;
                }
                Ok(())
            }
            Ast::Alternation(alt) if self.repeated > 0 => Err(format!(
                "an alternation inside a repeated group at {} (exponential backtracking in \
                 Python's re)",
                alt.span.start.offset
            )),
            Ast::Flags(set) => Portable::flags(&set.flags),
            Ast::Group(group) => match &group.kind {
                ast::GroupKind::CaptureIndex(_) => Ok(()),
                ast::GroupKind::CaptureName { starts_with_p, .. } => {
                    if *starts_with_p {
                        Ok(())
                    } else {
                        Err("a (?<name>...) group (write (?P<name>...))".into())
                    }
                }
                ast::GroupKind::NonCapturing(flags) => Portable::flags(flags),
            },
            Ast::Literal(lit) => Portable::literal(lit),
            Ast::Assertion(a) => match a.kind {
                ast::AssertionKind::StartLine
                | ast::AssertionKind::EndLine
                | ast::AssertionKind::StartText
                | ast::AssertionKind::WordBoundary
                | ast::AssertionKind::NotWordBoundary => Ok(()),
                ast::AssertionKind::EndText => {
                    Err("\\z (Python's re before 3.14 does not know it; write $)".into())
                }
                _ => Err(format!(
                    "the word-boundary assertion at {} (write \\b)",
                    a.span.start.offset
                )),
            },
            Ast::ClassUnicode(_) => Err("a Unicode class \\p{...}".into()),
            _ => Ok(()),
        }
    }

    fn visit_class_set_item_pre(&mut self, item: &ast::ClassSetItem) -> Result<(), String> {
        match item {
            ast::ClassSetItem::Bracketed(_) => {
                Err("a '[' inside a character class (escape it as \\[)".into())
            }
            ast::ClassSetItem::Ascii(_) => {
                Err("a [:name:] class (Python's re does not know it)".into())
            }
            ast::ClassSetItem::Unicode(_) => Err("a Unicode class \\p{...}".into()),
            ast::ClassSetItem::Literal(lit) => Portable::literal(lit),
            _ => Ok(()),
        }
    }

    fn visit_class_set_binary_op_pre(&mut self, _op: &ast::ClassSetBinaryOp) -> Result<(), String> {
        Err("a class operation (&&, -- or ~~ inside [...])".into())
    }
}

/// Check and compile one pattern. The message says what is wrong; it never echoes more of the
/// pattern than its position.
pub fn check_pattern(text: &str) -> Result<Pattern, String> {
    if text.is_empty() {
        return Err("an empty pattern would select every task; leave `tasks` out instead".into());
    }
    if text.len() > PATTERN_LEN_MAX {
        return Err(format!("longer than {PATTERN_LEN_MAX} bytes"));
    }
    if !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err("only printable ASCII is accepted in patterns".into());
    }
    let tree = ast::parse::ParserBuilder::new()
        .nest_limit(32)
        .build()
        .parse(text)
        .map_err(|e| format!("not a regular expression: {}", e.kind()))?;
    ast::visit(&tree, Portable::default()).map_err(|what| {
        format!("uses {what}, which backfilld cannot evaluate the way Airflow (RE2) does")
    })?;
    let regex = regex::bytes::RegexBuilder::new(text)
        .unicode(false)
        .size_limit(COMPILED_SIZE_MAX)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => "too complex".to_owned(),
            other => format!("not a regular expression: {other}"),
        })?;
    Ok(Pattern {
        text: text.to_owned(),
        regex,
    })
}

/// Check every pattern of a request: `Err` names the first bad one and why.
pub fn check_patterns(patterns: &[String]) -> Result<Vec<Pattern>, String> {
    if patterns.len() > PATTERNS_MAX {
        return Err(format!("tasks has more than {PATTERNS_MAX} patterns"));
    }
    patterns
        .iter()
        .map(|p| check_pattern(p).map_err(|why| format!("tasks pattern {p:?}: {why}")))
        .collect()
}

/// Why a subset cannot be built from a DAG's tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoMatch {
    /// The patterns that match no task.
    pub patterns: Vec<String>,
    /// The DAG's task ids.
    pub task_ids: Vec<String>,
}

impl std::fmt::Display for NoMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = self
            .patterns
            .iter()
            .map(|p| format!("{p:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let verb = if self.patterns.len() == 1 {
            "pattern {} matches"
        } else {
            "patterns {} match"
        };
        write!(
            f,
            "{} no task; the DAG's tasks are: {}",
            verb.replacen("{}", &list, 1),
            self.task_ids.join(", ")
        )
    }
}

/// The task ids selected by `patterns` (a task is selected when any pattern is found in its
/// id), sorted. Every pattern must select at least one task.
pub fn select(patterns: &[Pattern], task_ids: &[String]) -> Result<Vec<String>, NoMatch> {
    let unmatched: Vec<String> = patterns
        .iter()
        .filter(|p| !task_ids.iter().any(|t| p.is_match(t)))
        .map(|p| p.as_str().to_owned())
        .collect();
    if !unmatched.is_empty() {
        let mut ids = task_ids.to_vec();
        ids.sort();
        return Err(NoMatch {
            patterns: unmatched,
            task_ids: ids,
        });
    }
    let mut selected: Vec<String> = task_ids
        .iter()
        .filter(|t| patterns.iter().any(|p| p.is_match(t)))
        .cloned()
        .collect();
    selected.sort();
    selected.dedup();
    Ok(selected)
}

/// One task as Airflow serialized it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerializedTask {
    /// Its id (with task-group prefix).
    pub task_id: String,
    /// Its operator class name (`_task_type` on Airflow 2, `task_type` on 3).
    pub task_type: String,
    /// The DAG it waits on or marks, for ExternalTaskSensor/ExternalTaskMarker.
    pub external_dag_id: Option<String>,
}

/// The tasks of a serialized DAG (`serialized_dag.data -> dag`), in the order stored. Tasks
/// are `{"__type": "operator", "__var": {...}}` (Airflow 2.10+ and 3) or plain objects
/// (older 2.x).
pub fn tasks(dag: &Value) -> Vec<SerializedTask> {
    let Some(list) = dag.get("tasks").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|t| {
            let t = t.get("__var").unwrap_or(t);
            let task_id = t.get("task_id")?.as_str()?.to_owned();
            let task_type = t
                .get("task_type")
                .or_else(|| t.get("_task_type"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let external_dag_id = t
                .get("external_dag_id")
                .and_then(Value::as_str)
                .map(str::to_owned);
            Some(SerializedTask {
                task_id,
                task_type,
                external_dag_id,
            })
        })
        .collect()
}

/// A warning for the requester when tasks of the DAG wait on (ExternalTaskSensor) or mark
/// (ExternalTaskMarker) another DAG for the same logical dates: each backfilled date then
/// depends on that DAG's run of the same date, which a backfill of this DAG does not create.
pub fn cross_dag_warning(dag_id: &str, tasks: &[SerializedTask]) -> Option<String> {
    let found: Vec<String> = tasks
        .iter()
        .filter(|t| {
            CROSS_DAG_TYPES.contains(&t.task_type.as_str())
                || (t.external_dag_id.is_some() && t.task_type.starts_with("External"))
        })
        .map(|t| match &t.external_dag_id {
            Some(other) => format!("{} ({} on {other})", t.task_id, t.task_type),
            None => format!("{} ({})", t.task_id, t.task_type),
        })
        .collect();
    (!found.is_empty()).then(|| {
        format!(
            "DAG {dag_id:?} has tasks that wait on or mark other DAGs for the same logical dates: {}; \
             each backfilled date depends on those DAGs' runs of the same date (backfill them first, \
             e.g. with `after`, or leave those tasks out with `tasks`)",
            found.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn pick(patterns: &[&str], tasks: &[&str]) -> Result<Vec<String>, String> {
        let compiled = check_patterns(&ids(patterns))?;
        select(&compiled, &ids(tasks)).map_err(|e| e.to_string())
    }

    #[test]
    fn search_semantics_like_partial_subset() {
        let tasks = ["extract", "transform", "load", "group.transform_2"];
        let cases: &[(&[&str], &[&str])] = &[
            (&["^transform$"], &["transform"]),
            (&["transform"], &["group.transform_2", "transform"]),
            (&["^ext", "load$"], &["extract", "load"]),
            (&["(?i)LOAD"], &["load"]),
            (&["\\.transform_\\d"], &["group.transform_2"]),
            (
                &["a|o"],
                &["extract", "group.transform_2", "load", "transform"],
            ),
            (
                &["x*"],
                &["extract", "group.transform_2", "load", "transform"],
            ),
            (&["(?P<n>tr)ans"], &["group.transform_2", "transform"]),
        ];
        for (patterns, want) in cases {
            assert_eq!(pick(patterns, &tasks), Ok(ids(want)), "{patterns:?}");
        }
    }

    #[test]
    fn a_pattern_matching_nothing_names_the_tasks() {
        let err = pick(&["^transform$", "nope"], &["load", "transform", "extract"])
            .err()
            .unwrap_or_default();
        assert!(err.contains("\"nope\" matches no task"), "{err}");
        assert!(err.contains("extract, load, transform"), "{err}");
    }

    #[test]
    fn constructs_read_differently_are_refused() {
        for (pattern, needle) in [
            ("", "every task"),
            ("(?=x)", "not a regular expression"),
            ("(a)\\1", "not a regular expression"),
            ("(?<n>a)", "(?P<name>"),
            ("(?U)a+", "(?U)"),
            ("(?x)a b", "(?x)"),
            ("\\pL", "Unicode class"),
            ("[\\pL]", "Unicode class"),
            ("[[:alpha:]]", "[:name:]"),
            ("[a-z&&[^aeiou]]", "class operation"),
            ("[a[b]]", "'[' inside"),
            ("[a-z--b]", "class operation"),
            ("\\<load", "word-boundary"),
            ("\\b{start}load", "word-boundary"),
            ("load\\z", "\\z"),
            ("\\x{41}", "\\x{...}"),
            ("\\u0041", "\\u"),
            ("é", "printable ASCII"),
            ("a{,3}", "not a regular expression"),
        ] {
            let err = check_pattern(pattern).err().unwrap_or_default();
            assert!(err.contains(needle), "{pattern:?}: {err}");
        }
        assert!(check_pattern(&"a".repeat(PATTERN_LEN_MAX + 1)).is_err());
        assert!(check_pattern("(((a{100}){100}){100})").is_err());
        // What backtracks catastrophically in Python's re (the copy's fallback without RE2).
        for (pattern, needle) in [
            ("(a+)+$", "quantifier inside a repeated group"),
            ("^(\\w*)*x", "quantifier inside a repeated group"),
            ("(x{2,})*y", "quantifier inside a repeated group"),
            ("(a|a)*b", "alternation inside a repeated group"),
            ("(?:load|extract)+", "alternation inside a repeated group"),
            ("a.*b.*c.*d.*e", "unbounded quantifiers"),
        ] {
            let err = check_pattern(pattern).err().unwrap_or_default();
            assert!(err.contains(needle), "{pattern:?}: {err}");
        }
        for ok in [
            "^(ab)+$",
            "(a?b)*",
            "^(extract|load)_.*",
            "a.*b.*c",
            "(ab){2}x?",
        ] {
            assert!(check_pattern(ok).is_ok(), "{ok}");
        }
        let many: Vec<String> = (0..=PATTERNS_MAX).map(|i| format!("t{i}")).collect();
        assert!(check_patterns(&many).is_err());
        for ok in [
            "^a\\.b$",
            "\\bload\\b",
            "\\Aload",
            "[a-c\\]]x",
            "\\x41",
            "a{2,3}?",
        ] {
            assert!(check_pattern(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn serialized_tasks_of_both_majors() {
        let af2 = json!({"tasks": [
            {"__type": "operator", "__var": {"task_id": "a", "_task_type": "BashOperator"}},
            {"__type": "operator", "__var": {"task_id": "s", "_task_type": "ExternalTaskSensor",
                "external_dag_id": "other"}},
        ]});
        let af3 = json!({"tasks": [
            {"__type": "operator", "__var": {"task_id": "a", "task_type": "BashOperator"}},
            {"__type": "operator", "__var": {"task_id": "m", "task_type": "ExternalTaskMarker",
                "external_dag_id": "other"}},
        ]});
        let old = json!({"tasks": [{"task_id": "a", "_task_type": "EmptyOperator"}]});
        let t2 = tasks(&af2);
        assert_eq!(
            t2.iter().map(|t| t.task_id.as_str()).collect::<Vec<_>>(),
            ["a", "s"]
        );
        let w = cross_dag_warning("d", &t2).unwrap_or_default();
        assert!(w.contains("s (ExternalTaskSensor on other)"), "{w}");
        let w = cross_dag_warning("d", &tasks(&af3)).unwrap_or_default();
        assert!(w.contains("m (ExternalTaskMarker on other)"), "{w}");
        assert_eq!(tasks(&old).len(), 1);
        assert_eq!(cross_dag_warning("d", &tasks(&old)), None);
        assert!(tasks(&json!({})).is_empty());
    }
}
