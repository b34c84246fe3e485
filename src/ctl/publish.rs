//! Publishing request files: the file `submit` and the life-cycle commands write (the same
//! TOML a user could write), published into the spool (hidden temp name, fsync, rename into
//! `incoming/`), then the daemon asked for the outcome.

use super::*;

/// The request file `submit` writes.
#[derive(Debug, Serialize)]
pub(super) struct RequestFile {
    dag_id: String,
    start: toml::value::Datetime,
    end: toml::value::Datetime,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_active_runs: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<i64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    ignore_overlap: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduled_at: Option<toml::value::Datetime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delete_after_days: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reprocess: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    run_backwards: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tasks: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    include_upstream: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    include_downstream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    emit_asset_events: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    notify: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    after: Vec<String>,
    #[serde(skip_serializing_if = "toml::Table::is_empty")]
    params: toml::Table,
}

/// The request file of a life-cycle command.
#[derive(Debug, Serialize)]
pub(super) struct OperateFile<'a> {
    action: &'a str,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// A date flag's value as a TOML date (2024-01-31) or date-time (2024-01-31T06:00:00Z).
pub(super) fn parse_when(flag: &str, s: &str) -> anyhow::Result<toml::value::Datetime> {
    let dt: toml::value::Datetime = s
        .parse()
        .with_context(|| format!("--{flag} {s:?}: write 2024-01-31 or 2024-01-31T06:00:00Z"))?;
    Ok(dt)
}

/// A `--since` value as an instant: a date is 00:00 UTC.
pub(super) fn parse_instant(flag: &str, s: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    crate::request::to_utc(flag, &parse_when(flag, s)?)
        .map_err(|r| anyhow::anyhow!("--{flag} {s:?}: {}", r.message))
}

/// Write a life-cycle request file and wait for its decision.
pub(super) fn operate(
    config: &Config,
    socket: &Path,
    action: &str,
    args: OperateArgs,
) -> anyhow::Result<i32> {
    operate_with(config, socket, action, args, None)
}

/// Write a life-cycle request file (with a `reason`, for reject) and wait for its decision.
pub(super) fn operate_with(
    config: &Config,
    socket: &Path,
    action: &str,
    args: OperateArgs,
    reason: Option<&str>,
) -> anyhow::Result<i32> {
    let body = toml::to_string(&OperateFile {
        action,
        id: &args.id,
        reason,
    })
    .context("encoding the request")?;
    let name = publish_request(config, action, body.as_bytes())?;
    wait_outcome(socket, &name, args.timeout, args.json)
}

/// Publish a request under a fresh `<user>-<tag>-<random>.toml`; returns the name.
pub(super) fn publish_request(config: &Config, tag: &str, body: &[u8]) -> anyhow::Result<String> {
    let user =
        crate::spool::user_name(nix::unistd::getuid().as_raw()).unwrap_or_else(|| "user".into());
    let user: String = user
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .take(32)
        .collect();
    let name = format!(
        "{}-{tag}-{}.toml",
        if user.is_empty() { "user" } else { &user },
        random_suffix()
    );
    let incoming = config.spool.dir.join(INCOMING);
    publish(&incoming, &name, body)?;
    Ok(name)
}

/// Poll the daemon for the outcome of `name` and print it.
pub(super) fn wait_outcome(
    socket: &Path,
    name: &str,
    timeout: u64,
    json: bool,
) -> anyhow::Result<i32> {
    let deadline = Instant::now() + Duration::from_secs(timeout);
    loop {
        match call(
            socket,
            ControlRequest::Outcome {
                file_name: name.to_owned(),
            },
        )? {
            ControlResponse::Decided { request } => return print_outcome(&request, json),
            ControlResponse::Pending => {}
            other => bail!(unexpected(other)),
        }
        if Instant::now() > deadline {
            eprintln!("{name} is in the spool but backfilld has not decided it yet; check later with `backfillctl outcome {name}`");
            return Ok(2);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `backfillctl submit`: write the request file, publish it, wait for its outcome.
pub(super) fn submit(config: &Config, socket: &Path, args: SubmitArgs) -> anyhow::Result<i32> {
    let mut params = toml::Table::new();
    for p in &args.params {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("--param {p:?}: expected KEY=VALUE"))?;
        let value = format!("v = {v}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(v.to_owned()));
        params.insert(k.to_owned(), value);
    }
    let file = RequestFile {
        dag_id: args.dag_id,
        start: parse_when("start", &args.start)?,
        end: parse_when("end", &args.end)?,
        description: args.description,
        max_active_runs: args.max_active_runs,
        priority: args.priority,
        ignore_overlap: args.ignore_overlap,
        dry_run: args.dry_run,
        scheduled_at: args
            .scheduled_at
            .as_deref()
            .map(|t| parse_when("at", t))
            .transpose()?,
        delete_after_days: args.delete_after_days,
        reprocess: args.reprocess,
        run_backwards: args.backwards,
        tasks: args.tasks,
        include_upstream: args.include_upstream,
        include_downstream: args.include_downstream,
        emit_asset_events: if args.emit_asset_events {
            Some(true)
        } else if args.no_asset_events {
            Some(false)
        } else {
            None
        },
        after: args.after,
        notify: args.notify,
        params,
    };
    let body = toml::to_string(&file).context("encoding the request")?;
    let name = publish_request(config, "submit", body.as_bytes())?;
    if args.no_wait {
        println!("{name}");
        return Ok(0);
    }
    wait_outcome(socket, &name, args.timeout, args.json)
}

/// Write `dir/.name.tmp` exclusively, mode 0644, fsync, then rename it to `dir/name`.
pub(super) fn publish(dir: &Path, name: &str, body: &[u8]) -> anyhow::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(body)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))
        .with_context(|| format!("publishing {name} into {}", dir.display()))?;
    Ok(())
}

/// 16 random hex digits (from `/dev/urandom`, else the clock and pid) for a request file name.
pub(super) fn random_suffix() -> String {
    let mut buf = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .is_err()
    {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        buf = (nanos as u64 ^ u64::from(std::process::id())).to_le_bytes();
    }
    hex::encode(buf)
}
