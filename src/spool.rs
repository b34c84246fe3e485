//! The spool directory: where users drop request files, and the only place backfilld reads
//! them from. Every byte in `incoming/` is hostile.
//!
//! Layout under the spool root (created by the daemon, modes checked at start):
//! - `incoming/` (1733): anyone may create files; nobody may list it or touch others' files;
//! - `active/` (0700): files claimed by the daemon, by an atomic rename, until decided;
//! - `accepted/`, `rejected/` (0700): decided files, kept with a `.receipt.json` beside them;
//! - `public/` (0755): the control socket.
//!
//! A file is claimed (renamed into `active/` under a unique name) before it is opened, so nobody
//! can swap it afterwards; it is then opened without following links, checked with `fstat` on
//! the descriptor, read once with a size cap, and identified by [`ClaimedFile::key`], which is
//! stable across restarts: re-reading a claimed file after a crash yields the same key.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat2, AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};
use sha2::{Digest, Sha256};

use crate::request::{ReasonCode, Rejection};

/// Subdirectory users drop requests into.
pub const INCOMING: &str = "incoming";
/// Subdirectory of claimed, undecided files.
pub const ACTIVE: &str = "active";
/// Subdirectory of accepted files.
pub const ACCEPTED: &str = "accepted";
/// Subdirectory of rejected files.
pub const REJECTED: &str = "rejected";
/// Subdirectory holding the control socket.
pub const PUBLIC: &str = "public";

const LAYOUT: [(&str, u32); 5] = [
    (INCOMING, 0o1733),
    (ACTIVE, 0o700),
    (ACCEPTED, 0o700),
    (REJECTED, 0o700),
    (PUBLIC, 0o755),
];

/// Errors of the spool itself (not of a request in it).
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A filesystem operation failed.
    #[error("spool {path}: {message}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The layout is unsafe; the daemon refuses to start.
    #[error("refusing to use spool: {0}")]
    Unsafe(String),
}

fn io_err(path: &Path, what: &str, e: impl std::fmt::Display) -> SpoolError {
    SpoolError::Io {
        path: path.to_owned(),
        message: format!("{what}: {e}"),
    }
}

/// Where a decided file goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Into `accepted/`.
    Accepted,
    /// Into `rejected/`.
    Rejected,
}

/// The open spool.
pub struct Spool {
    root: PathBuf,
    incoming: OwnedFd,
    active: OwnedFd,
    accepted: OwnedFd,
    rejected: OwnedFd,
    max_bytes: u64,
}

/// A file read from `active/` that passed the file checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestBytes {
    /// The owner uid, from `fstat` on the opened descriptor.
    pub uid: u32,
    /// The content.
    pub bytes: Vec<u8>,
}

/// A claimed file after reading.
#[derive(Debug, Clone)]
pub struct ClaimedFile {
    /// Its name in `active/` (and later in `accepted/` or `rejected/`).
    pub claim_name: String,
    /// The name the requester gave it.
    pub file_name: String,
    /// Durable identity: hash of the claim name and content.
    pub key: String,
    /// The content, or why the file itself is unacceptable (with its owner when known).
    pub content: Result<RequestBytes, (Option<u32>, Rejection)>,
}

impl Spool {
    /// Open the spool, creating missing directories with their modes; refuse one that exists
    /// with looser modes or another owner.
    pub fn open(root: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        let euid = nix::unistd::geteuid().as_raw();
        if !root.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(root)
                .map_err(|e| io_err(root, "create", e))?;
        }
        check_parents(root, euid)?;
        for warning in kernel_protection_warnings(Path::new("/proc/sys/fs")) {
            tracing::warn!("{warning}");
        }
        let meta = std::fs::symlink_metadata(root).map_err(|e| io_err(root, "stat", e))?;
        if !meta.is_dir() || meta.mode() & 0o022 != 0 || meta.uid() != euid {
            return Err(SpoolError::Unsafe(format!(
                "{} must be a directory owned by uid {euid} and writable by no one else (mode {:o})",
                root.display(),
                meta.mode() & 0o7777
            )));
        }
        let mut fds = Vec::new();
        for (name, mode) in LAYOUT {
            let path = root.join(name);
            match std::fs::symlink_metadata(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&path)
                        .map_err(|e| io_err(&path, "create", e))?;
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                        .map_err(|e| io_err(&path, "chmod", e))?;
                }
                Err(e) => return Err(io_err(&path, "stat", e)),
                Ok(m) => {
                    if !m.is_dir() || m.uid() != euid || m.mode() & 0o7777 != mode {
                        return Err(SpoolError::Unsafe(format!(
                            "{} must be a directory owned by uid {euid} with mode {mode:o}, found {}mode {:o} owned by uid {} (fix: chown {euid} {p} && chmod {mode:o} {p})",
                            path.display(),
                            if m.is_dir() { "" } else { "a non-directory with " },
                            m.mode() & 0o7777,
                            m.uid(),
                            p = path.display()
                        )));
                    }
                }
            }
            let fd = nix::fcntl::open(
                &path,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io_err(&path, "open", e))?;
            fds.push(fd);
        }
        let mut fds = fds.into_iter();
        let mut next = || {
            fds.next()
                .ok_or_else(|| SpoolError::Unsafe("spool layout incomplete".into()))
        };
        let (incoming, active, accepted, rejected, _public) =
            (next()?, next()?, next()?, next()?, next()?);
        Ok(Spool {
            root: root.to_owned(),
            incoming,
            active,
            accepted,
            rejected,
            max_bytes,
        })
    }

    /// The spool root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn names(&self, sub: &str) -> Result<Vec<String>, SpoolError> {
        let path = self.root.join(sub);
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&path).map_err(|e| io_err(&path, "list", e))? {
            let entry = entry.map_err(|e| io_err(&path, "list", e))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// Names in `incoming/` waiting to be claimed. Dot files (writers' temp files) are skipped.
    pub fn incoming(&self) -> Result<Vec<String>, SpoolError> {
        Ok(self
            .names(INCOMING)?
            .into_iter()
            .filter(|n| !n.starts_with('.'))
            .collect())
    }

    /// Claimed, undecided files (left by a crash or a DB outage), oldest first.
    pub fn claimed(&self) -> Result<Vec<String>, SpoolError> {
        Ok(self
            .names(ACTIVE)?
            .into_iter()
            .filter(|n| !n.starts_with('.'))
            .collect())
    }

    /// Move `incoming/name` into `active/` under a new unique name. `None` when the file is
    /// gone (its owner removed it, or another process claimed it first).
    pub fn claim(&self, name: &str) -> Result<Option<String>, SpoolError> {
        let now = chrono::Utc::now();
        let stamp = now.format("%Y%m%dT%H%M%S%9fZ");
        let safe = if valid_file_name(name) {
            name.to_owned()
        } else {
            format!(
                "badname-{}",
                &hex::encode(Sha256::digest(name.as_bytes()))[..16]
            )
        };
        for attempt in 0..100u32 {
            let claim = if attempt == 0 {
                format!("{stamp}.{safe}")
            } else {
                format!("{stamp}-{attempt}.{safe}")
            };
            match renameat2(
                self.incoming.as_fd(),
                name,
                self.active.as_fd(),
                claim.as_str(),
                RenameFlags::RENAME_NOREPLACE,
            ) {
                Ok(()) => {
                    // Remember the requester's own name for the record and receipts.
                    if safe != name {
                        self.write_side(
                            Disposition::Accepted,
                            &claim,
                            "name",
                            name.as_bytes(),
                            true,
                        )?;
                    }
                    return Ok(Some(claim));
                }
                Err(Errno::ENOENT) => return Ok(None),
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(io_err(&self.root.join(INCOMING).join(name), "claim", e)),
            }
        }
        Err(io_err(
            &self.root.join(ACTIVE),
            "claim",
            "no free claim name",
        ))
    }

    /// Open and read a claimed file with every check on the descriptor.
    pub fn read_claimed(&self, claim_name: &str) -> Result<ClaimedFile, SpoolError> {
        let file_name = self.original_name(claim_name);
        let path = self.root.join(ACTIVE).join(claim_name);
        let content = self.read_checked(claim_name, &path)?;
        let mut h = Sha256::new();
        h.update(claim_name.as_bytes());
        h.update([0u8]);
        if let Ok(c) = &content {
            h.update(&c.bytes);
        }
        Ok(ClaimedFile {
            claim_name: claim_name.to_owned(),
            file_name,
            key: hex::encode(h.finalize()),
            content,
        })
    }

    fn original_name(&self, claim_name: &str) -> String {
        let side = format!(".{claim_name}.name");
        if let Ok(fd) = openat(
            self.accepted.as_fd(),
            side.as_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            let mut s = String::new();
            if std::fs::File::from(fd)
                .take(4096)
                .read_to_string(&mut s)
                .is_ok()
            {
                return s;
            }
        }
        claim_name
            .split_once('.')
            .map(|(_, n)| n.to_owned())
            .unwrap_or_else(|| claim_name.to_owned())
    }

    fn read_checked(
        &self,
        claim_name: &str,
        path: &Path,
    ) -> Result<Result<RequestBytes, (Option<u32>, Rejection)>, SpoolError> {
        let reject =
            |uid: Option<u32>, code, msg: String| Ok(Err((uid, Rejection::new(code, msg))));
        let entry = fstatat(
            self.active.as_fd(),
            claim_name,
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_err(path, "stat", e))?;
        let uid = Some(entry.st_uid);
        let kind = SFlag::from_bits_truncate(entry.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFLNK {
            return reject(uid, ReasonCode::Symlink, "the request is a symbolic link; backfilld never follows links: drop a regular file".into());
        }
        if kind != SFlag::S_IFREG {
            return reject(
                uid,
                ReasonCode::NotRegularFile,
                format!("the request is a {}, not a regular file", kind_name(kind)),
            );
        }
        let fd = match openat(
            self.active.as_fd(),
            claim_name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ELOOP) => return reject(uid, ReasonCode::Symlink, "the request is a symbolic link".into()),
            Err(Errno::EACCES) => {
                return reject(uid, ReasonCode::NotRegularFile, "backfilld cannot read the request: make it readable by others (chmod 0644) before dropping it".into())
            }
            Err(e) => return Err(io_err(path, "open", e)),
        };
        let before = fstat(fd.as_fd()).map_err(|e| io_err(path, "fstat", e))?;
        let uid = Some(before.st_uid);
        if before.st_dev != entry.st_dev || before.st_ino != entry.st_ino {
            return reject(
                uid,
                ReasonCode::ChangedWhileReading,
                "the request was replaced while it was opened".into(),
            );
        }
        if SFlag::from_bits_truncate(before.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return reject(
                uid,
                ReasonCode::NotRegularFile,
                "the request is not a regular file".into(),
            );
        }
        if before.st_mode & 0o7022 != 0 {
            return reject(
                uid,
                ReasonCode::UnsafeMode,
                format!(
                    "the request has mode {:o}; drop a file without setuid/setgid/sticky bits, writable only by its owner (chmod 0644)",
                    before.st_mode & 0o7777
                ),
            );
        }
        if before.st_nlink != 1 {
            return reject(
                uid,
                ReasonCode::HardLinked,
                format!(
                    "the request has {} hard links; drop a file with exactly one",
                    before.st_nlink
                ),
            );
        }
        let size = u64::try_from(before.st_size).unwrap_or(u64::MAX);
        if size > self.max_bytes {
            return reject(
                uid,
                ReasonCode::TooLarge,
                format!(
                    "the request is {size} bytes; at most {} allowed",
                    self.max_bytes
                ),
            );
        }
        let mut bytes = Vec::new();
        let mut file = std::fs::File::from(fd);
        file.by_ref()
            .take(self.max_bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| io_err(path, "read", e))?;
        if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > self.max_bytes {
            return reject(
                uid,
                ReasonCode::TooLarge,
                format!(
                    "the request grew past {} bytes while being read",
                    self.max_bytes
                ),
            );
        }
        let after = fstat(file.as_fd()).map_err(|e| io_err(path, "fstat", e))?;
        if changed(&before, &after)
            || u64::try_from(bytes.len()).ok() != Some(u64::try_from(after.st_size).unwrap_or(0))
        {
            return reject(uid, ReasonCode::ChangedWhileReading, "the request changed while it was read; write it elsewhere and rename it into incoming/ when complete".into());
        }
        Ok(Ok(RequestBytes {
            uid: before.st_uid,
            bytes,
        }))
    }

    /// The owner uid of `incoming/name`, as `lstat` sees it (a link is not followed), for
    /// pacing intake per uid before the file is claimed. Only a hint: the requester is decided
    /// from the opened file's `fstat` after the claim. `None` when the name is gone.
    pub fn incoming_owner(&self, name: &str) -> Option<u32> {
        fstatat(self.incoming.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .ok()
            .map(|st| st.st_uid)
    }

    /// Remove decided files (and their receipts) from `accepted/` and `rejected/` that were
    /// claimed before `cutoff`, as their claim names say (never by modification times,
    /// which requesters set). Names that do not carry a claim time are left. Returns how many
    /// entries were removed.
    pub fn prune_decided(
        &self,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> Result<usize, SpoolError> {
        let mut removed = 0;
        for to in [Disposition::Accepted, Disposition::Rejected] {
            let sub = sub_of(to);
            for name in self.names(sub)? {
                if claimed_at(&name).is_none_or(|at| at >= cutoff) {
                    continue;
                }
                match nix::unistd::unlinkat(
                    self.dir(to).as_fd(),
                    name.as_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                ) {
                    Ok(()) => removed += 1,
                    Err(Errno::ENOENT) => {}
                    Err(e) => return Err(io_err(&self.root.join(sub).join(&name), "remove", e)),
                }
            }
        }
        Ok(removed)
    }

    /// Move a decided file out of `active/` and write its receipt beside it.
    /// Idempotent: a file already moved is not an error.
    pub fn finish(
        &self,
        claim_name: &str,
        to: Disposition,
        receipt: &serde_json::Value,
    ) -> Result<(), SpoolError> {
        let body =
            serde_json::to_vec_pretty(receipt).map_err(|e| io_err(&self.root, "receipt", e))?;
        self.write_side(to, claim_name, "receipt.json", &body, false)?;
        self.move_decided(claim_name, to)?;
        let dir = self.dir(to);
        nix::unistd::fsync(self.active.as_fd()).map_err(|e| io_err(&self.root, "fsync", e))?;
        nix::unistd::fsync(dir.as_fd()).map_err(|e| io_err(&self.root, "fsync", e))?;
        Ok(())
    }

    /// [`Spool::finish`] for many decided files at once: every receipt is written to a
    /// temporary file, their data fsynced together ([`crate::durable::sync_all`]) and each
    /// renamed into place before its request file moves; `active/` and each destination
    /// directory are then fsynced once. One result per file, in order; a file that failed
    /// stays in `active/` (its outcome is in the DB, so the next scan finishes it).
    pub fn finish_many(
        &self,
        files: &[(String, Disposition, serde_json::Value)],
    ) -> Vec<Result<(), SpoolError>> {
        let mut results: Vec<Result<(), SpoolError>> = Vec::with_capacity(files.len());
        let mut temps: Vec<(usize, tempfile::NamedTempFile)> = Vec::new();
        for (i, (_, to, receipt)) in files.iter().enumerate() {
            let dir = self.root.join(sub_of(*to));
            let staged = serde_json::to_vec_pretty(receipt)
                .map_err(|e| io_err(&self.root, "receipt", e))
                .and_then(|body| {
                    let mut tmp = tempfile::Builder::new()
                        .prefix(".tmp")
                        .tempfile_in(&dir)
                        .map_err(|e| io_err(&dir, "create receipt", e))?;
                    std::io::Write::write_all(&mut tmp, &body)
                        .map_err(|e| io_err(&dir, "write receipt", e))?;
                    Ok(tmp)
                });
            match staged {
                Ok(tmp) => {
                    temps.push((i, tmp));
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let synced =
            crate::durable::sync_all(&temps.iter().map(|(_, t)| t.as_file()).collect::<Vec<_>>());
        let mut touched = [false; 2];
        for ((i, tmp), sync) in temps.into_iter().zip(synced) {
            let (Some((claim_name, to, _)), Some(slot)) = (files.get(i), results.get_mut(i)) else {
                continue;
            };
            let dir = self.root.join(sub_of(*to));
            let moved = sync
                .map_err(|e| io_err(&dir, "sync receipt", e))
                .and_then(|()| {
                    tmp.persist(dir.join(format!("{claim_name}.receipt.json")))
                        .map_err(|e| io_err(&dir, "persist receipt", e.error))
                })
                .and_then(|_| self.move_decided(claim_name, *to));
            touched[usize::from(*to == Disposition::Rejected)] = true;
            *slot = moved;
        }
        let mut dirs = vec![&self.active];
        if touched[0] {
            dirs.push(&self.accepted);
        }
        if touched[1] {
            dirs.push(&self.rejected);
        }
        for fd in dirs {
            if let Err(e) = nix::unistd::fsync(fd.as_fd()) {
                let e = io_err(&self.root, "fsync", e);
                for slot in results.iter_mut().filter(|r| r.is_ok()) {
                    *slot = Err(io_err(&self.root, "fsync", &e));
                }
            }
        }
        results
    }

    /// Rename a decided file from `active/` into its destination (gone already is fine) and,
    /// for a rejection, its remembered original name with it.
    fn move_decided(&self, claim_name: &str, to: Disposition) -> Result<(), SpoolError> {
        match renameat2(
            self.active.as_fd(),
            claim_name,
            self.dir(to).as_fd(),
            claim_name,
            RenameFlags::empty(),
        ) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(io_err(&self.root.join(ACTIVE).join(claim_name), "move", e)),
        }
        if to == Disposition::Rejected {
            let side = format!(".{claim_name}.name");
            let _ = renameat2(
                self.accepted.as_fd(),
                side.as_str(),
                self.rejected.as_fd(),
                side.as_str(),
                RenameFlags::empty(),
            );
        }
        Ok(())
    }

    fn dir(&self, to: Disposition) -> &OwnedFd {
        match to {
            Disposition::Accepted => &self.accepted,
            Disposition::Rejected => &self.rejected,
        }
    }

    /// Write `<dir>/<claim>.<suffix>` (hidden when `hidden`) atomically.
    fn write_side(
        &self,
        to: Disposition,
        claim_name: &str,
        suffix: &str,
        body: &[u8],
        hidden: bool,
    ) -> Result<(), SpoolError> {
        let dir = self.root.join(sub_of(to));
        let name = if hidden {
            format!(".{claim_name}.{suffix}")
        } else {
            format!("{claim_name}.{suffix}")
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp")
            .tempfile_in(&dir)
            .map_err(|e| io_err(&dir, "create receipt", e))?;
        std::io::Write::write_all(&mut tmp, body).map_err(|e| io_err(&dir, "write receipt", e))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| io_err(&dir, "sync receipt", e))?;
        tmp.persist(dir.join(&name))
            .map_err(|e| io_err(&dir, "persist receipt", e.error))?;
        Ok(())
    }
}

/// The subdirectory of a disposition.
fn sub_of(to: Disposition) -> &'static str {
    match to {
        Disposition::Accepted => ACCEPTED,
        Disposition::Rejected => REJECTED,
    }
}

fn changed(a: &FileStat, b: &FileStat) -> bool {
    a.st_size != b.st_size
        || a.st_mtime != b.st_mtime
        || a.st_mtime_nsec != b.st_mtime_nsec
        || a.st_ino != b.st_ino
        || a.st_nlink != b.st_nlink
}

fn kind_name(kind: SFlag) -> &'static str {
    if kind == SFlag::S_IFIFO {
        "FIFO"
    } else if kind == SFlag::S_IFSOCK {
        "socket"
    } else if kind == SFlag::S_IFDIR {
        "directory"
    } else if kind == SFlag::S_IFCHR || kind == SFlag::S_IFBLK {
        "device"
    } else {
        "special file"
    }
}

/// Refuse a spool whose ancestors another user could change: every existing parent of `root`
/// must be a directory owned by root or `euid`, not writable by group or others unless sticky
/// (like `/tmp`, where others cannot rename or remove what they do not own).
fn check_parents(root: &Path, euid: u32) -> Result<(), SpoolError> {
    let abs = std::fs::canonicalize(root).map_err(|e| io_err(root, "resolve", e))?;
    for dir in abs.ancestors().skip(1) {
        let m = std::fs::metadata(dir).map_err(|e| io_err(dir, "stat", e))?;
        let mode = m.mode() & 0o7777;
        let others_write = mode & 0o022 != 0 && mode & 0o1000 == 0;
        if !m.is_dir() || (m.uid() != 0 && m.uid() != euid) || others_write {
            return Err(SpoolError::Unsafe(format!(
                "parent directory {} (mode {mode:o}, owner uid {}) could be changed by another user: it must be owned by root or uid {euid} and not writable by group or others",
                dir.display(),
                m.uid()
            )));
        }
    }
    Ok(())
}

/// Warnings when the kernel's link protections are off (`dir` is normally `/proc/sys/fs`).
/// Defence in depth only: the spool checks do not depend on them.
pub fn kernel_protection_warnings(dir: &Path) -> Vec<String> {
    ["protected_hardlinks", "protected_symlinks"]
        .iter()
        .filter_map(|name| {
            let v = std::fs::read_to_string(dir.join(name)).ok()?;
            (v.trim() != "1").then(|| {
                format!(
                    "fs.{name} is {} (expected 1): the kernel does not stop users linking to files they do not own; backfilld still refuses links, but consider `sysctl fs.{name}=1`",
                    v.trim()
                )
            })
        })
        .collect()
}

/// When a file in `accepted/` or `rejected/` (or a side file of it, `.name` or receipt) was
/// claimed: the UTC stamp its claim name starts with (`20261205T213030123456789Z.req.toml`,
/// `...Z-1.req.toml`, `.20261205T...`). `None` for any other name.
pub fn claimed_at(name: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let name = name.strip_prefix('.').unwrap_or(name);
    let stamp = name.get(..25)?;
    if !stamp.ends_with('Z') || !matches!(name.as_bytes().get(25), Some(b'.' | b'-')) {
        return None;
    }
    chrono::NaiveDateTime::parse_from_str(stamp.get(..24)?, "%Y%m%dT%H%M%S%9f")
        .ok()
        .map(|t| t.and_utc())
}

/// Names a request file may have: `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`.
pub fn valid_file_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// The user name of a uid, from the system's user database.
pub fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn spool() -> (tempfile::TempDir, Spool) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .unwrap_or_default();
        let s = Spool::open(dir.path(), 1024).unwrap_or_else(|e| panic!("{e}"));
        (dir, s)
    }

    fn drop_and_read(s: &Spool, name: &str) -> ClaimedFile {
        let claim = s
            .claim(name)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("gone"));
        s.read_claimed(&claim).unwrap_or_else(|e| panic!("{e}"))
    }

    fn code(c: &ClaimedFile) -> Option<ReasonCode> {
        c.content.as_ref().err().map(|(_, r)| r.code)
    }

    #[test]
    fn claim_times_come_from_claim_names_only() {
        let at = |n: &str| claimed_at(n).map(|t| t.to_rfc3339());
        let t = Some("2026-12-05T21:30:30.123456789+00:00".to_owned());
        assert_eq!(at("20261205T213030123456789Z.req.toml"), t);
        assert_eq!(at("20261205T213030123456789Z-3.req.toml"), t);
        assert_eq!(at("20261205T213030123456789Z.req.toml.receipt.json"), t);
        assert_eq!(at(".20261205T213030123456789Z.req.toml.name"), t);
        for other in [
            "req.toml",
            ".tmpAbC123",
            "20261205T213030123456789Zreq",
            "20261305T213030123456789Z.x",
            "2026120\u{e9}T213030123456789Z.x",
            "",
        ] {
            assert_eq!(at(other), None, "{other:?}");
        }
    }

    #[test]
    fn pruning_removes_decided_files_claimed_before_the_cutoff() {
        let (dir, s) = spool();
        std::fs::write(dir.path().join("incoming/a.toml"), "x").unwrap_or_default();
        std::fs::write(dir.path().join("incoming/b.toml"), "x").unwrap_or_default();
        let a = s.claim("a.toml").ok().flatten().unwrap_or_default();
        let cutoff = chrono::Utc::now();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let b = s.claim("b.toml").ok().flatten().unwrap_or_default();
        let receipt = serde_json::json!({"outcome": "rejected"});
        s.finish(&a, Disposition::Rejected, &receipt)
            .unwrap_or_else(|e| panic!("{e}"));
        s.finish(&b, Disposition::Accepted, &receipt)
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("rejected/notes.txt"), "kept").unwrap_or_default();
        assert_eq!(s.prune_decided(cutoff).unwrap_or_else(|e| panic!("{e}")), 2);
        let left = |sub: &str| {
            let mut v: Vec<String> = std::fs::read_dir(dir.path().join(sub))
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v
        };
        assert_eq!(left("rejected"), vec!["notes.txt".to_owned()]);
        assert_eq!(
            left("accepted"),
            vec![b.clone(), format!("{b}.receipt.json")]
        );
        assert_eq!(s.prune_decided(cutoff).unwrap_or_else(|e| panic!("{e}")), 0);
    }

    #[test]
    fn the_owner_of_an_incoming_name_is_read_without_following_links() {
        let (dir, s) = spool();
        std::fs::write(dir.path().join("incoming/mine.toml"), "x").unwrap_or_default();
        symlink("/etc/shadow", dir.path().join("incoming/link.toml")).unwrap_or_default();
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(s.incoming_owner("mine.toml"), Some(me));
        assert_eq!(
            s.incoming_owner("link.toml"),
            Some(me),
            "the link's own owner"
        );
        assert_eq!(s.incoming_owner("gone.toml"), None);
    }

    #[test]
    fn layout_and_modes() {
        let (dir, _s) = spool();
        let mode = |n: &str| {
            std::fs::metadata(dir.path().join(n))
                .map(|m| m.mode() & 0o7777)
                .unwrap_or(0)
        };
        assert_eq!(mode(INCOMING), 0o1733);
        assert_eq!(mode(ACTIVE), 0o700);
        std::fs::set_permissions(
            dir.path().join(ACTIVE),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap_or_default();
        let e = Spool::open(dir.path(), 1024)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("mode 700"), "{e}");
    }

    #[test]
    fn regular_file_is_read_and_key_is_stable() {
        let (dir, s) = spool();
        std::fs::write(dir.path().join(INCOMING).join("a.toml"), b"x = 1").unwrap_or_default();
        let c = drop_and_read(&s, "a.toml");
        assert_eq!(c.file_name, "a.toml");
        assert_eq!(
            c.content.as_ref().map(|r| r.bytes.clone()).ok(),
            Some(b"x = 1".to_vec())
        );
        let again = s
            .read_claimed(&c.claim_name)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.key, c.key);
        s.finish(
            &c.claim_name,
            Disposition::Accepted,
            &serde_json::json!({"ok": true}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(dir.path().join(ACCEPTED).join(&c.claim_name).exists());
        assert!(dir
            .path()
            .join(ACCEPTED)
            .join(format!("{}.receipt.json", c.claim_name))
            .exists());
        assert!(s.claimed().unwrap_or_default().is_empty());
    }

    #[test]
    fn many_files_are_finished_at_once() {
        let (dir, s) = spool();
        let mut done = Vec::new();
        for (i, to) in [
            Disposition::Accepted,
            Disposition::Rejected,
            Disposition::Accepted,
        ]
        .into_iter()
        .enumerate()
        {
            let name = format!("r{i}.toml");
            std::fs::write(dir.path().join(INCOMING).join(&name), b"x").unwrap_or_default();
            let c = drop_and_read(&s, &name);
            done.push((c.claim_name, to, serde_json::json!({ "n": i })));
        }
        let results = s.finish_many(&done);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert!(s.claimed().unwrap_or_default().is_empty());
        for (claim, to, _) in &done {
            let sub = dir.path().join(sub_of(*to));
            assert!(sub.join(claim).exists(), "{claim}");
            let receipt = std::fs::read_to_string(sub.join(format!("{claim}.receipt.json")))
                .unwrap_or_default();
            assert!(receipt.contains("\"n\""), "{receipt}");
        }
        // Finishing again (a crash before the fsyncs) is harmless.
        assert!(s.finish_many(&done).iter().all(Result::is_ok));
    }

    #[test]
    fn hostile_entries_are_rejected() {
        let (dir, s) = spool();
        let inc = dir.path().join(INCOMING);
        let outside = dir.path().join("secret");
        std::fs::write(&outside, b"secret").unwrap_or_default();
        symlink(&outside, inc.join("link.toml")).unwrap_or_default();
        assert_eq!(
            code(&drop_and_read(&s, "link.toml")),
            Some(ReasonCode::Symlink)
        );
        std::fs::hard_link(&outside, inc.join("hard.toml")).unwrap_or_default();
        assert_eq!(
            code(&drop_and_read(&s, "hard.toml")),
            Some(ReasonCode::HardLinked)
        );
        nix::unistd::mkfifo(&inc.join("fifo.toml"), Mode::from_bits_truncate(0o644))
            .unwrap_or_default();
        assert_eq!(
            code(&drop_and_read(&s, "fifo.toml")),
            Some(ReasonCode::NotRegularFile)
        );
        std::fs::write(inc.join("big.toml"), vec![b'a'; 2048]).unwrap_or_default();
        assert_eq!(
            code(&drop_and_read(&s, "big.toml")),
            Some(ReasonCode::TooLarge)
        );
        std::fs::create_dir(inc.join("dir.toml")).unwrap_or_default();
        assert_eq!(
            code(&drop_and_read(&s, "dir.toml")),
            Some(ReasonCode::NotRegularFile)
        );
        assert_eq!(std::fs::read(&outside).unwrap_or_default(), b"secret");
        for (name, mode) in [
            ("suid.toml", 0o4644),
            ("gw.toml", 0o664),
            ("ow.toml", 0o646),
        ] {
            let p = inc.join(name);
            std::fs::write(&p, b"x").unwrap_or_default();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap_or_default();
            assert_eq!(
                code(&drop_and_read(&s, name)),
                Some(ReasonCode::UnsafeMode),
                "{name}"
            );
        }
    }

    #[test]
    fn loose_parents_are_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let loose = dir.path().join("loose");
        std::fs::create_dir(&loose).unwrap_or_default();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o777))
            .unwrap_or_default();
        let e = Spool::open(&loose.join("spool"), 1024)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("parent directory"), "{e}");
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o1777))
            .unwrap_or_default();
        assert!(Spool::open(&loose.join("spool"), 1024).is_ok());
    }

    #[test]
    fn kernel_protections_are_checked() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("protected_hardlinks"), "1\n").unwrap_or_default();
        std::fs::write(dir.path().join("protected_symlinks"), "0\n").unwrap_or_default();
        let w = kernel_protection_warnings(dir.path());
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("fs.protected_symlinks is 0"), "{w:?}");
    }

    #[test]
    fn odd_names_are_claimed_under_a_safe_name() {
        let (dir, s) = spool();
        let odd = "we ird;$(x).toml";
        std::fs::write(dir.path().join(INCOMING).join(odd), b"x").unwrap_or_default();
        let c = drop_and_read(&s, odd);
        assert!(c.claim_name.contains("badname-"), "{}", c.claim_name);
        assert_eq!(c.file_name, odd);
        assert!(s.incoming().unwrap_or_default().is_empty());
        assert!(valid_file_name("sales-jan.toml"));
        assert!(!valid_file_name(".hidden"));
        assert!(!valid_file_name("../x"));
    }
}
