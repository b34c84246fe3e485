//! The one integration-test binary: every end-to-end and real-Airflow test lives in a module here.

mod authz_matrix;
mod core_loop;
mod dagcopy;
mod rejections;
mod schedule_oracle;
mod spool_attacks;
mod support;
