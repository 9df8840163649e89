//! The operator's commands beside the service: `redrive`, `reprocess` and `sweep` (answered by
//! a running api), `backup` and `restore` (the event log out and back), `rebuild` (the read
//! model from the log) and `token` (a project token from the deployment's keys).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::access::NatsAuthArgs;
use super::duration;
use super::http::TokenKeysArgs;
use super::serve::TopologyArgs;

/// Which deployment an operator's command talks to: `--nats-url`, or the local deployment
/// (`gallery up`) on `--data-dir`, found by the address and credential its embedded NATS
/// server leaves there.
#[derive(Args, Debug, Clone)]
pub struct DeploymentArgs {
    /// The deployment's NATS server (or a comma-separated list). Default: the embedded server
    /// of the `gallery up` running on --data-dir.
    #[arg(long, env = "GALLERY_NATS_URL")]
    pub nats_url: Option<String>,
    /// The data dir of a local deployment (`gallery up`), used when no --nats-url is given.
    #[arg(long, env = "GALLERY_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub nats: NatsAuthArgs,
}

impl DeploymentArgs {
    /// The NATS URL to use: the given one, or the local deployment's (credential included).
    pub fn url(&self) -> anyhow::Result<String> {
        if let Some(url) = &self.nats_url {
            return Ok(url.clone());
        }
        let dir = self.data_dir.join("nats");
        match gallery_nats::embedded_url(&dir) {
            Ok(Some(url)) => Ok(url),
            Ok(None) => anyhow::bail!(
                "no --nats-url (GALLERY_NATS_URL), and no local deployment on {}: start \
                 `gallery up --data-dir {}`, or give the data dir it runs with (--data-dir or \
                 GALLERY_DATA_DIR)",
                self.data_dir.display(),
                self.data_dir.display()
            ),
            Err(e) => anyhow::bail!("reading the local deployment in {}: {e}", dir.display()),
        }
    }

    /// Connects for one command; a refused user or password says how to get in, and the
    /// server's later refusals (missing permissions) are kept in the answer's [`Refusals`].
    pub async fn connect(
        &self,
    ) -> anyhow::Result<(async_nats::Client, gallery_nats::Refusals, String)> {
        let url = self.url()?;
        let auth = self.nats.resolve()?;
        let refusals = gallery_nats::Refusals::default();
        let shown = gallery_nats::redact(&url);
        match gallery_nats::connect_command(&url, &auth, refusals.clone()).await {
            Ok(client) => Ok((client, refusals, self.user(&url))),
            Err(e) if e.kind() == async_nats::ConnectErrorKind::AuthorizationViolation => {
                anyhow::bail!(
                    "NATS at {shown} refused user {:?} (authorization violation): for a local \
                     `gallery up`, give its --data-dir and no --nats-url; otherwise the user of \
                     a role allowed the admin subjects (--nats-user, --nats-password, \
                     --nats-creds)",
                    self.user(&url)
                )
            }
            Err(e) => Err(anyhow::Error::new(e).context(format!(
                "connecting to NATS at {shown} (is the deployment running?)"
            ))),
        }
    }

    /// The NATS user this command connects as, for messages.
    fn user(&self, url: &str) -> String {
        if let Some(user) = &self.nats.nats_user {
            return user.clone();
        }
        if self.nats.nats_creds.is_some() {
            return "of the .creds file".into();
        }
        url.split(',')
            .find_map(|u| {
                let rest = u.trim().split_once("://").map_or(u, |(_, r)| r);
                let (userinfo, _) = rest.split_once('@')?;
                Some(userinfo.split(':').next().unwrap_or_default().to_owned())
            })
            .unwrap_or_else(|| "(none)".into())
    }
}

#[derive(Args, Debug, Clone)]
pub struct RedriveArgs {
    /// Only this project's images.
    #[arg(long)]
    pub project: Option<String>,
    /// Images in `error` with this code.
    #[arg(long, default_value = "retries_exhausted")]
    pub code: String,
    #[command(flatten)]
    pub deployment: DeploymentArgs,
}

#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["project", "all"])))]
pub struct ReprocessArgs {
    /// This project's images.
    #[arg(long)]
    pub project: Option<String>,
    /// Every project's images.
    #[arg(long)]
    pub all: bool,
    /// Only images rendered with an older renditions description than this build's.
    #[arg(long)]
    pub outdated: bool,
    /// Re-renders requested per second (the processors take them between new uploads).
    #[arg(long, default_value_t = 10)]
    pub rate: u32,
    /// Count the images without requesting anything.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub deployment: DeploymentArgs,
}

#[derive(Args, Debug, Clone)]
pub struct SweepArgs {
    /// List what would be removed, and the bytes, without removing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the whole report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub deployment: DeploymentArgs,
}

#[derive(Args, Debug, Clone)]
pub struct BackupArgs {
    /// The backup file; when it exists, the run appends what came after its last record (an
    /// incremental backup).
    #[arg(long)]
    pub out: PathBuf,
    /// The first stream sequence to copy (default: 1, or one past the file's last record). A
    /// value that would leave a gap or repeat records in the file is refused.
    #[arg(long)]
    pub since: Option<u64>,
    #[command(flatten)]
    pub deployment: DeploymentArgs,
}

#[derive(Args, Debug, Clone)]
pub struct RestoreArgs {
    /// A file written by `gallery backup`.
    #[arg(long)]
    pub from: PathBuf,
    #[command(flatten)]
    pub topology: TopologyArgs,
    #[command(flatten)]
    pub deployment: DeploymentArgs,
}

#[derive(Args, Debug, Clone)]
pub struct RebuildArgs {
    #[arg(long, env = "GALLERY_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Without it, the local nats-server under the data dir is started, as `up` does.
    #[arg(long, env = "GALLERY_NATS_URL")]
    pub nats_url: Option<String>,
    #[command(flatten)]
    pub topology: TopologyArgs,
    #[command(flatten)]
    pub nats: NatsAuthArgs,
}

/// `gallery token`: mints a project token with the deployment's keys file.
#[derive(Args, Debug, Clone)]
pub struct TokenArgs {
    /// A project id, or a prefix of ids ending in `*` (`*` alone: every project).
    #[arg(long)]
    pub project: String,
    /// Comma-separated: upload, read, subscribe, admin.
    #[arg(long, default_value = "upload,read,subscribe")]
    pub rights: String,
    /// Lifetime (e.g. 24h, 30d; at most 366 days).
    #[arg(long, default_value = "24h", value_parser = duration)]
    pub ttl: Duration,
    /// The deployment's data dir, whose `token-keys.json` signs (the one `gallery up` uses).
    #[arg(long, env = "GALLERY_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Make a new keys file in the data dir when there is none (a deployment that will run with
    /// it); without it, missing keys are an error, never made up.
    #[arg(long)]
    pub init_keys: bool,
    #[command(flatten)]
    pub keys: TokenKeysArgs,
}
