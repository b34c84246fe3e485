//! The one integration-test binary: every end-to-end and real-Airflow test lives in a module here.

mod airflow_plugin;
mod approval;
mod audit_chain;
mod authz_matrix;
mod cluster;
mod copy_options;
mod core_loop;
mod dagcopy;
mod db_outage;
mod flood;
mod guard_rails;
mod http_api;
mod http_auth;
mod http_browser;
mod http_ldap;
mod http_sso;
mod lifecycle;
mod list_paging;
mod matrix;
mod metadb_suite;
#[path = "../../benches/support/metagen.rs"]
mod metagen;
mod metrics;
mod mysql;
mod plugin_timetables;
mod reconcile_scale;
mod rejections;
mod schedule_oracle;
mod schedule_tz_e2e;
mod schema_detect;
mod seed_import;
mod service;
mod spool_attacks;
mod support;
mod throttle;
