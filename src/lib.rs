//! backfilld: managed, restart-proof backfills for Apache Airflow.
//!
//! The crate is one library with two thin binaries (`backfilld`, `backfillctl`). See
//! `ARCHITECTURE.md` for the code map, the request flow and the invariants.
#![deny(clippy::unwrap_used)]

pub mod airflow_plugin;
pub mod airflow_python;
pub mod approval;
pub mod audit;
pub mod authz;
pub mod config;
pub mod control;
pub mod ctl;
pub mod daemon;
pub mod dagcopy;
pub mod dburl;
pub mod durable;
pub mod engine;
pub mod estimate;
pub mod failpoint;
pub mod guard;
pub mod http;
pub mod lifecycle;
pub mod metadb;
pub mod metrics;
pub mod notification;
pub mod ordering;
pub mod paging;
pub mod ratelimit;
pub mod reconcile;
pub mod request;
pub mod rows;
pub mod runtypes;
pub mod schedule;
pub mod seed;
pub mod seedjob;
pub mod service;
pub mod spool;
pub mod state;
pub mod steer;
pub mod taskset;
#[cfg(test)]
mod testutil;
pub mod throttle;
pub mod turns;
pub mod webserver_config;
