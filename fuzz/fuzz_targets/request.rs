//! Fuzz request parsing (create and life-cycle files), validation and overlay rendering: whatever bytes a user drops, parsing
//! never panics or hangs, an accepted request has a safe DAG id, and the rendered DAG copy is
//! the origin source plus the fixed overlay with only base64 in place of the spec, which decodes
//! to exactly the request's values.
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;

use backfilld::dagcopy::{self, CopySpec};
use backfilld::request;

const ORIGIN: &str = "from airflow import DAG\nwith DAG(dag_id=\"sales\") as dag:\n    pass\n";
const MARKER: &str = "_backfilld_overlay_v1(globals(), \"";

fuzz_target!(|data: &[u8]| {
    // Life-cycle files (`action` + `id`): an accepted one names a backfill by a safe id only.
    if let Ok(request::Parsed::Operate(op)) = request::parse_any(data, 16) {
        assert!(!op.id.is_empty());
        assert!(op
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)));
        assert!(!op.id.contains(".."));
        return;
    }
    let Ok(req) = request::parse(data, 16) else {
        return;
    };
    assert!(req
        .dag_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)));
    assert!(req.start <= req.end);
    assert!((1..=16).contains(&req.max_active_runs));
    let id = format!("{}_backfill_20240101_000000", req.dag_id);
    let name = dagcopy::file_name(&id);
    assert!(!name.contains('/') && !name.contains('\0'));
    let spec = CopySpec {
        backfill_id: id,
        origin_dag_id: req.dag_id.clone(),
        start: req.start,
        end: req.end,
        max_active_runs: req.max_active_runs,
        params: req.params.clone(),
        description: req.description.clone(),
        paused: false,
    };
    let out = dagcopy::render(ORIGIN, &spec);
    assert!(out.starts_with(ORIGIN));
    let start = out.rfind(MARKER).map(|i| i + MARKER.len()).unwrap_or(0);
    assert!(start > 0, "no overlay call");
    let len = out[start..].find('"').unwrap_or(0);
    let token = &out[start..start + len];
    assert!(token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'='));
    // Everything but the token is request-independent: the same as for an empty request.
    let blank = CopySpec {
        params: serde_json::Map::new(),
        description: None,
        ..spec.clone()
    };
    let reference = dagcopy::render(ORIGIN, &blank);
    let rs = reference
        .rfind(MARKER)
        .map(|i| i + MARKER.len())
        .unwrap_or(0);
    let rlen = reference[rs..].find('"').unwrap_or(0);
    assert_eq!(&out[..start], &reference[..rs]);
    assert_eq!(&out[start + len..], &reference[rs + rlen..]);
    let doc: serde_json::Value = base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null);
    assert_eq!(doc["params"], serde_json::Value::Object(req.params.clone()));
    assert_eq!(
        doc["description"],
        req.description
            .clone()
            .map(serde_json::Value::String)
            .unwrap_or(serde_json::Value::Null)
    );
});
