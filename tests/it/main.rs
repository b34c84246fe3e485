//! The one integration-test binary: every end-to-end and real-Airflow test lives in a module here.

mod authz_matrix;
mod core_loop;
mod dagcopy;
mod db_outage;
mod http_api;
mod http_browser;
mod lifecycle;
mod matrix;
#[path = "../../benches/support/metagen.rs"]
mod metagen;
mod mysql;
mod reconcile_scale;
mod rejections;
mod schedule_oracle;
mod schema_detect;
mod seed_import;
mod service;
mod spool_attacks;
mod support;
mod throttle;
