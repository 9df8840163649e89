//! The command line (docs/ARCHITECTURE.md §10), by subject: [`serve`] (the run modes `up`,
//! `api` and `processor` and the settings they share), [`http`] (the api's listener, links,
//! auth and rate limits), [`access`] (how to reach S3 and NATS), [`admin`] (the operator's
//! commands) and [`tools`] (`bench` and the hidden render worker); `gallery load` takes its
//! arguments from [`crate::load`]. Every flag has an environment variable of the same name
//! (`--max-upload-bytes` ↔ `GALLERY_MAX_UPLOAD_BYTES`); docker-compose and other tools rely on
//! these names.

mod access;
mod admin;
mod http;
mod serve;
mod tools;

use std::time::Duration;

use clap::{Parser, Subcommand};

pub use access::{NatsAuthArgs, S3Args};
pub use admin::{
    BackupArgs, DeploymentArgs, RebuildArgs, RedriveArgs, ReprocessArgs, RestoreArgs, SweepArgs,
    TokenArgs,
};
pub use http::{HttpArgs, LimitArgs, TokenKeysArgs, default_max_connections};
pub use serve::{
    ApiArgs, Common, ProcessingArgs, ProcessorArgs, ReconcilerArgs, TopologyArgs, UpArgs,
    default_memory_budget,
};
pub use tools::{BenchArgs, RenderWorkerArgs};

#[derive(Parser, Debug)]
#[command(
    name = "gallery",
    version,
    about = "LITE Gallery: photo uploads and versions on NATS JetStream"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as text, or as JSON objects (one per line) for log pipelines.
    #[arg(
        long,
        global = true,
        env = "GALLERY_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: crate::telemetry::LogFormat,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Everything in one process: api, projector, processor. Starts a local nats-server when
    /// no NATS URL is given.
    Up(UpArgs),
    /// The api with its projector; needs --nats-url.
    Api(ApiArgs),
    /// A processor replica (a member of the shared consumer); needs --nats-url.
    Processor(ProcessorArgs),
    /// Rebuilds the read model from the event log (service stopped).
    Rebuild(RebuildArgs),
    /// Renders the versions of every image in a directory on one thread and prints timings.
    Bench(BenchArgs),
    /// Re-drives settled errors whose cause has passed (default: `retries_exhausted`).
    Redrive(RedriveArgs),
    /// Removes stored objects no record needs any more, through a running api (`--dry-run`
    /// lists them and their bytes).
    Sweep(SweepArgs),
    /// Re-renders a project's images (or all, or only those of an older renditions
    /// description) through a running api, at a bounded rate.
    Reprocess(ReprocessArgs),
    /// Appends the event log (from --since, or all of it) to a backup file.
    Backup(BackupArgs),
    /// Publishes a backup into an empty stream (or one that ends where the backup begins).
    Restore(RestoreArgs),
    /// Mints a project token (prints it) with the keys file of the deployment.
    Token(TokenArgs),
    /// Drives a running deployment with many clients and prints what it measured.
    Load(crate::load::LoadArgs),
    /// A render worker process (started by the processor, not by hand).
    #[command(hide = true)]
    RenderWorker(RenderWorkerArgs),
}

/// A secret given directly or as a file (`X_FILE`, as docker secrets provide them); the file's
/// trailing newline is not part of it.
pub fn secret(
    direct: Option<String>,
    file: Option<&std::path::Path>,
    name: &str,
) -> anyhow::Result<Option<String>> {
    match (direct, file) {
        (Some(_), Some(_)) => anyhow::bail!("set {name} or {name}_FILE, not both"),
        (Some(value), None) => Ok(Some(value)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("{name}_FILE {}: {e}", path.display()))?;
            let value = text.trim_end_matches(['\n', '\r']).to_owned();
            anyhow::ensure!(!value.is_empty(), "{name}_FILE {} is empty", path.display());
            Ok(Some(value))
        }
        (None, None) => Ok(None),
    }
}

/// `30s`, `5m`, `24h`, `1h 30m` (humantime), or plain seconds.
pub fn duration(raw: &str) -> Result<Duration, String> {
    if let Ok(secs) = raw.trim().parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(raw.trim()).map_err(|e| format!("{raw:?}: {e} (try 30s, 5m or 24h)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Roles;

    #[test]
    fn a_logged_configuration_shows_no_secret() {
        let cli = Cli::try_parse_from([
            "gallery",
            "up",
            "--secret",
            "sekrit-link-signing-0123456789abcdef0123",
            "--s3-bucket",
            "b",
            "--s3-access-key-id",
            "AKIDEXAMPLE",
            "--s3-secret-access-key",
            "sekrit-s3-key",
            "--nats-user",
            "api",
            "--nats-password",
            "sekrit-nats",
            "--token-keys",
            r#"[{"kid":"k","secret":"sekrit-token-key-0123456789abcdef0123"}]"#,
            "--nats-url",
            "nats://api:sekrit-in-url@n1:4222",
        ])
        .unwrap();
        let Command::Up(args) = cli.command else {
            panic!("up")
        };
        let cfg = args.into_config().unwrap();
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("sekrit"), "{shown}");
        let args = Cli::try_parse_from([
            "gallery",
            "up",
            "--secret",
            "sekrit-0123456789abcdef0123456789abcdef",
            "--nats-password",
            "sekrit-nats",
        ])
        .unwrap();
        let shown_args = format!("{args:?}");
        assert!(!shown_args.contains("sekrit"), "{shown_args}");
        assert_eq!(
            cfg.secret.as_deref(),
            Some("sekrit-link-signing-0123456789abcdef0123")
        );
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(duration("soon").is_err());
    }

    #[test]
    fn every_run_mode_parses_its_environment_names() {
        let cli = Cli::try_parse_from([
            "gallery",
            "processor",
            "--nats-url",
            "nats://a:4222,nats://b:4222",
            "--retry-budget",
            "2m",
            "--s3-timeout",
            "5s",
        ])
        .unwrap();
        let Command::Processor(args) = cli.command else {
            panic!("processor")
        };
        let cfg = args.into_config().unwrap();
        assert_eq!(cfg.processor.retry.budget, Duration::from_secs(120));
        assert_eq!(cfg.roles, Roles::Processor);
        assert_eq!(cfg.nats_url.as_deref(), Some("nats://a:4222,nats://b:4222"));
    }
}
