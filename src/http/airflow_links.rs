//! Links from the web UI into Airflow's own UI: the DAG, a run, a task instance's log, and
//! FAB's sign-in page. The two majors route differently (2.x: Flask views, the grid and
//! `/log`; 3.x: the React UI's `/dags/<id>/runs/<run_id>/tasks/<task_id>`). Pure: URLs from a
//! base URL and ids.

use crate::config::AirflowBaseUrls;

/// Airflow's UI at one base URL, of one major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AirflowUi<'a> {
    base: &'a str,
    v3: bool,
}

/// Percent-encode a path segment or query value (everything but RFC 3986's unreserved).
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether `path` is a path on this site: one leading `/` (`//` would name another host),
/// then URL characters only (no `\`, which browsers read as `/`, no spaces or controls).
fn same_site_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.starts_with("//")
        && path.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
}

impl<'a> AirflowUi<'a> {
    /// The UI of the major in use (`v3`: Airflow 3), if its base URL is configured.
    pub fn new(urls: &'a AirflowBaseUrls, v3: bool) -> Option<AirflowUi<'a>> {
        let base = if v3 { &urls.v3 } else { &urls.v2 };
        base.as_deref()
            .filter(|b| b.starts_with("http://") || b.starts_with("https://"))
            .map(|base| AirflowUi { base, v3 })
    }

    /// FAB's sign-in page, sending the browser to `next` after signing in: Airflow 2's
    /// webserver `/login/` (FAB's auth view), Airflow 3's FAB auth manager `/auth/login/` on the
    /// api-server (as `FabAuthManager.get_url_login` builds it), both with `?next=`, which FAB
    /// follows only to its own host. `next` is a path on this site that backfilld built (see
    /// the UI's login page); anything else is left out, so the link never names another site.
    pub fn fab_login(&self, next: &str) -> String {
        let page = if self.v3 { "auth/login/" } else { "login/" };
        if same_site_path(next) {
            format!("{}/{page}?next={}", self.base, encode(next))
        } else {
            format!("{}/{page}", self.base)
        }
    }

    /// A DAG's page (2.x: its grid).
    pub fn dag(&self, dag_id: &str) -> String {
        if self.v3 {
            format!("{}/dags/{}", self.base, encode(dag_id))
        } else {
            format!("{}/dags/{}/grid", self.base, encode(dag_id))
        }
    }

    /// One run of a DAG (2.x: the grid with the run selected).
    pub fn run(&self, dag_id: &str, run_id: &str) -> String {
        if self.v3 {
            format!("{}/runs/{}", self.dag(dag_id), encode(run_id))
        } else {
            format!("{}?dag_run_id={}", self.dag(dag_id), encode(run_id))
        }
    }

    /// A task instance's log: 2.x's `/log` view needs the logical date (RFC 3339), 3.x's
    /// task instance page the run id; `map_index` -1 is an unmapped task.
    pub fn task_log(
        &self,
        dag_id: &str,
        run_id: &str,
        logical_date: &str,
        task_id: &str,
        map_index: i64,
    ) -> String {
        if self.v3 {
            let task = format!("{}/tasks/{}", self.run(dag_id, run_id), encode(task_id));
            if map_index >= 0 {
                format!("{task}/mapped/{map_index}")
            } else {
                task
            }
        } else {
            let mut u = format!(
                "{}/log?dag_id={}&task_id={}&execution_date={}",
                self.base,
                encode(dag_id),
                encode(task_id),
                encode(logical_date)
            );
            if map_index >= 0 {
                u.push_str(&format!("&map_index={map_index}"));
            }
            u
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls() -> AirflowBaseUrls {
        AirflowBaseUrls {
            v2: Some("http://af2:8080".into()),
            v3: Some("https://af3.example/airflow".into()),
        }
    }

    #[test]
    fn airflow2_routes() {
        let u = urls();
        let ui = AirflowUi::new(&u, false).unwrap_or_else(|| panic!("no UI"));
        assert_eq!(ui.dag("sales"), "http://af2:8080/dags/sales/grid");
        assert_eq!(
            ui.run("sales_backfill_1", "backfill__2024-02-01T00:00:00+00:00"),
            "http://af2:8080/dags/sales_backfill_1/grid?dag_run_id=backfill__2024-02-01T00%3A00%3A00%2B00%3A00"
        );
        assert_eq!(
            ui.task_log("d", "r", "2024-02-01T00:00:00Z", "group.load", -1),
            "http://af2:8080/log?dag_id=d&task_id=group.load&execution_date=2024-02-01T00%3A00%3A00Z"
        );
        assert!(ui.task_log("d", "r", "t", "x", 3).ends_with("&map_index=3"));
    }

    #[test]
    fn airflow3_routes() {
        let u = urls();
        let ui = AirflowUi::new(&u, true).unwrap_or_else(|| panic!("no UI"));
        assert_eq!(ui.dag("sales"), "https://af3.example/airflow/dags/sales");
        assert_eq!(
            ui.run("d", "backfill__2024-02-01T00:00:00+00:00"),
            "https://af3.example/airflow/dags/d/runs/backfill__2024-02-01T00%3A00%3A00%2B00%3A00"
        );
        assert_eq!(
            ui.task_log("d", "r 1", "ignored", "load", -1),
            "https://af3.example/airflow/dags/d/runs/r%201/tasks/load"
        );
        assert_eq!(
            ui.task_log("d", "r", "ignored", "load", 2),
            "https://af3.example/airflow/dags/d/runs/r/tasks/load/mapped/2"
        );
    }

    #[test]
    fn no_base_url_no_links() {
        let none = AirflowBaseUrls::default();
        assert_eq!(AirflowUi::new(&none, false), None);
        assert_eq!(AirflowUi::new(&none, true), None);
        let odd = AirflowBaseUrls {
            v2: Some("javascript:alert(1)".into()),
            v3: None,
        };
        assert_eq!(AirflowUi::new(&odd, false), None);
        assert_eq!(AirflowUi::new(&urls(), true).map(|u| u.v3), Some(true));
    }

    #[test]
    fn fab_sign_in_comes_back_to_this_site_only() {
        let v2 = AirflowBaseUrls {
            v2: Some("http://af2:8080".into()),
            v3: None,
        };
        let v3 = AirflowBaseUrls {
            v2: None,
            v3: Some("https://af3.example/airflow".into()),
        };
        let cases: [(&AirflowBaseUrls, bool, &str, &str); 12] = [
            (&v2, false, "/", "http://af2:8080/login/?next=%2F"),
            (
                &v2,
                false,
                "/backfills/backfills/sales_backfill_1",
                "http://af2:8080/login/?next=%2Fbackfills%2Fbackfills%2Fsales_backfill_1",
            ),
            (
                &v2,
                false,
                "/backfills/new?dag_id=sales&start=2024-01-01",
                "http://af2:8080/login/?next=%2Fbackfills%2Fnew%3Fdag_id%3Dsales%26start%3D2024-01-01",
            ),
            (&v3, true, "/", "https://af3.example/airflow/auth/login/?next=%2F"),
            (
                &v3,
                true,
                "/backfills/backfills/a%20b",
                "https://af3.example/airflow/auth/login/?next=%2Fbackfills%2Fbackfills%2Fa%2520b",
            ),
            (
                &v3,
                true,
                "/backfills/new",
                "https://af3.example/airflow/auth/login/?next=%2Fbackfills%2Fnew",
            ),
            // Never another site: no next rather than a foreign one.
            (&v2, false, "//evil.example/", "http://af2:8080/login/"),
            (&v2, false, "https://evil.example/", "http://af2:8080/login/"),
            (&v3, true, "/\\evil.example/", "https://af3.example/airflow/auth/login/"),
            (&v3, true, "backfills/", "https://af3.example/airflow/auth/login/"),
            (&v3, true, "", "https://af3.example/airflow/auth/login/"),
            (&v2, false, "/a b\n", "http://af2:8080/login/"),
        ];
        for (urls, is_v3, next, want) in cases {
            let ui = AirflowUi::new(urls, is_v3).unwrap_or_else(|| panic!("no UI"));
            assert_eq!(ui.fab_login(next), want, "next = {next:?}");
        }
    }

    #[test]
    fn encodes_unreserved_only() {
        assert_eq!(encode("a b/ü"), "a%20b%2F%C3%BC");
        assert_eq!(encode("<\"&'>"), "%3C%22%26%27%3E");
    }
}
