//! The daemon's runtime: wires the spool watcher, the signal handler and the control socket
//! to the [`Engine`] thread. Everything here is plumbing; decisions live in the engine.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::mpsc::Sender;
use std::time::Duration;

use anyhow::{bail, Context};
use notify::Watcher;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::config::Config;
use crate::control::{ControlRequest, ControlResponse, ListFilter, MAX_LINE};
use crate::engine::{Command, Engine};
use crate::paging;
use crate::service::ServiceManager;
use crate::spool::{Spool, INCOMING};

/// How long SIGTERM waits for the engine to finish the request in hand.
const STOP_GRACE: Duration = Duration::from_secs(8);
/// Most control-socket connections open at once, all users together.
const MAX_CONTROL_CONNECTIONS: usize = 256;
/// Most control-socket connections one uid may hold open at once, so one local user cannot
/// starve the others.
const MAX_CONTROL_CONNECTIONS_PER_UID: usize = 16;

/// Run the daemon in the foreground until SIGTERM or SIGINT. `config_path` is re-read on
/// SIGHUP.
pub fn run(config_path: &Path, config: Config) -> anyhow::Result<()> {
    let airflow = config
        .resolve_airflow()
        .context("resolving Airflow's settings")?;
    tracing::info!(db = %airflow.db, dags_folder = %airflow.dags_folder.display(), spool = %config.spool.dir.display(), "starting backfilld");
    let spool = Spool::open(&config.spool.dir, config.spool.max_request_bytes)?;
    let socket = config.socket_path();
    prepare_socket_path(&socket)?;

    let (tx, rx) = std::sync::mpsc::channel::<Command>();
    // The watcher is only a doorbell: every event, whatever it says, asks for a scan, except
    // access events: the engine's own listing of incoming/ opens and closes the directory, and
    // ringing on that made the engine rescan in a busy loop.
    let doorbell = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if matches!(&event, Ok(e) if matches!(e.kind, notify::EventKind::Access(_))) {
            return;
        }
        let _ = doorbell.send(Command::Scan);
    })
    .context("creating the spool watcher")?;
    let incoming = config.spool.dir.join(INCOMING);
    watcher
        .watch(&incoming, notify::RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", incoming.display()))?;

    let engine = Engine::new(config.clone(), airflow, spool);
    let stop_flag = engine.stop_flag();
    let metrics = engine.metrics_cell();
    let engine_thread = std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || engine.run(rx))
        .context("starting the engine thread")?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let listener = runtime
        .block_on(async { UnixListener::bind(&socket) })
        .with_context(|| format!("binding the control socket {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))
        .with_context(|| format!("chmod {}", socket.display()))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    crate::http::start(&runtime, &config, tx.clone(), stop_rx.clone(), metrics)?;
    runtime.spawn(serve(listener, tx.clone(), stop_rx));
    tracing::info!(socket = %socket.display(), "ready");

    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("installing signal handlers")?;
    for signal in signals.forever() {
        if signal == SIGHUP {
            reload(config_path, &config, &tx);
            let _ = tx.send(Command::Scan);
            continue;
        }
        tracing::info!(signal, "stopping");
        break;
    }
    ServiceManager::from_env().stopping();
    stop_flag.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = stop_tx.send(true);
    let _ = tx.send(Command::Stop);
    drop(watcher);
    let deadline = std::time::Instant::now() + STOP_GRACE;
    while !engine_thread.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !engine_thread.is_finished() {
        // A DB call is hanging; every decision is transactional, so leaving now loses nothing.
        tracing::warn!("engine did not stop within {STOP_GRACE:?}; exiting anyway");
    } else if engine_thread.join().is_err() {
        tracing::error!("the engine thread panicked");
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    let _ = std::fs::remove_file(&socket);
    tracing::info!("stopped");
    Ok(())
}

/// One full pass and exit, for cron-style use without a service manager and for measuring a
/// pass from outside: connect (and migrate), ingest the spool, reconcile every unfinished
/// backfill. Fails when the metadata DB cannot be reached.
pub fn run_once(config: Config) -> anyhow::Result<()> {
    let airflow = config
        .resolve_airflow()
        .context("resolving Airflow's settings")?;
    let spool = Spool::open(&config.spool.dir, config.spool.max_request_bytes)?;
    let mut engine = Engine::new(config, airflow, spool);
    engine
        .ensure_connected()
        .context("connecting to the metadata DB")?;
    let decided = engine.scan();
    engine.reconcile();
    tracing::info!(decided, "one pass done");
    Ok(())
}

/// Re-read the config file; apply it if valid, else keep the running one and say why.
fn reload(path: &Path, running: &Config, engine: &Sender<Command>) {
    let mut service = ServiceManager::from_env();
    service.reloading();
    match Config::load(path) {
        Ok(new) => {
            for (key, changed) in [
                (
                    "airflow",
                    format!("{:?}", new.airflow) != format!("{:?}", running.airflow),
                ),
                ("spool.dir", new.spool.dir != running.spool.dir),
                ("control.socket", new.socket_path() != running.socket_path()),
            ] {
                if changed {
                    tracing::warn!(
                        key,
                        "changed in the config file; takes effect only after a restart"
                    );
                }
            }
            tracing::info!(path = %path.display(), "SIGHUP: configuration re-read");
            let _ = engine.send(Command::Reload(Box::new(new)));
        }
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: the new configuration is invalid; keeping the running one");
            service.ready();
        }
    }
}

/// Remove a stale socket; refuse to start when another daemon answers on it.
fn prepare_socket_path(socket: &Path) -> anyhow::Result<()> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::symlink_metadata(socket) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                bail!("another backfilld is already serving {}", socket.display());
            }
            std::fs::remove_file(socket)
                .with_context(|| format!("removing stale socket {}", socket.display()))?;
        }
        Ok(_) => bail!("{} exists and is not a socket", socket.display()),
        Err(_) => {}
    }
    Ok(())
}

/// Open control connections per uid.
type ConnectionCounts = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<u32, usize>>>;

/// One open connection of a uid, counted until dropped.
struct ConnectionSlot {
    counts: ConnectionCounts,
    uid: u32,
}

impl ConnectionSlot {
    /// Count a connection of `uid`, unless it already holds `max`.
    fn take(counts: &ConnectionCounts, uid: u32, max: usize) -> Option<ConnectionSlot> {
        let mut map = counts.lock().ok()?;
        let n = map.entry(uid).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ConnectionSlot {
            counts: counts.clone(),
            uid,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.counts.lock() {
            if let Some(n) = map.get_mut(&self.uid) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&self.uid);
                }
            }
        }
    }
}

async fn serve(
    listener: UnixListener,
    engine: Sender<Command>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let all = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONTROL_CONNECTIONS));
    let per_uid = ConnectionCounts::default();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let Ok(permit) = all.clone().try_acquire_owned() else {
                        tracing::warn!("too many control connections; closing a new one");
                        continue;
                    };
                    let (engine, per_uid) = (engine.clone(), per_uid.clone());
                    tokio::spawn(async move {
                        answer(stream, engine, &per_uid).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// One exchange on the control socket.
async fn answer(stream: UnixStream, engine: Sender<Command>, per_uid: &ConnectionCounts) {
    let uid = match stream.peer_cred() {
        Ok(c) => c.uid(),
        Err(e) => {
            tracing::warn!(error = %e, "no peer credentials on control connection");
            return;
        }
    };
    let (read, mut write) = stream.into_split();
    let Some(_slot) = ConnectionSlot::take(per_uid, uid, MAX_CONTROL_CONNECTIONS_PER_UID) else {
        tracing::debug!(uid, "too many control connections of one uid; refused");
        let refusal = ControlResponse::Error {
            message: format!(
                "too many open connections of uid {uid} (at most {MAX_CONTROL_CONNECTIONS_PER_UID}); try again"
            ),
        };
        if let Ok(mut out) = serde_json::to_vec(&refusal) {
            out.push(b'\n');
            let _ = write.write_all(&out).await;
        }
        return;
    };
    let mut line = String::new();
    let limited = BufReader::new(read.take(u64::try_from(MAX_LINE).unwrap_or(u64::MAX)));
    let mut limited = limited;
    let response =
        match tokio::time::timeout(Duration::from_secs(10), limited.read_line(&mut line)).await {
            Ok(Ok(_)) => match serde_json::from_str::<ControlRequest>(&line) {
                Ok(ControlRequest::List {
                    filter,
                    limit: None,
                    cursor: None,
                }) => {
                    stream_list(&engine, uid, filter, &mut write).await;
                    return;
                }
                Ok(request) => ask(&engine, uid, request).await,
                Err(e) => ControlResponse::Error {
                    message: format!("bad request: {e}"),
                },
            },
            _ => return,
        };
    if let Ok(mut out) = serde_json::to_vec(&response) {
        out.push(b'\n');
        let _ = write.write_all(&out).await;
    }
}

/// The whole list for a client that asked without `limit` (a `backfillctl` older than
/// paging): the same answer line as before paging, written page by page as the engine answers
/// them, so the daemon never holds more than one page. A failure after the first page closes
/// the connection mid-line (the client reports an answer it cannot read).
async fn stream_list(
    engine: &Sender<Command>,
    uid: u32,
    filter: ListFilter,
    write: &mut (impl tokio::io::AsyncWrite + Unpin),
) {
    let mut cursor = None;
    let mut items = 0usize;
    let mut first = true;
    loop {
        let request = ControlRequest::List {
            filter: filter.clone(),
            limit: Some(paging::DEFAULT_LIMIT),
            cursor: cursor.take(),
        };
        let (backfills, next) = match ask(engine, uid, request).await {
            ControlResponse::Backfills { backfills, next } => (backfills, next),
            other => {
                if first {
                    if let Ok(mut out) = serde_json::to_vec(&other) {
                        out.push(b'\n');
                        let _ = write.write_all(&out).await;
                    }
                } else {
                    tracing::warn!(uid, "a streamed list failed part-way; connection closed");
                }
                return;
            }
        };
        let mut out = Vec::new();
        if first {
            out.extend_from_slice(br#"{"kind":"backfills","backfills":["#);
            first = false;
        }
        for b in &backfills {
            if items > 0 {
                out.push(b',');
            }
            if serde_json::to_writer(&mut out, b).is_err() {
                return;
            }
            items += 1;
        }
        if next.is_none() {
            out.extend_from_slice(b"]}\n");
        }
        if write.write_all(&out).await.is_err() {
            return;
        }
        match next {
            Some(n) => cursor = Some(n),
            None => return,
        }
    }
}

async fn ask(engine: &Sender<Command>, uid: u32, request: ControlRequest) -> ControlResponse {
    let (reply, answer) = tokio::sync::oneshot::channel();
    if engine
        .send(Command::Query {
            uid,
            request,
            reply,
        })
        .is_err()
    {
        return ControlResponse::Error {
            message: "backfilld is stopping".into(),
        };
    }
    match tokio::time::timeout(Duration::from_secs(60), answer).await {
        Ok(Ok(r)) => r,
        _ => ControlResponse::Error {
            message: "backfilld is busy; try again".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::BackfillView;

    /// An engine that answers list pages of `total` backfills, `page` at a time, then fails
    /// the page after `fail_after` pages (if set).
    fn fake_engine(total: usize, fail_after: Option<usize>) -> Sender<Command> {
        let (tx, rx) = std::sync::mpsc::channel::<Command>();
        std::thread::spawn(move || {
            let mut pages = 0;
            while let Ok(Command::Query { request, reply, .. }) = rx.recv() {
                let ControlRequest::List { limit, cursor, .. } = request else {
                    continue;
                };
                if fail_after.is_some_and(|n| pages >= n) {
                    let _ = reply.send(ControlResponse::Error {
                        message: "denied".into(),
                    });
                    continue;
                }
                pages += 1;
                let from: usize = cursor.and_then(|c| c.parse().ok()).unwrap_or(0);
                let to = (from + limit.unwrap_or(1) / 250).min(total);
                let backfills = (from..to).map(view).collect();
                let next = (to < total).then(|| to.to_string());
                let _ = reply.send(ControlResponse::Backfills { backfills, next });
            }
        });
        tx
    }

    fn view(i: usize) -> BackfillView {
        let text = format!(
            r#"{{"id":"b{i}","dag_id":"d","state":"running","reason":null,"start":"s","end":"e",
            "description":null,"max_active_runs":1,"params":{{}},"submitted_by":"u",
            "submitted_at":"t","updated_at":"t","run_start":null,"run_end":null,"dates_total":1,
            "dates_succeeded":0,"dates_failed":0,"dates_running":0,"dates_queued":0,
            "dates_pending":1,"copy_path":null,"host":"h"}}"#
        );
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn streamed(engine: &Sender<Command>) -> Vec<u8> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let mut out = Vec::new();
        rt.block_on(stream_list(engine, 0, ListFilter::default(), &mut out));
        out
    }

    #[test]
    fn old_clients_get_the_whole_list_in_one_line() {
        // DEFAULT_LIMIT / 250 = 2 backfills a page in the fake engine.
        for total in [0, 1, 2, 5] {
            let out = streamed(&fake_engine(total, None));
            let text = String::from_utf8_lossy(&out);
            assert!(
                text.ends_with('\n') && text.matches('\n').count() == 1,
                "{text}"
            );
            let answer: ControlResponse =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            let want: Vec<BackfillView> = (0..total).map(view).collect();
            assert_eq!(
                answer,
                ControlResponse::Backfills {
                    backfills: want,
                    next: None
                }
            );
        }
    }

    #[test]
    fn a_refused_list_is_one_error_line_and_a_later_failure_cuts_the_line() {
        let out = streamed(&fake_engine(5, Some(0)));
        let answer: Result<ControlResponse, _> = serde_json::from_slice(&out);
        assert!(
            matches!(answer, Ok(ControlResponse::Error { ref message }) if message == "denied"),
            "{answer:?}"
        );
        let out = streamed(&fake_engine(5, Some(1)));
        assert!(!out.ends_with(b"\n"));
        assert!(serde_json::from_slice::<ControlResponse>(&out).is_err());
    }
}
