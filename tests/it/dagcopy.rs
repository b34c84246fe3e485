//! DAG copies (`backfilld::dagcopy`): request values never become code, and real Airflow 2 and 3
//! load the copies as exactly one DAG under the backfill id with the requested settings.

use std::path::{Path, PathBuf};
use std::process::Command;

use backfilld::dagcopy::{self, CopySpec, COPY_SUBDIR};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Map, Value};

use crate::support::{airflow_venv, AirflowMajor, DAGBAG_PRELUDE};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn date(text: &str) -> Result<DateTime<Utc>, Box<dyn std::error::Error>> {
    Ok(DateTime::parse_from_rfc3339(text)?.with_timezone(&Utc))
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not a JSON object: {other}"),
    }
}

/// Hostile strings: quoting of every kind, escapes, NULs, code, templates, odd unicode.
fn nasty_strings(marker: &Path) -> Vec<String> {
    let touch = format!(
        "__import__('pathlib').Path({:?}).touch()",
        marker.display().to_string()
    );
    let mut strings: Vec<String> = [
        "\"",
        "'",
        "\"\"\"",
        "'''",
        "\\",
        "\\\"",
        "\n",
        "\r\n\t",
        "\u{0}",
        "a\u{0}b",
        "\\u0000",
        "\\x00",
        "\\N{DIGIT ONE}",
        "\\u0022); import os #",
        "__import__('os').system('x')",
        "{{ params.region }}",
        "{% raw %}{{ }}{% endraw %}",
        "$(touch /tmp/backfilld-pwned)",
        "é😀\u{2028}\u{202e}\u{feff}",
        "# comment",
        "@@BACKFILLD_SPEC_BASE64@@",
        "\"); globals().clear(); (\"",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for quote in ["\"", "'", "\"\"\"", "'''"] {
        strings.push(format!("{quote}); {touch}; ({quote}"));
        strings.push(format!("{quote}\n{touch}\n{quote}"));
    }
    strings
}

/// Param overrides made of `strings`: each as a key, a value, and inside nested values.
fn nasty_params(strings: &[String]) -> Map<String, Value> {
    let mut params = Map::new();
    for (i, s) in strings.iter().enumerate() {
        params.insert(format!("{i}{s}"), json!(s));
    }
    params.insert(
        "nested".into(),
        json!({"list": strings, "map": {"k": strings}}),
    );
    params
}

/// Prints, for the copy at argv[1] of the origin at argv[2] (and a reference copy of the same
/// origin made from benign values at argv[3]): the decoded JSON document; fails unless the
/// overlay is the reference overlay with only the base64 literal changed.
const AST_CHECK: &str = r#"
import ast, base64, collections, copy, json, re, sys

copy_path, origin_path, reference_path = sys.argv[1:4]

def read(path):
    with open(path, "rb") as f:
        data = f.read()
    assert b"\0" not in data, "NUL byte in " + path
    return data.decode("utf-8")

origin = ast.parse(read(origin_path))

def overlay(path):
    tree = ast.parse(read(path))
    head = ast.Module(body=tree.body[: len(origin.body)], type_ignores=[])
    assert ast.dump(head) == ast.dump(origin), "origin part changed in " + path
    body = tree.body[len(origin.body):]
    call = body[-2].value
    assert isinstance(call, ast.Call) and call.func.id == "_backfilld_overlay_v1", ast.dump(call)
    assert len(call.args) == 2 and not call.keywords
    assert isinstance(call.args[0], ast.Call) and call.args[0].func.id == "globals"
    literal = call.args[1].value
    assert isinstance(literal, str) and re.fullmatch(r"[A-Za-z0-9+/=]+", literal), literal
    assert isinstance(body[-1], ast.Delete), ast.dump(body[-1])
    return body, literal

def constants(body):
    return collections.Counter(
        node.value
        for statement in body
        for node in ast.walk(statement)
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes))
    )

class Blank(ast.NodeTransformer):
    def __init__(self, literal):
        self.literal = literal
    def visit_Constant(self, node):
        if node.value == self.literal:
            return ast.Constant(value="<spec>")
        return node

def code_without(body, literal):
    body = [Blank(literal).visit(s) for s in copy.deepcopy(body)]
    return ast.dump(ast.Module(body=body, type_ignores=[]))

body, literal = overlay(copy_path)
reference_body, reference_literal = overlay(reference_path)
assert literal != reference_literal
# Same code: only the base64 literal differs.
assert code_without(body, literal) == code_without(reference_body, reference_literal)
# Same string constants: the template's own ones plus the base64 literal, nothing else.
expected = constants(reference_body)
expected[reference_literal] -= 1
expected[literal] += 1
assert constants(body) == +expected, (constants(body) - expected, expected - constants(body))
assert constants(body)[literal] == 1
document = json.loads(base64.b64decode(literal, validate=True).decode("utf-8"))
print(json.dumps({"document": document, "constants": sorted(constants(body))}))
"#;

fn run_python(program: &Path, script: &str, args: &[&Path]) -> String {
    let output = Command::new(program)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        program.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn request_values_never_become_code() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let marker = tmp.path().join("pwned");
    let strings = nasty_strings(&marker);
    let joined = strings.concat();
    let origin = "ORIGIN = 'origin'\nprint(ORIGIN)\n";
    let origin_path = tmp.path().join("origin.py");
    std::fs::write(&origin_path, origin)?;

    let nasty = CopySpec {
        backfill_id: format!("bf{joined}"),
        origin_dag_id: joined.clone(),
        start: date("2024-01-01T00:00:00Z")?,
        end: date("2024-01-04T12:30:00.123456Z")?,
        max_active_runs: 2,
        params: nasty_params(&strings),
        description: Some(joined.clone()),
        paused: false,
    };
    let benign = CopySpec {
        backfill_id: "bf".into(),
        origin_dag_id: "origin".into(),
        start: Utc
            .with_ymd_and_hms(2020, 1, 1, 0, 0, 0)
            .single()
            .ok_or("date")?,
        end: Utc
            .with_ymd_and_hms(2020, 1, 2, 0, 0, 0)
            .single()
            .ok_or("date")?,
        max_active_runs: 1,
        params: Map::new(),
        description: None,
        paused: false,
    };
    let dir = tmp.path().join(COPY_SUBDIR);
    let copy = dagcopy::write_atomically(
        &dir,
        &dagcopy::file_name("nasty"),
        dagcopy::render(origin, &nasty).as_bytes(),
        dagcopy::CopyAccess::default(),
    )?;
    let reference = dagcopy::write_atomically(
        &dir,
        &dagcopy::file_name("reference"),
        dagcopy::render(origin, &benign).as_bytes(),
        dagcopy::CopyAccess::default(),
    )?;

    let text = std::fs::read_to_string(&copy)?;
    for needle in [
        "__import__",
        "pathlib",
        "{{",
        "{%",
        "$(touch",
        "é",
        "\\N{",
        "globals().clear",
    ] {
        assert!(!text.contains(needle), "{needle:?} appears in the copy");
    }

    let out = run_python(
        Path::new("python3"),
        AST_CHECK,
        &[&copy, &origin_path, &reference],
    );
    let out: Value = serde_json::from_str(out.trim())?;
    let constants = out["constants"].as_array().ok_or("constants")?;
    for s in strings.iter().chain([&joined]) {
        assert!(
            !constants.iter().any(|c| c.as_str() == Some(s.as_str())),
            "request value {s:?} is a constant of the overlay"
        );
    }
    let document = &out["document"];
    assert_eq!(document["origin_dag_id"], json!(nasty.origin_dag_id));
    assert_eq!(document["backfill_dag_id"], json!(nasty.backfill_id));
    assert_eq!(document["description"], json!(nasty.description));
    assert_eq!(document["params"], Value::Object(nasty.params.clone()));
    assert_eq!(document["start_date"], json!("2024-01-01T00:00:00+00:00"));
    assert_eq!(
        document["end_date"],
        json!("2024-01-04T12:30:00.123456+00:00")
    );
    assert_eq!(document["max_active_runs"], json!(2));

    // Running the copy with a plain python3 executes nothing from the request.
    let status = Command::new("python3")
        .arg(&copy)
        .current_dir(tmp.path())
        .output()?;
    assert!(
        !status.status.success(),
        "the copy must fail without its DAG"
    );
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(stderr.contains("RuntimeError: backfilld: "), "{stderr}");
    assert!(!marker.exists(), "a request value was executed");
    Ok(())
}

// ----------------------------------------------------------------------------------------------
// Real Airflow
// ----------------------------------------------------------------------------------------------

/// Imports that work on Airflow 3 (`airflow.sdk`) and Airflow 2.
const IMPORTS: &str = r#"import pendulum

try:  # Airflow 3
    from airflow.sdk import DAG, Param, dag, task
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.providers.standard.operators.empty import EmptyOperator
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.decorators import dag, task
    from airflow.models.param import Param
    from airflow.operators.bash import BashOperator
    from airflow.operators.empty import EmptyOperator
"#;

/// `with DAG(...) as dag:`.
const WITH_DAG: &str = r#"
with DAG(
    dag_id="origin_with",
    schedule="@daily",
    start_date=pendulum.datetime(2020, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=7,
    params={
        "region": Param("eu", type="string", enum=["eu", "us"]),
        "limit": 10,
        "untouched": "keep",
    },
    tags=["team"],
) as dag:
    hello = BashOperator(
        task_id="hello",
        bash_command="echo {{ params.region }} {{ params.limit }} {{ params.untouched }} {{ params.get('added') }}",
    )
    done = EmptyOperator(task_id="done")
    hello >> done
"#;

/// Module-level `dag = DAG(...)`, operators attached with `dag=dag`, one with its own params.
const MODULE_LEVEL: &str = r#"
dag = DAG(
    "origin_module",
    schedule="@daily",
    start_date=pendulum.datetime(2020, 1, 1, tz="Europe/Paris"),
    params={"region": Param("eu", type="string"), "limit": 10, "untouched": "keep"},
    description="the origin",
)

hello = BashOperator(
    task_id="hello",
    bash_command="echo {{ params.region }} {{ params.limit }} {{ params.untouched }} {{ params.get('added') }}",
    dag=dag,
)
task_level = BashOperator(
    task_id="task_level",
    bash_command="echo {{ params.region }} {{ params.limit }} {{ params.untouched }} {{ params.get('added') }}",
    params={"limit": 5},
    dag=dag,
)
hello >> task_level
"#;

/// `@dag` called without assignment, with a mapped task.
const DECORATED: &str = r#"

@dag(
    dag_id="origin_decorated",
    schedule="@daily",
    start_date=pendulum.datetime(2020, 1, 1, tz="UTC"),
    params={"region": Param("eu", type="string"), "limit": 10, "untouched": "keep"},
)
def origin_decorated():
    @task
    def double(x):
        return 2 * x

    hello = BashOperator(
        task_id="hello",
        bash_command="echo {{ params.region }} {{ params.limit }} {{ params.untouched }} {{ params.get('added') }}",
    )
    hello >> double.expand(x=[1, 2, 3])


origin_decorated()
"#;

/// Several DAGs in one file (one per style), sharing Param objects, one with an alias; the
/// second scheduled on a dataset/asset or time (its copy keeps only the time part).
const SEVERAL: &str = r#"
try:  # Airflow 3.3+: the Task SDK's classes
    from airflow.sdk import Asset as SourceData, AssetOrTimeSchedule as DataOrTime, CronTriggerTimetable
    DATA_KEYWORD = "assets"
except ImportError:
    from airflow.timetables.trigger import CronTriggerTimetable
    try:  # Airflow 3.0 to 3.2
        from airflow.sdk import Asset as SourceData
        from airflow.timetables.assets import AssetOrTimeSchedule as DataOrTime
        DATA_KEYWORD = "assets"
    except ImportError:  # Airflow 2
        from airflow.datasets import Dataset as SourceData
        from airflow.timetables.datasets import DatasetOrTimeSchedule as DataOrTime
        DATA_KEYWORD = "datasets"

DATA_OR_TIME = DataOrTime(
    timetable=CronTriggerTimetable("0 0 * * *", timezone="UTC"),
    **{DATA_KEYWORD: [SourceData("s3://backfilld-test/source")]},
)
COMMON_PARAMS = {"region": Param("eu", type="string"), "limit": 10, "untouched": "keep"}

with DAG(
    "origin_first",
    schedule="@daily",
    start_date=pendulum.datetime(2020, 1, 1, tz="UTC"),
    params=COMMON_PARAMS,
) as first:
    BashOperator(task_id="hello", bash_command="echo first {{ params.region }}")

second = DAG(
    "origin_second",
    schedule=DATA_OR_TIME,
    start_date=pendulum.datetime(2020, 1, 1, tz="UTC"),
    params=COMMON_PARAMS,
)
BashOperator(
    task_id="hello",
    bash_command="echo {{ params.region }} {{ params.limit }} {{ params.untouched }} {{ params.get('added') }}",
    dag=second,
)
alias_of_second = second


@dag(dag_id="origin_third", schedule=None, start_date=pendulum.datetime(2020, 1, 1, tz="UTC"))
def origin_third():
    BashOperator(task_id="hello", bash_command="echo third")


origin_third()
"#;

/// Checks DagBags built from the folders in the expectations document (argv[1]); prints
/// "ALL CHECKS PASSED" or every failed check.
const AIRFLOW_CHECK: &str = r#"
import datetime, json, os, sys

exp = json.load(open(sys.argv[1]))

try:
    from airflow.sdk.definitions.param import process_params
except ImportError:
    from airflow.models.param import process_params

failures = []
DATA_OR_TIME_CLASSES = ("DatasetOrTimeSchedule", "AssetOrTimeSchedule")

def check(condition, message):
    if not condition:
        failures.append(message)

def dump(params):
    return params.dump() if hasattr(params, "dump") else dict(params)

def when(text):
    return datetime.datetime.fromisoformat(text)

def module_of(path):
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) == path:
            return module
    return None

bag = dag_bag(exp["dags_folder"])
check(bag.import_errors == {}, "import errors: %r" % (bag.import_errors,))
expected_ids = set(exp["origins"]) | {c["backfill_id"] for c in exp["copies"]}
check(set(bag.dags) == expected_ids, "dag ids %r != %r" % (sorted(bag.dags), sorted(expected_ids)))

for origin_id, file_name in exp["origins"].items():
    dag = bag.dags.get(origin_id)
    if dag is None:
        continue
    check(os.path.basename(dag.fileloc) == file_name, "%s from %s" % (origin_id, dag.fileloc))
    if "region" in dag.params:
        check(dump(dag.params)["region"] == "eu", "origin %s params changed: %r" % (origin_id, dump(dag.params)))
        for task in dag.tasks:
            check(dump(task.params)["region"] == "eu", "origin %s task params changed" % origin_id)
    check(not dag.catchup or origin_id != "origin_with", "origin_with catchup changed")
    if origin_id == "origin_second":
        check(type(dag.timetable).__name__ in DATA_OR_TIME_CLASSES, "origin_second lost its dataset/asset-or-time schedule: %r" % (dag.timetable,))

for c in exp["copies"]:
    bid = c["backfill_id"]
    dag = bag.dags.get(bid)
    if dag is None:
        failures.append("copy %s not loaded" % bid)
        continue
    path = os.path.join(exp["dags_folder"], c["file"])
    check(dag.fileloc == path, "%s fileloc %s != %s" % (bid, dag.fileloc, path))
    check(type(dag.timetable).__name__ not in DATA_OR_TIME_CLASSES, "%s: the copy can be triggered by dataset/asset events: %r" % (bid, dag.timetable))
    from_file = sorted(d.dag_id for d in bag.dags.values() if d.fileloc == dag.fileloc)
    check(from_file == [bid], "%s: DAGs from the copy file: %r" % (bid, from_file))

    module = module_of(path)
    origin_module = module_of(os.path.join(exp["dags_folder"], c["origin_file"]))
    if module is None or origin_module is None:
        failures.append("%s: modules not found" % bid)
    else:
        extra = set(vars(module)) - set(vars(origin_module))
        check(not extra, "%s: names left by the overlay: %r" % (bid, sorted(extra)))
        dags_in_globals = {v.dag_id for v in vars(module).values() if type(v).__name__ == "DAG"}
        check(dags_in_globals <= {bid}, "%s: DAGs in globals: %r" % (bid, dags_in_globals))

    for label, d in (("parsed", dag), ("serialized", SerializedDAG.from_dict(SerializedDAG.to_dict(dag)))):
        where = "%s (%s)" % (bid, label)
        check(d.dag_id == bid, "%s: dag_id %s" % (where, d.dag_id))
        check(d.start_date == when(c["start"]), "%s: start_date %r" % (where, d.start_date))
        check(d.end_date == when(c["end"]), "%s: end_date %r" % (where, d.end_date))
        check(d.catchup is True, "%s: catchup %r" % (where, d.catchup))
        check(d.max_active_runs == c["max_active_runs"], "%s: max_active_runs %r" % (where, d.max_active_runs))
        check(d.is_paused_upon_creation is False, "%s: is_paused_upon_creation %r" % (where, d.is_paused_upon_creation))
        check(d.description == c["description"], "%s: description %r" % (where, d.description))
        check("backfill" in d.tags and set(c["origin_tags"]) <= set(d.tags), "%s: tags %r" % (where, d.tags))
        check(dump(d.params) == c["params"], "%s: params %r" % (where, dump(d.params)))
        check(sorted(t.task_id for t in d.tasks) == sorted(c["task_ids"]), "%s: tasks %r" % (where, [t.task_id for t in d.tasks]))
        for t in d.tasks:
            twhere = "%s task %s" % (where, t.task_id)
            check(t.dag_id == bid, "%s: dag_id %s" % (twhere, t.dag_id))
            check(t.start_date == when(c["start"]), "%s: start_date %r" % (twhere, t.start_date))
            check(t.end_date == when(c["end"]), "%s: end_date %r" % (twhere, t.end_date))
            check(dump(t.params) == c["params"], "%s: params %r" % (twhere, dump(t.params)))
    for task_id, rendered in c["rendered"].items():
        t = dag.get_task(task_id)
        context = {"params": process_params(dag, t, None, suppress_exception=False)}
        got = t.render_template(t.bash_command, context)
        check(got == rendered, "%s task %s rendered %r != %r" % (bid, task_id, got, rendered))

ebag = dag_bag(exp["errors_folder"])
check(sorted(ebag.dags) == [], "DAGs from failing copies: %r" % (sorted(ebag.dags),))
errors = {os.path.basename(k): v for k, v in ebag.import_errors.items()}
check(sorted(errors) == sorted(exp["errors"]), "import errors for %r" % (sorted(errors),))
for file_name, needles in exp["errors"].items():
    for needle in needles:
        check(needle in errors.get(file_name, ""), "%s: %r not in %r" % (file_name, needle, errors.get(file_name)))

check(not os.path.exists(exp["marker"]), "a request value was executed")

if failures:
    print("\n".join(failures))
    sys.exit(1)
print("ALL CHECKS PASSED")
"#;

struct Origin {
    file: &'static str,
    body: &'static str,
}

const ORIGINS: [Origin; 4] = [
    Origin {
        file: "with_dag.py",
        body: WITH_DAG,
    },
    Origin {
        file: "module_level.py",
        body: MODULE_LEVEL,
    },
    Origin {
        file: "decorated.py",
        body: DECORATED,
    },
    Origin {
        file: "several.py",
        body: SEVERAL,
    },
];

fn origin_source(file: &str) -> String {
    let body = ORIGINS
        .iter()
        .find(|o| o.file == file)
        .map(|o| o.body)
        .unwrap_or_else(|| panic!("no origin {file}"));
    format!("{IMPORTS}{body}")
}

/// One copy checked in real Airflow (dates in RFC 3339).
struct CopyCase {
    file: &'static str,
    origin_id: &'static str,
    backfill_id: &'static str,
    start: &'static str,
    end: &'static str,
    description: Option<&'static str>,
    /// The description the copy must end up with.
    expected_description: Option<&'static str>,
    task_ids: &'static [&'static str],
    origin_tags: &'static [&'static str],
}

fn write_copy(
    folder: &Path,
    origin_file: &str,
    spec: &CopySpec,
) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let source = dagcopy::render(&origin_source(origin_file), spec);
    Ok(dagcopy::write_atomically(
        &folder.join(COPY_SUBDIR),
        &dagcopy::file_name(&spec.backfill_id),
        source.as_bytes(),
        dagcopy::CopyAccess::default(),
    )?)
}

fn airflow_loads_copies(major: AirflowMajor) -> TestResult {
    let venv = airflow_venv(major);
    let tmp = tempfile::tempdir()?;
    let dags = tmp.path().join("dags");
    let errors = tmp.path().join("errors");
    let marker = tmp.path().join("pwned");
    std::fs::create_dir_all(&dags)?;
    for origin in &ORIGINS {
        std::fs::write(dags.join(origin.file), origin_source(origin.file))?;
    }

    let overrides = object(json!({
        "region": "us",
        "limit": 42,
        "added": "fresh",
        "nested": {"a": [1, {"b": null}], "t": true},
    }));
    let merged = json!({
        "region": "us",
        "limit": 42,
        "untouched": "keep",
        "added": "fresh",
        "nested": {"a": [1, {"b": null}], "t": true},
    });
    let rendered = "echo us 42 keep fresh";
    let cases = [
        CopyCase {
            file: "with_dag.py",
            origin_id: "origin_with",
            backfill_id: "origin_with__bf_1",
            start: "2024-01-01T00:00:00Z",
            end: "2024-01-04T00:00:00Z",
            description: Some("backfill of origin_with"),
            expected_description: Some("backfill of origin_with"),
            task_ids: &["hello", "done"],
            origin_tags: &["team"],
        },
        CopyCase {
            file: "module_level.py",
            origin_id: "origin_module",
            backfill_id: "origin_module__bf_1",
            start: "2024-02-01T06:30:00.250000Z",
            end: "2024-02-03T06:30:00Z",
            description: None,
            expected_description: Some("the origin"),
            task_ids: &["hello", "task_level"],
            origin_tags: &[],
        },
        CopyCase {
            file: "decorated.py",
            origin_id: "origin_decorated",
            backfill_id: "origin_decorated__bf_1",
            start: "2023-12-30T00:00:00Z",
            end: "2024-01-02T00:00:00Z",
            description: Some("decorated backfill"),
            expected_description: Some("decorated backfill"),
            task_ids: &["hello", "double"],
            origin_tags: &[],
        },
        CopyCase {
            file: "several.py",
            origin_id: "origin_second",
            backfill_id: "origin_second__bf_1",
            start: "2024-01-01T00:00:00Z",
            end: "2024-01-02T00:00:00Z",
            description: Some("second"),
            expected_description: Some("second"),
            task_ids: &["hello"],
            origin_tags: &[],
        },
    ];
    let mut copies = Vec::new();
    for case in cases {
        let CopyCase {
            file,
            origin_id,
            backfill_id,
            start,
            end,
            description,
            expected_description,
            task_ids,
            origin_tags,
        } = case;
        let spec = CopySpec {
            backfill_id: backfill_id.into(),
            origin_dag_id: origin_id.into(),
            start: date(start)?,
            end: date(end)?,
            max_active_runs: 3,
            params: overrides.clone(),
            description: description.map(String::from),
            paused: false,
        };
        write_copy(&dags, file, &spec)?;
        let rendered: Map<String, Value> = task_ids
            .iter()
            .filter(|t| t.starts_with("hello") || **t == "task_level")
            .map(|t| (t.to_string(), json!(rendered)))
            .collect();
        copies.push(json!({
            "backfill_id": backfill_id,
            "file": format!("{COPY_SUBDIR}/{backfill_id}.py"),
            "origin_file": file,
            "start": spec.start.to_rfc3339(),
            "end": spec.end.to_rfc3339(),
            "max_active_runs": 3,
            "description": expected_description,
            "params": merged,
            "task_ids": task_ids,
            "origin_tags": origin_tags,
            "rendered": rendered,
        }));
    }

    // A copy of a copy (the origin source is itself a rendered copy): two overlays in a row.
    let first = CopySpec {
        backfill_id: "origin_with__bf_1".into(),
        origin_dag_id: "origin_with".into(),
        start: date("2024-01-01T00:00:00Z")?,
        end: date("2024-01-04T00:00:00Z")?,
        max_active_runs: 3,
        params: overrides.clone(),
        description: Some("backfill of origin_with".into()),
        paused: false,
    };
    let again = CopySpec {
        backfill_id: "origin_with__bf_1__again".into(),
        origin_dag_id: "origin_with__bf_1".into(),
        start: date("2024-03-01T00:00:00Z")?,
        end: date("2024-03-02T00:00:00Z")?,
        max_active_runs: 2,
        params: object(json!({"limit": 7})),
        description: None,
        paused: false,
    };
    let source = dagcopy::render(
        &dagcopy::render(&origin_source("with_dag.py"), &first),
        &again,
    );
    dagcopy::write_atomically(
        &dags.join(COPY_SUBDIR),
        &dagcopy::file_name(&again.backfill_id),
        source.as_bytes(),
        dagcopy::CopyAccess::default(),
    )?;
    let mut again_params = merged.clone();
    again_params["limit"] = json!(7);
    copies.push(json!({
        "backfill_id": again.backfill_id,
        "file": format!("{COPY_SUBDIR}/origin_with__bf_1__again.py"),
        "origin_file": "with_dag.py",
        "start": again.start.to_rfc3339(),
        "end": again.end.to_rfc3339(),
        "max_active_runs": 2,
        "description": "backfill of origin_with",
        "params": again_params,
        "task_ids": ["hello", "done"],
        "origin_tags": ["team"],
        "rendered": {"hello": "echo us 7 keep fresh"},
    }));

    // Hostile description and params go through real Airflow as plain data.
    let strings = nasty_strings(&marker);
    let mut nasty_params = nasty_params(&strings);
    nasty_params.insert("region".into(), json!("us"));
    let nasty = CopySpec {
        backfill_id: "origin_with__nasty".into(),
        origin_dag_id: "origin_with".into(),
        start: date("2024-01-01T00:00:00Z")?,
        end: date("2024-01-02T00:00:00Z")?,
        max_active_runs: 1,
        params: nasty_params.clone(),
        description: Some(strings.concat()),
        paused: false,
    };
    write_copy(&dags, "with_dag.py", &nasty)?;
    let mut nasty_merged = object(json!({"region": "us", "limit": 10, "untouched": "keep"}));
    nasty_merged.extend(nasty_params);
    copies.push(json!({
        "backfill_id": nasty.backfill_id,
        "file": format!("{COPY_SUBDIR}/origin_with__nasty.py"),
        "origin_file": "with_dag.py",
        "start": nasty.start.to_rfc3339(),
        "end": nasty.end.to_rfc3339(),
        "max_active_runs": 1,
        "description": nasty.description,
        "params": nasty_merged,
        "task_ids": ["hello", "done"],
        "origin_tags": ["team"],
        "rendered": {"hello": "echo us 10 keep None"},
    }));

    // Copies that must fail with a clear import error.
    let mut missing = CopySpec {
        backfill_id: "missing__bf".into(),
        origin_dag_id: "no_such_dag".into(),
        start: date("2024-01-01T00:00:00Z")?,
        end: date("2024-01-02T00:00:00Z")?,
        max_active_runs: 1,
        params: Map::new(),
        description: None,
        paused: false,
    };
    write_copy(&errors, "several.py", &missing)?;
    missing.backfill_id = "bad_param__bf".into();
    missing.origin_dag_id = "origin_with".into();
    missing.params = object(json!({"region": "xx"}));
    write_copy(&errors, "with_dag.py", &missing)?;

    let origins = json!({
        "origin_with": "with_dag.py",
        "origin_module": "module_level.py",
        "origin_decorated": "decorated.py",
        "origin_first": "several.py",
        "origin_second": "several.py",
        "origin_third": "several.py",
    });
    let expectations = json!({
        "dags_folder": dags,
        "errors_folder": errors,
        "marker": marker,
        "origins": origins,
        "copies": copies,
        "errors": {
            "missing__bf.py": [
                "backfilld: DAG 'no_such_dag' not found in this file",
                "'missing__bf'",
                "origin_first",
            ],
            "bad_param__bf.py": ["backfilld: override of param 'region' rejected", "'xx'"],
        },
    });
    let expectations_path = tmp.path().join("expectations.json");
    std::fs::write(
        &expectations_path,
        serde_json::to_vec_pretty(&expectations)?,
    )?;

    let home = tmp.path().join("airflow_home");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![venv.join("bin")];
    paths.extend(std::env::split_paths(&path));
    let output = Command::new(venv.join("bin/python"))
        .arg("-c")
        .arg(format!("{DAGBAG_PRELUDE}{AIRFLOW_CHECK}"))
        .arg(&expectations_path)
        .env("PATH", std::env::join_paths(paths)?)
        .env("AIRFLOW_HOME", &home)
        .env("AIRFLOW__CORE__DAGS_FOLDER", &dags)
        .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        .env("AIRFLOW__LOGGING__LOGGING_LEVEL", "ERROR")
        .current_dir(tmp.path())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("ALL CHECKS PASSED"),
        "Airflow {major:?} checks failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

#[test]
fn airflow2_loads_copies_as_one_dag_each() -> TestResult {
    airflow_loads_copies(AirflowMajor::V2)
}

#[test]
fn airflow3_loads_copies_as_one_dag_each() -> TestResult {
    airflow_loads_copies(AirflowMajor::V3)
}
