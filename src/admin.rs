//! The operator's commands beside the service: `gallery redrive`, `gallery sweep` and
//! `gallery reprocess` (through a running api),
//! `gallery backup` and `gallery restore` (the event log out and back), `gallery rebuild` (the
//! read model from the log, service stopped). See docs/ARCHITECTURE.md §9 and §10.

use std::time::Duration;

use anyhow::Context as _;
use gallery_nats::{connect_or_start, declare_topology};

use crate::cli::{
    BackupArgs, RebuildArgs, RedriveArgs, ReprocessArgs, RestoreArgs, SweepArgs, TokenArgs,
};
use gallery_projector::open as readmodel;

/// `gallery token`: mints a token with the keys file (created in the data dir when it is the
/// default one and missing, as `gallery up` does) and prints it on stdout.
pub fn token(args: TokenArgs) -> anyhow::Result<()> {
    use gallery_api::auth::{MAX_TTL, Rights, Scope};
    let scope = Scope::parse(&args.project)?;
    let rights = Rights::parse(&args.rights)?;
    anyhow::ensure!(
        !args.ttl.is_zero() && args.ttl <= MAX_TTL,
        "--ttl must be between 1 second and 366 days"
    );
    let (keys, source) = args.keys.load(&args.data_dir, args.init_keys)?;
    let expires_at = chrono::Utc::now() + chrono::TimeDelta::from_std(args.ttl)?;
    let token = keys.mint(&scope, rights, expires_at)?;
    eprintln!(
        "token for {scope} ({rights}), key {} of {source}, expires {}",
        keys.signing_kid(),
        expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    println!("{token}");
    Ok(())
}

/// Sends an operator's request to a running api (one replica of the queue group answers) and
/// reads its JSON reply.
async fn ask_api<R: serde::de::DeserializeOwned>(
    deployment: &crate::cli::DeploymentArgs,
    subject: &'static str,
    req: &impl serde::Serialize,
    limit: Duration,
) -> anyhow::Result<R> {
    use async_nats::client::RequestErrorKind;
    let (client, refusals, user) = deployment.connect().await?;
    let asked = tokio::time::timeout(
        limit,
        client.request(subject, serde_json::to_vec(req)?.into()),
    )
    .await;
    // A request the server drops for want of a permission only times out: say why.
    let refused = || {
        refusals
            .lock()
            .expect("refusals lock")
            .iter()
            .find(|r| r.to_ascii_lowercase().contains("permission"))
            .cloned()
    };
    let answer = match asked {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => {
            anyhow::bail!("no api is running to answer {subject} (gallery api or up)")
        }
        _ if refused().is_some() => anyhow::bail!(
            "not authorized for {subject} as user {user:?} ({}): use a user allowed the admin \
             subjects, or for a local `gallery up` its --data-dir alone",
            refused().unwrap_or_default()
        ),
        Ok(Err(e)) => return Err(anyhow::Error::new(e).context(format!("asking {subject}"))),
        Err(_) => anyhow::bail!(
            "no answer to {subject} within {}",
            humantime::format_duration(limit)
        ),
    };
    Ok(serde_json::from_slice(&answer.payload)?)
}

/// `gallery redrive`: asks a running api (any replica) to re-drive settled errors.
pub async fn redrive(args: RedriveArgs) -> anyhow::Result<()> {
    use gallery_lifecycle::reconciler::{RedriveReply, RedriveRequest};
    let req = RedriveRequest {
        project: args.project,
        code: Some(args.code),
    };
    let reply: RedriveReply = ask_api(
        &args.deployment,
        gallery_schema::subjects::ADMIN_REDRIVE,
        &req,
        Duration::from_secs(120),
    )
    .await?;
    if let Some(err) = reply.error {
        anyhow::bail!("{err}");
    }
    let ids = if reply.image_ids.is_empty() {
        String::new()
    } else {
        format!(": {}", reply.image_ids.join(" "))
    };
    println!(
        "found {}, re-drove {}{ids}",
        images(reply.found),
        reply.redriven
    );
    Ok(())
}

/// `gallery reprocess`: asks a running api (any replica) to re-render images in bulk.
pub async fn reprocess(args: ReprocessArgs) -> anyhow::Result<()> {
    use gallery_lifecycle::reprocess::{ReprocessReply, ReprocessRequest};
    let req = ReprocessRequest {
        project: args.project,
        all: args.all,
        outdated: args.outdated,
        rate: args.rate,
        dry_run: args.dry_run,
    };
    let reply: ReprocessReply = ask_api(
        &args.deployment,
        gallery_schema::subjects::ADMIN_REPROCESS,
        &req,
        Duration::from_secs(600),
    )
    .await?;
    if let Some(err) = reply.error {
        anyhow::bail!("{err}");
    }
    if reply.started {
        println!(
            "found {}; the api requests their re-render at {}/s (about {} s), renditions version {}",
            images(reply.found),
            reply.rate,
            reply.found.div_ceil(reply.rate.max(1) as usize),
            reply.renditions_version
        );
    } else {
        println!(
            "found {} to re-render (renditions version {}); nothing requested",
            images(reply.found),
            reply.renditions_version
        );
    }
    Ok(())
}

/// `gallery sweep`: asks a running api (any replica) to sweep the store, or with `--dry-run`
/// to say what a sweep would remove.
pub async fn sweep(args: SweepArgs) -> anyhow::Result<()> {
    use gallery_lifecycle::sweeper::{SweepReport, SweepRequest};
    let req = SweepRequest {
        dry_run: args.dry_run,
    };
    // A sweep lists the whole store: a big one takes a while.
    let report: SweepReport = ask_api(
        &args.deployment,
        gallery_schema::subjects::ADMIN_SWEEP,
        &req,
        Duration::from_secs(3600),
    )
    .await?;
    if let Some(err) = &report.error {
        anyhow::bail!("{err}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for swept in &report.removed {
        println!(
            "{:>12}  {:<12}  {}",
            swept.bytes,
            swept.reason.as_str(),
            swept.key
        );
    }
    if report.removed.len() < report.objects as usize {
        println!(
            "… and {} more",
            report.objects as usize - report.removed.len()
        );
    }
    for (reason, tally) in &report.by_reason {
        println!("{reason}: {} objects, {} bytes", tally.objects, tally.bytes);
    }
    println!(
        "examined {} objects; {verb} {} ({} bytes){}",
        report.examined,
        report.objects,
        report.bytes,
        if report.failed > 0 {
            format!(
                "; {} could not be removed (the next sweep retries)",
                report.failed
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

/// `gallery backup`: appends the log from `--since` to a file.
pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let (client, _, _) = args.deployment.connect().await?;
    let js = async_nats::jetstream::new(client);
    let fresh = !args.out.exists() || std::fs::metadata(&args.out)?.len() == 0;
    // Where the file ends decides where this run starts: no gap, no repeat.
    let next = if fresh {
        1
    } else {
        let mut existing = std::io::BufReader::new(std::fs::File::open(&args.out)?);
        gallery_nats::backup::last_seq_in(&mut existing)
            .with_context(|| format!("{} is not a whole backup", args.out.display()))?
            + 1
    };
    let since = args.since.unwrap_or(next);
    anyhow::ensure!(
        since == next,
        "{} ends before seq {next}; --since {since} would leave a gap or repeat records",
        args.out.display()
    );
    // Written to a side file first and appended only when complete, so an interrupted run
    // leaves the backup as it was.
    let part = args.out.with_extension("part");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&part)?);
    let stats = gallery_nats::backup::backup(&js, &mut out, since, fresh).await?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    let mut target = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .with_context(|| format!("opening {}", args.out.display()))?;
    std::io::copy(&mut std::fs::File::open(&part)?, &mut target)?;
    target.sync_all()?;
    std::fs::remove_file(&part)?;
    println!(
        "backed up {} events ({} payload bytes) to {}; it now ends at seq {}",
        stats.records,
        stats.payload_bytes,
        args.out.display(),
        stats.last_seq
    );
    Ok(())
}

/// `gallery restore`: declares the topology, then publishes the backup in order.
pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let (client, _, _) = args.deployment.connect().await?;
    let js = async_nats::jetstream::new(client.clone());
    declare_topology(
        &client,
        &js,
        args.topology.stream_replicas,
        &gallery_nats::ProcessorConsumerConfig::with_max_ack_pending(
            args.topology.processor_max_ack_pending,
        ),
    )
    .await?;
    let file = std::fs::File::open(&args.from)
        .with_context(|| format!("opening {}", args.from.display()))?;
    let mut input = std::io::BufReader::new(file);
    let stats = gallery_nats::backup::restore(&js, &mut input).await?;
    println!(
        "restored {} events up to seq {}; run `gallery rebuild` (or start the api) to fold them",
        stats.records, stats.last_seq
    );
    Ok(())
}

/// `gallery rebuild`: refuses while a gallery uses the data dir's read model.
pub async fn rebuild(args: RebuildArgs) -> anyhow::Result<()> {
    let _lock = readmodel::lock(&args.data_dir)?;
    let (_url, nats, client) = connect_or_start(
        &args.data_dir,
        args.nats_url.as_deref(),
        &args.nats.resolve()?,
        None,
    )
    .await?;
    let js = async_nats::jetstream::new(client.clone());
    declare_topology(
        &client,
        &js,
        args.topology.stream_replicas,
        &gallery_nats::ProcessorConsumerConfig::with_max_ack_pending(
            args.topology.processor_max_ack_pending,
        ),
    )
    .await?;
    let dir = readmodel::dir(&args.data_dir);
    let started = std::time::Instant::now();
    let applied = gallery_projector::rebuild(&js, &dir).await?;
    println!(
        "rebuilt {} from {applied} events in {:.1?}",
        dir.display(),
        started.elapsed()
    );
    drop(nats);
    Ok(())
}

/// "1 image", "2 images".
fn images(n: usize) -> String {
    if n == 1 {
        "1 image".to_owned()
    } else {
        format!("{n} images")
    }
}
