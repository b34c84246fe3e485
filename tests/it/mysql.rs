//! Issue 4 on MySQL: the shared MariaDB server. Airflow 2.11 and 3.1 both migrate a fresh
//! MariaDB database themselves (`airflow db migrate`), so the whole core scenario runs there
//! with a real scheduler (LocalExecutor): backfilld's migrations, ingest and reconcile queries
//! all meet the schema Airflow generated.

use crate::matrix::core_scenario;
use crate::support::{Airflow, AirflowMajor};

#[test]
fn core_scenario_mysql_airflow2_then_3() {
    for (major, name) in [
        (AirflowMajor::V2, "mysql_af2"),
        (AirflowMajor::V3, "mysql_af3"),
    ] {
        let mut af = Airflow::mysql(major, name);
        let revision = af.query("SELECT version_num FROM alembic_version");
        let took = core_scenario(&mut af);
        eprintln!("core scenario, {major:?} + MariaDB (alembic {revision:?}): {took:?}");
    }
}
