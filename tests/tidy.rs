//! Structural invariants checked by reading the source, as rust-analyzer's tidy tests do.
//! ARCHITECTURE.md names each one ("Architecture invariant"); this file keeps them true.
//! It needs no database and no Airflow, and runs in well under a second.
//!
//! - No SQL outside `src/metadb`: no string literal that reads as SQL, and no `diesel` or
//!   `rusqlite` in code, anywhere else in `src/`.
//! - The pure modules use no I/O: no file, network, process, environment, thread, async
//!   runtime or DB crate, and no module of this crate that does I/O.
//! - The binaries stay thin: argument parsing, logging, exit codes; everything else is in the
//!   library.
//! - Every public item has a doc comment (the crate does not `#![deny(missing_docs)]`).

use std::path::{Path, PathBuf};

use regex::Regex;

/// One source file: its module path (`metadb::pass::delta`, `bin::backfilld`), its text, and
/// the same text with comments blanked and string literals taken out (`code`), line for line.
struct Source {
    path: PathBuf,
    module: String,
    text: String,
    code: String,
    /// Every string literal's contents, with the line it starts on (1-based).
    strings: Vec<(usize, String)>,
}

impl Source {
    fn read(root: &Path, path: &Path) -> Source {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (code, strings) = split(&text);
        Source {
            module: module_of(root, path),
            path: path.to_owned(),
            text,
            code,
            strings,
        }
    }

    fn in_module(&self, prefix: &str) -> bool {
        self.module == prefix || self.module.starts_with(&format!("{prefix}::"))
    }

    fn at(&self, line: usize) -> String {
        format!("{}:{line}", self.path.display())
    }
}

/// `src/metadb/pass/delta.rs` → `metadb::pass::delta`; `src/http/mod.rs` → `http`;
/// `src/lib.rs` → `` (the crate root).
fn module_of(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path).with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts.join("::")
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = rust_files(&root);
    assert!(files.len() > 40, "too few sources under {}", root.display());
    files.iter().map(|p| Source::read(&root, p)).collect()
}

/// Split Rust source into code (comments and literal contents blanked, newlines kept, so
/// line numbers stay) and its string literals (plain, raw and byte strings).
fn split(text: &str) -> (String, Vec<(usize, String)>) {
    let chars: Vec<char> = text.chars().collect();
    let mut code = String::with_capacity(text.len());
    let mut strings = Vec::new();
    let mut line = 1;
    let mut i = 0;
    // Blank one char of a comment or literal: keep newlines, drop the rest.
    let blank = |c: char, code: &mut String, line: &mut usize| {
        if c == '\n' {
            code.push('\n');
            *line += 1;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(chars[i], &mut code, &mut line);
                    i += 1;
                }
            }
        } else if let Some((hashes, open)) = raw_string_start(&chars, i) {
            // r"..", r#".."#, br"..": no escapes; ends at a quote and as many #.
            let start = line;
            let mut s = String::new();
            i = open + 1;
            code.push_str("\"\"");
            while i < chars.len() {
                if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                s.push(chars[i]);
                blank(chars[i], &mut code, &mut line);
                i += 1;
            }
            strings.push((start, s));
        } else if c == '"' || (c == 'b' && next == Some('"') && !ident_before(&chars, i)) {
            let start = line;
            let mut s = String::new();
            i += if c == 'b' { 2 } else { 1 };
            code.push_str("\"\"");
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    // An escape: what it stands for (a line continuation reads as a space).
                    if let Some(&e) = chars.get(i + 1) {
                        s.push(match e {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            '\n' => ' ',
                            e => e,
                        });
                        blank(e, &mut code, &mut line);
                    }
                    i += 2;
                    continue;
                }
                s.push(chars[i]);
                blank(chars[i], &mut code, &mut line);
                i += 1;
            }
            i += 1;
            strings.push((start, s));
        } else if c == '\'' {
            // A char literal ('x', '\n', '\'', '\u{e9}') or a lifetime ('a).
            let end = match (next, chars.get(i + 2)) {
                (Some('\\'), Some('u')) => (i + 3..chars.len())
                    .find(|&k| chars[k] == '}')
                    .map(|k| k + 1),
                (Some('\\'), _) => Some(i + 3),
                (_, Some('\'')) => Some(i + 2),
                _ => None,
            };
            match end {
                Some(e) => {
                    code.push_str("' '");
                    i = e + 1;
                }
                None => {
                    code.push(c);
                    i += 1;
                }
            }
        } else {
            if c == '\n' {
                line += 1;
            }
            code.push(c);
            i += 1;
        }
    }
    (code, strings)
}

fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// At `i`, `r"`, `r#"`, `br"`, `br#"`...: the number of `#` and the index of the opening
/// quote.
fn raw_string_start(chars: &[char], i: usize) -> Option<(usize, usize)> {
    if ident_before(chars, i) {
        return None;
    }
    let mut k = i;
    if chars.get(k) == Some(&'b') {
        k += 1;
    }
    if chars.get(k) != Some(&'r') {
        return None;
    }
    k += 1;
    let hashes = chars[k..].iter().take_while(|c| **c == '#').count();
    (chars.get(k + hashes) == Some(&'"')).then_some((hashes, k + hashes))
}

/// The 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at].matches('\n').count() + 1
}

/// Architecture invariant: no SQL outside `src/metadb`. Statements, dialect differences and
/// the query DSL live in `metadb`; the rest of the crate calls typed functions. A string
/// literal reads as SQL when it holds a statement's opening (`SELECT x`, `INSERT INTO`,
/// `UPDATE t SET`, `DELETE FROM`, DDL) in capitals; code may not name `diesel`, `rusqlite`
/// or `sql_query`.
#[test]
fn no_sql_outside_metadb() {
    let sql = Regex::new(
        r"\b(SELECT\s+(DISTINCT\s+)?[\w*(]|INSERT\s+INTO\b|UPDATE\s+\w+\s+SET\b|DELETE\s+FROM\b|(CREATE|ALTER|DROP)\s+(UNIQUE\s+)?(TABLE|INDEX|VIEW)\b|MERGE\s+INTO\b|UPSERT\b)",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let db = Regex::new(r"\b(diesel|rusqlite|sql_query)\b").unwrap_or_else(|e| panic!("{e}"));
    let mut bad = Vec::new();
    for s in sources().iter().filter(|s| !s.in_module("metadb")) {
        for (line, lit) in &s.strings {
            if sql.is_match(lit) {
                let shown: String = lit.chars().take(60).collect();
                bad.push(format!("{}: SQL in a string: {shown:?}", s.at(*line)));
            }
        }
        for m in db.find_iter(&s.code) {
            bad.push(format!(
                "{}: {} outside metadb",
                s.at(line_of(&s.code, m.start())),
                m.as_str()
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "SQL belongs in src/metadb (ARCHITECTURE.md, \"No SQL outside metadb\"):\n{}",
        bad.join("\n")
    );
}

/// The modules ARCHITECTURE.md calls pure: decisions over values, table-tested, no I/O.
const PURE: &[&str] = &[
    "airflow_python::answer",
    "approval",
    "audit",
    "authz",
    "dburl",
    "engine::decide",
    "engine::ruling",
    "estimate",
    "guard",
    "http::airflow_links",
    "http::airflow_session",
    "http::present",
    "lifecycle",
    "notification",
    "ordering",
    "paging",
    "ratelimit",
    "reconcile",
    "request",
    "rows",
    "runtypes",
    "schedule",
    "seed",
    "seedjob",
    "state",
    "steer",
    "taskset",
    "throttle",
    "turns",
    "webserver_config",
];

/// Paths a pure module must not use: std's files, sockets, processes, environment and
/// threads; the async runtime, DB, syscall, file-watching, HTTP and randomness crates; and
/// this crate's modules that do I/O. (`config` stays allowed: its section types are plain
/// values; reading the file is `Config::load`'s, called only at the edges.)
const IO_PATHS: &[&str] = &[
    "std::fs",
    "std::net",
    "std::process",
    "std::env",
    "std::os",
    "std::thread",
    "std::io::stdin",
    "std::io::stdout",
    "std::io::stderr",
    "tokio",
    "diesel",
    "rusqlite",
    "libsqlite3_sys",
    "nix",
    "libc",
    "notify",
    "tempfile",
    "axum",
    "axum_server",
    "ureq",
    "lettre",
    "signal_hook",
    "sd_notify",
    "getrandom",
    "crate::airflow_plugin",
    "crate::airflow_python",
    "crate::ctl",
    "crate::control",
    "crate::daemon",
    "crate::dagcopy",
    "crate::durable",
    "crate::engine",
    "crate::failpoint",
    "crate::http",
    "crate::metadb",
    "crate::metrics",
    "crate::service",
    "crate::spool",
];

/// The paths a module's code names, with their byte offsets: every `use` tree expanded (`use std::{fs, io::Read}` →
/// `std::fs`, `std::io::Read`) and every path written inline (`std::fs::read(..)`).
fn paths_used(code: &str) -> Vec<(usize, String)> {
    let use_stmt = Regex::new(r"\buse\s+([^;]+);").unwrap_or_else(|e| panic!("{e}"));
    let inline =
        Regex::new(r"(?:\b|::)((?:[A-Za-z_]\w*::)+[A-Za-z_]\w*)").unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    for m in use_stmt.captures_iter(code) {
        let (Some(whole), Some(tree)) = (m.get(0), m.get(1)) else {
            continue;
        };
        let at = whole.start();
        let tree = tree
            .as_str()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let tree = ["::", "{", "}", ","].iter().fold(tree, |t, sep| {
            t.replace(&format!(" {sep}"), sep)
                .replace(&format!("{sep} "), sep)
        });
        for p in expand_use("", &tree) {
            out.push((at, p));
        }
    }
    for m in inline.captures_iter(code) {
        if let Some(p) = m.get(1) {
            out.push((p.start(), p.as_str().to_owned()));
        }
    }
    out
}

/// `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e` (no spaces but in ` as `).
fn expand_use(prefix: &str, tree: &str) -> Vec<String> {
    let join = |p: &str, s: &str| {
        if p.is_empty() {
            s.to_owned()
        } else {
            format!("{p}::{s}")
        }
    };
    let Some(open) = tree.find('{') else {
        let path = tree
            .split(" as ")
            .next()
            .unwrap_or(tree)
            .trim_end_matches("::");
        return vec![join(prefix, path)];
    };
    let head = join(prefix, tree[..open].trim_end_matches("::"));
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut from) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[from..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| match p {
            "self" => vec![head.clone()],
            p => expand_use(&head, p),
        })
        .collect()
}

/// How many inline modules (`mod name { .. }`) enclose byte offset `at` of `code`.
fn inline_mod_depth(code: &str, at: usize) -> usize {
    let open = Regex::new(r"\bmod\s+\w+\s*\{").unwrap_or_else(|e| panic!("{e}"));
    open.find_iter(code)
        .filter(|m| m.end() <= at)
        .filter(|m| {
            // The matching close brace is past `at`.
            let mut depth = 1;
            for (i, c) in code[m.end()..].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            return m.end() + i > at;
                        }
                    }
                    _ => {}
                }
            }
            true
        })
        .count()
}

/// Whether `path` is `io` or inside it (`std::fs` matches `std::fs` and `std::fs::File`,
/// not `std::fsx`); a path into a module of [`PURE`] (`crate::airflow_python::answer`,
/// `crate::engine::ruling`), itself checked, is allowed.
fn names(path: &str, io: &str) -> bool {
    let path = path.trim_start_matches("::");
    let inside = |m: &str| path == m || path.starts_with(&format!("{m}::"));
    inside(io) && !PURE.iter().any(|p| inside(&format!("crate::{p}")))
}

/// Architecture invariant: the pure modules do no I/O. They take what they decide on as
/// values and return decisions; the engine and the metadb layer do the reading and writing.
/// This holds by construction while their code names no I/O module, which this checks.
#[test]
fn pure_modules_use_no_io() {
    let all = sources();
    let mut bad = Vec::new();
    for module in PURE {
        let files: Vec<&Source> = all.iter().filter(|s| s.in_module(module)).collect();
        if files.is_empty() {
            panic!("pure module {module} not found: update PURE and ARCHITECTURE.md");
        }
        // A pure module's submodules (its own files) are pure too.
        for (s, at, path) in files.iter().flat_map(|s| {
            paths_used(&s.code)
                .into_iter()
                .map(move |(at, p)| (*s, at, p))
        }) {
            let module = s.module.as_str();
            // `super` at a file's top level reaches its parent module, which may do I/O
            // (inside an inline `mod tests`, it is the file's own module).
            let path = match path.strip_prefix("super::") {
                Some(rest) if module.contains("::") && inline_mod_depth(&s.code, at) == 0 => {
                    let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
                    format!("crate::{parent}::{rest}")
                }
                _ => path,
            };
            if let Some(io) = IO_PATHS.iter().find(|io| names(&path, io)) {
                let line = line_of(&s.code, at);
                bad.push(format!("{}: {module} uses {path} ({io})", s.at(line)));
            }
        }
    }
    bad.sort();
    bad.dedup();
    assert!(
        bad.is_empty(),
        "pure modules must not do I/O (ARCHITECTURE.md, \"Pure modules do no I/O\"):\n{}",
        bad.join("\n")
    );
}

/// The most lines a binary's source may have.
const BIN_MAX_LINES: usize = 100;

/// Architecture invariant: the binaries stay thin. `src/bin/*.rs` parse arguments, set up
/// logging and map results to exit codes; every other line is in the library, where it is
/// tested. A binary defines no modules, no `impl` blocks or traits, at most three functions,
/// and calls into `backfilld::`.
#[test]
fn binaries_stay_thin() {
    let item = Regex::new(r"(?m)^\s*(pub(\([^)]*\))?\s+)?(mod|impl|trait|unsafe)\b")
        .unwrap_or_else(|e| panic!("{e}"));
    let func = Regex::new(r"\bfn\s+\w+").unwrap_or_else(|e| panic!("{e}"));
    let mut bad = Vec::new();
    let bins: Vec<Source> = sources()
        .into_iter()
        .filter(|s| s.in_module("bin"))
        .collect();
    assert!(bins.len() >= 2, "no binaries found under src/bin");
    for s in &bins {
        let lines = s.text.lines().count();
        if lines > BIN_MAX_LINES {
            bad.push(format!(
                "{}: {lines} lines (at most {BIN_MAX_LINES})",
                s.path.display()
            ));
        }
        for m in item.find_iter(&s.code) {
            bad.push(format!(
                "{}: `{}` in a binary",
                s.at(line_of(&s.code, m.start())),
                m.as_str().trim()
            ));
        }
        let fns = func.find_iter(&s.code).count();
        if fns > 3 {
            bad.push(format!("{}: {fns} functions (at most 3)", s.path.display()));
        }
        if !s.code.contains("backfilld::") {
            bad.push(format!("{}: does not call the library", s.path.display()));
        }
    }
    assert!(
        bad.is_empty(),
        "binaries stay thin; move the logic into the library (ARCHITECTURE.md, \"Thin binaries\"):\n{}",
        bad.join("\n")
    );
}

/// Whether the lines above `at` (0-based), past attributes, hold a doc comment.
fn documented(lines: &[&str], at: usize) -> bool {
    let mut i = at;
    while i > 0 {
        i -= 1;
        let l = lines[i].trim();
        if l.starts_with("///") || l.starts_with("/**") || l.starts_with("#[doc") {
            return true;
        }
        // Attributes and plain comments may stand between the docs and the item.
        if l.starts_with("#[")
            || l.starts_with("#![")
            || (l.starts_with("//") && !l.starts_with("//!"))
        {
            continue;
        }
        // The last line of an attribute spread over lines: find its `#[`, with brackets
        // balanced from there to here and no item or doc line between.
        if l.ends_with(']') {
            let opening = (i.saturating_sub(20)..i).rev().find(|&k| {
                let t = lines[k].trim();
                t.starts_with("#[") || t.starts_with("pub ") || t.starts_with("///")
            });
            if let Some(k) = opening.filter(|&k| lines[k].trim().starts_with("#[")) {
                let joined = lines[k..=i].concat();
                let depth = joined.chars().fold(0i32, |d, c| match c {
                    '[' | '(' | '{' => d + 1,
                    ']' | ')' | '}' => d - 1,
                    _ => d,
                });
                if depth == 0 {
                    i = k;
                    continue;
                }
            }
        }
        return false;
    }
    false
}

/// Every public item (`pub` functions, types, traits, constants, statics, modules, fields)
/// has a doc comment; `pub(crate)` and narrower are not public, and `pub use` re-exports
/// carry their item's docs. A module's docs may be its file's `//!` lines instead.
#[test]
fn public_items_have_docs() {
    let item = Regex::new(
        r"(?m)^[ \t]*pub[ \t]+(?:(?:unsafe|async|const|extern(?:[ \t]+\x22C\x22)?)[ \t]+)*(fn|struct|enum|trait|type|const|static|mod|union)[ \t]+(\w+)|^[ \t]*pub[ \t]+(\w+)[ \t]*:",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let all = sources();
    let mut bad = Vec::new();
    for s in &all {
        let lines: Vec<&str> = s.text.lines().collect();
        if !s.text.trim_start().starts_with("//!") && !s.in_module("bin") {
            bad.push(format!("{}: no module doc (`//!`)", s.path.display()));
        }
        for c in item.captures_iter(&s.code) {
            let Some(whole) = c.get(0) else { continue };
            let line = line_of(&s.code, whole.start());
            let name = c.get(2).or(c.get(3)).map_or("", |m| m.as_str());
            if documented(&lines, line - 1) {
                continue;
            }
            // `pub mod x;` may be documented by x's own `//!`.
            if c.get(1).is_some_and(|k| k.as_str() == "mod")
                && lines[line - 1].trim_end().ends_with(';')
            {
                let child = if s.module.is_empty() {
                    name.to_owned()
                } else {
                    format!("{}::{name}", s.module)
                };
                if all.iter().any(|o| o.module == child) {
                    continue;
                }
            }
            bad.push(format!("{}: pub {name} has no doc comment", s.at(line)));
        }
    }
    assert!(
        bad.is_empty(),
        "document every public item (one concise line will do):\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_lexer_reads_strings_and_comments() {
    let (code, strings) = split(
        "let a = \"x\\\"y\"; // SELECT 1\nlet b = r#\"q \"SELECT\"\"#; /* c */ let c = '\"'; let d = '\\\\'; fn f<'a>() {}\n",
    );
    let lits: Vec<&str> = strings.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(lits, ["x\"y", "q \"SELECT\""]);
    assert!(!code.contains("SELECT") && !code.contains("c */"), "{code}");
    assert!(code.contains("fn f<'a>()"), "{code}");
    assert_eq!(code.lines().count(), 2);
    let (_, escaped) = split("q(\"SELECT\\n  id \\\n  FROM t\");");
    assert_eq!(escaped, [(1, "SELECT\n  id    FROM t".to_owned())]);
    assert_eq!(
        expand_use("", "std::{fs,io::{self,Read},net::TcpStream as T,task}"),
        [
            "std::fs",
            "std::io",
            "std::io::Read",
            "std::net::TcpStream",
            "std::task"
        ]
    );
    assert!(names("crate::metadb::DbError", "crate::metadb"));
    assert!(!names("crate::metadbx", "crate::metadb"));
    assert!(!names(
        "crate::airflow_python::answer::Answer",
        "crate::airflow_python"
    ));
    assert!(!names("crate::engine::ruling::Ruling", "crate::engine"));
    assert!(names("crate::engine::Engine", "crate::engine"));
    assert!(names("crate::engine::rulings", "crate::engine"));
}
