//! Runs of timetables backfilld does not compute natively, asked of Airflow itself.
//!
//! A DAG whose timetable class [`crate::schedule`] does not know (typically one registered by
//! an Airflow plugin) is still backfilled: its runs come from Airflow's own timetable object.
//! backfilld runs a constant helper script (`src/airflow_py/timetable_dates.py`) with the
//! Airflow host's Python (`[airflow] python`, or the interpreter of the `airflow` executable on
//! backfilld's `PATH`), with `AIRFLOW_HOME` set so Airflow's configuration and plugins folder
//! load as they do for the scheduler. The serialized timetable and the range go in on standard
//! input as JSON (never on the command line); the runs come back as JSON on standard output
//! and are checked by [`answer`]. The process runs as the daemon's user, in its own process
//! group, and is killed when it exceeds [`HELPER_TIMEOUT`] or writes more than
//! [`MAX_ANSWER_BYTES`]. Answers are cached per serialized timetable and range for
//! [`CACHE_TTL`], so a DAG version costs one Python start per range; a failure or refusal is
//! cached for [`FAILURE_TTL`], so a broken plugin or interpreter costs one Python start a
//! minute, not one per pass or request; built-in timetables never get here.

pub mod answer;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::schedule::RunInfo;
use answer::Answer;

/// The helper script, run with `python -c`; constant, so no request value reaches a command line.
const HELPER_SCRIPT: &str = include_str!("airflow_py/timetable_dates.py");

/// Longest a helper run may take (importing Airflow and its plugins included).
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(120);

/// Largest answer read from the helper; a longer one is refused.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// How long a computed answer is reused (a plugin's code may change without the DAG changing).
pub const CACHE_TTL: Duration = Duration::from_secs(3600);

/// How long a failure or refusal is given again without running the helper (a fixed plugin is
/// picked up within this time; a helper that times out is not started again at every pass).
pub const FAILURE_TTL: Duration = Duration::from_secs(60);

/// Most answers kept; the cache is emptied when it is full.
const MAX_CACHED: usize = 256;

/// How to point backfilld at Airflow's Python, appended to refusals.
const ENABLE_HINT: &str = "set [airflow] python = \"<Airflow's virtualenv>/bin/python\" in \
                           backfilld's configuration (or put Airflow's `airflow` executable on \
                           backfilld's PATH)";

/// Why Airflow's Python could not give the runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AirflowPythonError {
    /// No usable Airflow Python was found; the text says what was looked for.
    #[error("{0}: {hint}", hint = ENABLE_HINT)]
    NoPython(String),
    /// The helper did not run to completion or answered nonsense.
    #[error("Airflow's Python {python} failed: {reason}")]
    Failed {
        /// The interpreter that was run.
        python: String,
        /// What went wrong.
        reason: String,
    },
    /// Airflow itself cannot compute the timetable's runs (e.g. the class is not registered).
    #[error("Airflow could not compute the timetable's runs: {0}")]
    Refused(String),
    /// The range holds more runs than the limit asked for.
    #[error("the range holds more than {limit} runs")]
    TooMany {
        /// The limit.
        limit: usize,
    },
}

/// What a cached answer is for: the serialized timetable (as JSON text) and the range asked.
type CacheKey = (String, DateTime<Utc>, DateTime<Utc>, usize);

/// A cached answer: the runs (`None`: more than the limit), or why there are none.
type Cached = Result<Option<Vec<RunInfo>>, AirflowPythonError>;

/// Airflow's Python on this host, and the answers it gave.
#[derive(Debug)]
pub struct AirflowPython {
    configured: Option<PathBuf>,
    home: PathBuf,
    cache: HashMap<CacheKey, (Instant, Cached)>,
}

impl AirflowPython {
    /// The Python of `[airflow] python` (`None`: found from `airflow` on `PATH` when needed),
    /// run with `AIRFLOW_HOME=home`.
    pub fn new(configured: Option<PathBuf>, home: PathBuf) -> AirflowPython {
        AirflowPython {
            configured,
            home,
            cache: HashMap::new(),
        }
    }

    /// The runs of `timetable` (a serialized timetable, `{"__type", "__var"}`) whose logical
    /// dates lie in `start..=end`, ascending, as Airflow's scheduler creates them for a copy
    /// with that start and end date; more than `limit` give [`AirflowPythonError::TooMany`].
    pub fn runs(
        &mut self,
        timetable: &Value,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<RunInfo>, AirflowPythonError> {
        let key = (timetable.to_string(), start, end, limit);
        if let Some((at, cached)) = self.cache.get(&key) {
            let ttl = if cached.is_ok() {
                CACHE_TTL
            } else {
                FAILURE_TTL
            };
            if at.elapsed() < ttl {
                return unpack(cached.clone(), limit);
            }
        }
        let python = find_python(
            self.configured.as_deref(),
            std::env::var_os("PATH").as_deref(),
        )
        .map_err(AirflowPythonError::NoPython)?;
        let answer = ask(&python, &self.home, timetable, start, end, limit);
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
        }
        self.cache.insert(key, (Instant::now(), answer.clone()));
        unpack(answer, limit)
    }
}

/// The runs of a cached or fresh answer.
fn unpack(answer: Cached, limit: usize) -> Result<Vec<RunInfo>, AirflowPythonError> {
    answer?.ok_or(AirflowPythonError::TooMany { limit })
}

/// Runs the helper with `python` once and reads its answer.
fn ask(
    python: &Path,
    home: &Path,
    timetable: &Value,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    limit: usize,
) -> Cached {
    let failed = |reason: String| AirflowPythonError::Failed {
        python: python.display().to_string(),
        reason,
    };
    let request = json!({
        "timetable": timetable,
        "start": start.to_rfc3339_opts(SecondsFormat::Micros, false),
        "end": end.to_rfc3339_opts(SecondsFormat::Micros, false),
        "limit": limit,
    });
    let stdout = run_helper(python, home, request.to_string().as_bytes())
        .map_err(|reason| failed(format!("{reason}; {ENABLE_HINT}")))?;
    match answer::parse(&stdout, start, end, limit) {
        Ok(Answer::Runs(runs)) => Ok(Some(runs)),
        Ok(Answer::TooMany) => Ok(None),
        Ok(Answer::Refused(reason)) => Err(AirflowPythonError::Refused(reason)),
        Err(e) => Err(failed(e.to_string())),
    }
}

/// The Python to run: `configured` when set (it must exist), else the interpreter of the
/// `airflow` executable found on `path` (its `#!` line, or `python3`/`python` beside it).
pub fn find_python(
    configured: Option<&Path>,
    path: Option<&std::ffi::OsStr>,
) -> Result<PathBuf, String> {
    if let Some(python) = configured {
        return if python.is_file() {
            Ok(python.to_path_buf())
        } else {
            Err(format!(
                "[airflow] python = {:?} is not a file",
                python.display().to_string()
            ))
        };
    }
    let airflow = path
        .map(std::env::split_paths)
        .into_iter()
        .flatten()
        .map(|dir| dir.join("airflow"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            "the DAG's timetable is computed by Airflow's Python, but [airflow] python is not \
             set and no `airflow` executable is on backfilld's PATH"
                .to_string()
        })?;
    let mut first = [0u8; 512];
    let read = std::fs::File::open(&airflow)
        .and_then(|mut f| f.read(&mut first))
        .unwrap_or(0);
    let head = String::from_utf8_lossy(&first[..read]);
    let beside = airflow.parent().map(Path::to_path_buf).unwrap_or_default();
    shebang_interpreter(head.lines().next().unwrap_or_default())
        .into_iter()
        .chain([beside.join("python3"), beside.join("python")])
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            format!(
                "found {} but not the Python it runs with",
                airflow.display()
            )
        })
}

/// The interpreter named by a script's first line, when it is an absolute path to a Python
/// (`#!/venv/bin/python3.11`); `#!/usr/bin/env python3` and others give `None`.
pub fn shebang_interpreter(first_line: &str) -> Option<PathBuf> {
    let program = first_line.strip_prefix("#!")?.split_whitespace().next()?;
    let path = PathBuf::from(program);
    let is_python = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("python"));
    (path.is_absolute() && is_python).then_some(path)
}

/// Run the helper with `input` on its standard input; its standard output, bounded.
fn run_helper(python: &Path, home: &Path, input: &[u8]) -> Result<Vec<u8>, String> {
    let mut child = Command::new(python)
        .arg("-c")
        .arg(HELPER_SCRIPT)
        .env("AIRFLOW_HOME", home)
        .env("PYTHONWARNINGS", "ignore")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start it: {e}"))?;
    let pid = child.id();
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        kill_group(pid);
        let _ = child.wait();
        return Err("its standard streams were not opened".into());
    };
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out_reader = std::thread::spawn(move || read_bounded(stdout, MAX_ANSWER_BYTES));
    let err_reader = std::thread::spawn(move || read_bounded(stderr, 64 * 1024));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() >= HELPER_TIMEOUT => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                kill_group(pid);
                let _ = child.wait();
                return Err(format!("cannot wait for it: {e}"));
            }
        }
    };
    if status.is_none() {
        kill_group(pid);
        let _ = child.wait();
    }
    let _ = writer.join();
    let (stdout, stdout_overflow) = out_reader.join().unwrap_or_default();
    let (stderr, _) = err_reader.join().unwrap_or_default();
    let Some(status) = status else {
        return Err(format!(
            "no answer within {} seconds (killed)",
            HELPER_TIMEOUT.as_secs()
        ));
    };
    if stdout_overflow {
        return Err(format!("its answer exceeds {MAX_ANSWER_BYTES} bytes"));
    }
    if !status.success() {
        return Err(format!("{status}: {}", last_line(&stderr)));
    }
    Ok(stdout)
}

/// Read `stream` to its end keeping at most `cap` bytes; whether more were written.
fn read_bounded(mut stream: impl Read, cap: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut overflow = false;
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                if n > room {
                    overflow = true;
                }
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
    (kept, overflow)
}

/// The last non-empty line of a process's error output, shortened, for a refusal.
fn last_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no error output");
    line.chars().take(300).collect()
}

/// Kill the helper's process group (it was started as the leader of its own group).
fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebang_names_a_python() {
        assert_eq!(
            shebang_interpreter("#!/opt/af/bin/python3.11"),
            Some(PathBuf::from("/opt/af/bin/python3.11"))
        );
        assert_eq!(
            shebang_interpreter("#!/opt/af/bin/python -E"),
            Some(PathBuf::from("/opt/af/bin/python"))
        );
        assert_eq!(shebang_interpreter("#!/usr/bin/env python3"), None);
        assert_eq!(shebang_interpreter("#!python3"), None);
        assert_eq!(shebang_interpreter("import sys"), None);
    }

    #[test]
    fn configured_python_must_exist() {
        let missing = find_python(Some(Path::new("/nonexistent/bin/python")), None);
        assert!(missing.is_err_and(|e| e.contains("[airflow] python")));
        let no_airflow = find_python(None, Some(std::ffi::OsStr::new("/nonexistent")));
        assert!(no_airflow.is_err_and(|e| e.contains("PATH")));
    }

    #[test]
    fn refusal_says_how_to_enable() {
        let e = AirflowPythonError::NoPython("no airflow".into());
        assert!(e.to_string().contains("[airflow] python = "));
    }

    #[test]
    fn a_failure_is_given_again_without_a_second_python_start(
    ) -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let starts = dir.path().join("starts");
        let python = dir.path().join("python3");
        std::fs::write(
            &python,
            format!("#!/bin/sh\necho start >> '{}'\nexit 3\n", starts.display()),
        )?;
        std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755))?;
        let mut af = AirflowPython::new(Some(python), dir.path().to_path_buf());
        let timetable = json!({"__type": "plugin.Custom", "__var": {}});
        let start = DateTime::<Utc>::UNIX_EPOCH;
        for _ in 0..3 {
            let answer = af.runs(&timetable, start, start, 10);
            assert!(
                matches!(answer, Err(AirflowPythonError::Failed { .. })),
                "{answer:?}"
            );
        }
        let count = std::fs::read_to_string(&starts)?.lines().count();
        assert_eq!(
            count, 1,
            "one Python start for three asks within FAILURE_TTL"
        );
        Ok(())
    }
}
