//! The daemon's runtime: wires the spool watcher, the signal handler and the control socket
//! to the [`Engine`] thread. Everything here is plumbing; decisions live in the engine.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::Duration;

use anyhow::{bail, Context};
use notify::Watcher;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::config::Config;
use crate::control::{ControlRequest, ControlResponse, MAX_LINE};
use crate::engine::{Command, Engine};
use crate::spool::{Spool, INCOMING};

/// Run the daemon in the foreground until SIGTERM or SIGINT.
pub fn run(config: Config) -> anyhow::Result<()> {
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
    runtime.spawn(serve(listener, tx.clone(), stop_rx));
    tracing::info!(socket = %socket.display(), "ready");

    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("installing signal handlers")?;
    for signal in signals.forever() {
        if signal == SIGHUP {
            tracing::info!("SIGHUP: rescanning the spool");
            let _ = tx.send(Command::Scan);
            continue;
        }
        tracing::info!(signal, "stopping");
        break;
    }
    let _ = stop_tx.send(true);
    let _ = tx.send(Command::Stop);
    drop(watcher);
    if engine_thread.join().is_err() {
        tracing::error!("the engine thread panicked");
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    let _ = std::fs::remove_file(&socket);
    tracing::info!("stopped");
    Ok(())
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

async fn serve(
    listener: UnixListener,
    engine: Sender<Command>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(answer(stream, engine.clone()));
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
async fn answer(stream: UnixStream, engine: Sender<Command>) {
    let uid = match stream.peer_cred() {
        Ok(c) => c.uid(),
        Err(e) => {
            tracing::warn!(error = %e, "no peer credentials on control connection");
            return;
        }
    };
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let limited = BufReader::new(read.take(u64::try_from(MAX_LINE).unwrap_or(u64::MAX)));
    let mut limited = limited;
    let response =
        match tokio::time::timeout(Duration::from_secs(10), limited.read_line(&mut line)).await {
            Ok(Ok(_)) => match serde_json::from_str::<ControlRequest>(&line) {
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

/// Default config path, overridable by `BACKFILLD_CONFIG`.
pub fn default_config_path() -> PathBuf {
    std::env::var_os("BACKFILLD_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_CONFIG_PATH))
}
