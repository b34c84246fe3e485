//! backfilld's Airflow plugin (`airflow_py/backfilld_plugin.py`): its source, and installing
//! it into (or removing it from) Airflow's plugins folder, only when `backfillctl
//! airflow-plugin install|uninstall` is run. The write is atomic (a temp name that does not
//! end in `.py`, fsynced, renamed into place), so Airflow never imports half a file, and
//! idempotent (the same content is not written again).

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// The plugin's source, the same file the packages ship in `/usr/share/backfilld/airflow/`.
pub const SOURCE: &str = include_str!("airflow_py/backfilld_plugin.py");

/// The plugin's file name in Airflow's plugins folder.
pub const FILE_NAME: &str = "backfilld_plugin.py";

/// Why installing or removing the plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The plugins folder is missing or not a directory.
    #[error("Airflow's plugins folder {0} does not exist (create it, or name one with --plugins-folder)")]
    NoFolder(PathBuf),
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// What `install` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// The file was written (new or changed).
    Written(PathBuf),
    /// The same file was already there.
    Unchanged(PathBuf),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PluginError {
    let path = path.to_path_buf();
    move |source| PluginError::Io { what, path, source }
}

/// Write the plugin into `folder` (mode 0644), atomically; nothing when it is already there.
pub fn install(folder: &Path) -> Result<Installed, PluginError> {
    if !folder.is_dir() {
        return Err(PluginError::NoFolder(folder.to_path_buf()));
    }
    let target = folder.join(FILE_NAME);
    if std::fs::read(&target).is_ok_and(|old| old == SOURCE.as_bytes()) {
        return Ok(Installed::Unchanged(target));
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".backfilld_plugin.")
        .suffix(".tmp")
        .tempfile_in(folder)
        .map_err(io("creating a temp file in", folder))?;
    tmp.write_all(SOURCE.as_bytes())
        .map_err(io("writing", tmp.path()))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(io("setting the mode of", &target))?;
    tmp.as_file().sync_all().map_err(io("syncing", &target))?;
    tmp.persist(&target)
        .map_err(|e| io("renaming into place", &target)(e.error))?;
    if let Ok(dir) = std::fs::File::open(folder) {
        let _ = dir.sync_all();
    }
    Ok(Installed::Written(target))
}

/// Remove the plugin (and Python's cached bytecode of it) from `folder`; whether it was there.
pub fn uninstall(folder: &Path) -> Result<bool, PluginError> {
    let target = folder.join(FILE_NAME);
    let existed = match std::fs::remove_file(&target) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(io("removing", &target)(e)),
    };
    let cache = folder.join("__pycache__");
    if let Ok(entries) = std::fs::read_dir(&cache) {
        let stem = FILE_NAME.trim_end_matches(".py");
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&format!("{stem}.")) && name.ends_with(".pyc") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(existed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_is_atomic_idempotent_and_uninstall_removes_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join(FILE_NAME);
        assert_eq!(
            install(dir.path()).ok(),
            Some(Installed::Written(path.clone()))
        );
        assert_eq!(std::fs::read_to_string(&path).ok().as_deref(), Some(SOURCE));
        let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o644));
        assert_eq!(
            install(dir.path()).ok(),
            Some(Installed::Unchanged(path.clone()))
        );
        std::fs::write(&path, "old").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            install(dir.path()).ok(),
            Some(Installed::Written(path.clone()))
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![FILE_NAME.to_owned()], "no temp file left");
        std::fs::create_dir(dir.path().join("__pycache__")).unwrap_or_else(|e| panic!("{e}"));
        let pyc = dir
            .path()
            .join("__pycache__/backfilld_plugin.cpython-311.pyc");
        std::fs::write(&pyc, "x").unwrap_or_else(|e| panic!("{e}"));
        assert!(uninstall(dir.path()).unwrap_or_else(|e| panic!("{e}")));
        assert!(!path.exists() && !pyc.exists());
        assert!(!uninstall(dir.path()).unwrap_or_else(|e| panic!("{e}")));
        assert!(matches!(
            install(&dir.path().join("missing")),
            Err(PluginError::NoFolder(_))
        ));
    }

    #[test]
    fn the_plugin_names_no_host() {
        assert!(!SOURCE.contains("localhost") && !SOURCE.contains("127.0.0.1"));
        assert!(SOURCE.contains("conf.get(\"backfilld\", \"ui_url\""));
    }
}
