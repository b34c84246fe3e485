//! The OpenAPI 3 document of backfilld's `/api/v2` (hand-written; `openapi.json` beside this
//! file). A unit test checks it is JSON and names every v2 route the router serves.

/// The document served at `/api/v2/openapi.json`.
pub const DOCUMENT: &str = include_str!("openapi.json");

#[cfg(test)]
mod tests {
    use super::DOCUMENT;

    #[test]
    fn document_names_every_v2_route() {
        let doc: serde_json::Value =
            serde_json::from_str(DOCUMENT).unwrap_or_else(|e| panic!("not JSON: {e}"));
        let paths = doc
            .get("paths")
            .and_then(|p| p.as_object())
            .unwrap_or_else(|| panic!("no paths"));
        for (path, method) in [
            ("/api/v2/backfills", "get"),
            ("/api/v2/backfills", "post"),
            ("/api/v2/backfills/{id}", "get"),
            ("/api/v2/backfills/{id}", "delete"),
            ("/api/v2/backfills/{id}/cancel", "post"),
            ("/api/v2/backfills/{id}/pause", "post"),
            ("/api/v2/backfills/{id}/resume", "post"),
            ("/api/v2/backfills/{id}/retry", "post"),
            ("/api/v2/backfills/{id}/approve", "post"),
            ("/api/v2/backfills/{id}/reject", "post"),
            ("/api/v2/dags", "get"),
            ("/api/v2/openapi.json", "get"),
        ] {
            assert!(
                paths.get(path).and_then(|p| p.get(method)).is_some(),
                "{method} {path} is not documented"
            );
        }
    }
}
