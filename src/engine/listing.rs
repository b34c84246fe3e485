//! One page of a backfill list: the store read by keyset in batches (the page's size plus
//! one, doubling up to [`paging::BATCH_ROWS`]), each row checked against what the DB cannot filter (the caller's DAG
//! permissions, the seed API's date range), until [`Pager`] says the page is full. Memory holds
//! one batch and one page, never the whole list.

use crate::metadb::store::{BackfillRow, ListQuery, Store};
use crate::metadb::{DbError, MetaDb};
use crate::paging::{self, PageKey, Pager, Step};

/// A page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The backfills of the page, newest first.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<PageKey>,
}

/// The page of at most `limit` backfills matching `query` and `keep` after `cursor`, the
/// first `skip` of them left out, each turned into a `T` by `show`.
pub fn page<T>(
    db: &mut MetaDb,
    query: &ListQuery,
    cursor: Option<PageKey>,
    limit: usize,
    skip: usize,
    mut keep: impl FnMut(&BackfillRow) -> bool,
    mut show: impl FnMut(&BackfillRow) -> T,
) -> Result<Page<T>, DbError> {
    let mut pager = Pager::new(limit, skip);
    let mut items = Vec::new();
    let mut scanned = cursor;
    let mut last_taken: Option<PageKey> = None;
    // A small page reads little; a filter that drops rows makes the batches grow.
    let mut rows = limit.saturating_add(skip).saturating_add(1);
    loop {
        rows = rows.clamp(1, paging::BATCH_ROWS);
        let batch = Store::new(db).backfills_page(query, scanned.as_ref(), rows)?;
        let exhausted = batch.len() < rows;
        rows = rows.saturating_mul(2);
        for row in &batch {
            scanned = Some(key_of(row));
            if !keep(row) {
                continue;
            }
            match pager.offer(row.logical_dates.len()) {
                Step::Skip => {}
                Step::Take => {
                    items.push(show(row));
                    last_taken = Some(key_of(row));
                }
                Step::Full => {
                    return Ok(Page {
                        items,
                        next: last_taken,
                    })
                }
            }
        }
        if exhausted {
            return Ok(Page { items, next: None });
        }
    }
}

/// The keyset position of a row.
pub fn key_of(row: &BackfillRow) -> PageKey {
    PageKey {
        submitted_at: row.submitted_at,
        id: row.id.clone(),
    }
}
