//! The engine's side of the `[limits]` guard rails that need the DB (the refusals themselves
//! are written by the pure `guard` module).

use super::{Checked, Connected, Identity, Ruling};
use crate::config::LimitsSection;
use crate::guard;
use crate::metadb::store::Store;

/// Refuses a new backfill (create, dry run or retry) for the Airflow user it is decided for,
/// when that user has `[limits] max_active_backfills_per_user` unfinished backfills already
/// (counted over the connection `c`).
pub(super) fn under_active_limit(
    c: &mut Connected,
    limits: &LimitsSection,
    ident: &Identity,
) -> Checked<()> {
    let limit = limits.max_active_backfills_per_user;
    let user = ident.airflow_user.clone().unwrap_or_default();
    let active = Store::new(&mut c.db).active_backfills_of(&user)?;
    Ok(match guard::active_backfills(&user, active, limit) {
        Some(refusal) => Ruling::Refuse(refusal),
        None => Ruling::Admit(()),
    })
}
