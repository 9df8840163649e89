//! A real `nats-server` as a child process: `gallery up` runs one with its store under the data
//! dir, and every test harness runs one on a free loopback port with a temporary store. The
//! child is stopped (SIGTERM, then SIGKILL after a deadline) when the handle is dropped.
//! `cluster.rs` starts several as one JetStream cluster (the failover tests).
//!
//! The server listens on loopback only and takes one user, whose password is generated into
//! `credential` in its directory (mode 0600) on first start and kept: a connection without
//! it is refused. [`NatsServer::url`] carries the credential (`nats://gallery:<password>@…`);
//! log [`NatsServer::address`] instead.
//!
//! JetStream syncs to disk before acknowledging (`sync_interval: always`): an acked event
//! survives a power cut, at 3,900-4,500 guarded appends/s on one node here (an R3 cluster
//! syncs per Raft append entry and takes 3-5x that), far above the reference load.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "nats-server not found: set GALLERY_NATS_SERVER or put nats-server (2.11 or newer) on \
         PATH; scripts/ensure-nats-server.sh installs one"
    )]
    NotFound,
    #[error("starting nats-server: {0}")]
    Io(#[from] std::io::Error),
    #[error("nats-server exited during start-up ({0}); its log: {1}")]
    Exited(std::process::ExitStatus, String),
    #[error("nats-server did not accept connections within {0:?}; its log: {1}")]
    NotReady(Duration, String),
}

/// Locates the server binary: `GALLERY_NATS_SERVER`, then `PATH`, then the copy that
/// `scripts/ensure-nats-server.sh` installs into this checkout's `.tools/`.
pub fn find_nats_server() -> Result<PathBuf, ServerError> {
    if let Some(path) = std::env::var_os("GALLERY_NATS_SERVER") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(ServerError::NotFound)
        };
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    let in_checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/nats-server");
    if in_checkout.is_file() {
        return Ok(in_checkout);
    }
    Err(ServerError::NotFound)
}

pub(crate) fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The user of the embedded server.
pub const EMBEDDED_USER: &str = "gallery";

pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    /// The password of [`EMBEDDED_USER`]; `None`: no authorization (test clusters).
    password: Option<String>,
    dir: PathBuf,
    /// The config's text, kept so [`NatsServer::restart`] starts the same server again.
    config: String,
    /// The server's environment (the config's `$VARIABLES`).
    env: Vec<(String, String)>,
    log_path: PathBuf,
    // Keeps a temporary store alive for the server's lifetime (tests).
    _temp: Option<tempfile::TempDir>,
}

impl NatsServer {
    /// Starts a server whose JetStream store (and config and log) live in `dir`, on a free
    /// loopback port. A server left running by a crashed earlier process on the same `dir` is
    /// stopped first: two servers must never share one store.
    pub async fn start_in(dir: &Path) -> Result<Self, ServerError> {
        Self::start_in_on(dir, None).await
    }

    /// [`start_in`](Self::start_in) on loopback `port` (`None`: a free one).
    pub async fn start_in_on(dir: &Path, port: Option<u16>) -> Result<Self, ServerError> {
        std::fs::create_dir_all(dir)?;
        stop_stale(dir);
        let binary = find_nats_server()?;
        let mut last_err = None;
        // A free port can be taken between our probe and the server's bind: retry a few times.
        for _ in 0..3 {
            match Self::spawn(&binary, dir, port).await {
                Ok(server) => return Ok(server),
                Err(err) => last_err = Some(err),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    /// A server with a config of the caller's and a temporary store (tests of the shipped auth
    /// and TLS configs): `{port}` and `{store}` in `template` are filled in, `env` holds the
    /// config's `$VARIABLES`. [`url`](Self::url) carries no credential.
    pub async fn start_configured(
        template: &str,
        env: &[(&str, &str)],
    ) -> Result<Self, ServerError> {
        let temp = tempfile::Builder::new().prefix("gallery-nats-").tempdir()?;
        let binary = find_nats_server()?;
        let port = free_port()?;
        let store = temp.path().join("jetstream");
        let config = template
            .replace("{port}", &port.to_string())
            .replace("{store}", &format!("{store:?}"));
        let mut server = Self::with_config(temp.path(), port, config);
        server.env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        server.launch(&binary)?;
        server.wait_ready(Duration::from_secs(15)).await?;
        server._temp = Some(temp);
        Ok(server)
    }

    /// A server with a temporary store, removed on drop (tests).
    pub async fn start_temp() -> Result<Self, ServerError> {
        let temp = tempfile::Builder::new().prefix("gallery-nats-").tempdir()?;
        let mut server = Self::start_in(temp.path()).await?;
        server._temp = Some(temp);
        Ok(server)
    }

    async fn spawn(binary: &Path, dir: &Path, port: Option<u16>) -> Result<Self, ServerError> {
        let port = match port {
            Some(port) => port,
            None => free_port()?,
        };
        let store = dir.join("jetstream");
        let password = credential(dir)?;
        let config = format!(
            "# written by gallery on every start; holds the credential: keep it private\n\
             listen: \"127.0.0.1:{port}\"\n\
             server_name: \"gallery-embedded\"\n\
             authorization {{\n  user: \"{EMBEDDED_USER}\"\n  password: \"{password}\"\n}}\n\
             jetstream {{\n  store_dir: {store:?}\n  sync_interval: always\n}}\n"
        );
        let mut server = Self::with_config(dir, port, config);
        server.password = Some(password);
        server.launch(binary)?;
        server.wait_ready(Duration::from_secs(15)).await?;
        // Where it listens, for the operator's commands that find it by the data dir.
        std::fs::write(dir.join(ADDRESS_FILE), server.address())?;
        Ok(server)
    }

    pub(crate) fn with_config(dir: &Path, port: u16, config: String) -> Self {
        Self {
            child: None,
            port,
            password: None,
            env: Vec::new(),
            dir: dir.to_owned(),
            config,
            log_path: dir.join("nats-server.log"),
            _temp: None,
        }
    }

    pub(crate) fn launch(&mut self, binary: &Path) -> Result<(), ServerError> {
        let conf = self.dir.join("nats-server.conf");
        write_private(&conf, self.config.as_bytes())?;
        // A fresh log per start: "Server is ready" must come from this one.
        let log = std::fs::File::create(&self.log_path)?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        std::fs::write(self.dir.join("nats-server.pid"), child.id().to_string())?;
        self.child = Some(child);
        Ok(())
    }

    /// Starts the server again on the same port and store, after [`stop`](Self::stop) or
    /// [`kill`](Self::kill) (fault-injection tests).
    pub async fn restart(&mut self) -> Result<(), ServerError> {
        self.stop();
        self.launch(&find_nats_server()?)?;
        self.wait_ready(Duration::from_secs(30)).await
    }

    /// The process id of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub(crate) async fn wait_ready(&mut self, limit: Duration) -> Result<(), ServerError> {
        let start = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(ServerError::Exited(status, self.log_tail()));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
                && std::fs::read_to_string(&self.log_path)
                    .unwrap_or_default()
                    .contains("Server is ready")
            {
                return Ok(());
            }
            if start.elapsed() > limit {
                self.stop();
                return Err(ServerError::NotReady(limit, self.log_tail()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        text[text.floor_char_boundary(start)..].to_owned()
    }

    /// The URL clients connect with, credential included.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("nats://{EMBEDDED_USER}:{password}@127.0.0.1:{}", self.port),
            None => self.address(),
        }
    }

    /// The URL without the credential (for logs and error messages).
    pub fn address(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The directory holding the store, the config, the log and the credential.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the server: SIGTERM (JetStream flushes and closes its files), SIGKILL after 10 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(10));
        }
    }

    /// Kills the server at once, as a crash would (fault-injection tests).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn terminate(child: &mut Child, grace: Duration) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The embedded server's password: read from `dir/credential`, or generated there (32 random
/// bytes, hex, mode 0600) on first start.
/// The file in an embedded server's directory that names the address of its last start.
const ADDRESS_FILE: &str = "address";

/// The URL, credential included, of the embedded server whose directory is `dir`, as its last
/// start left it (`gallery up` on a data dir uses `<data-dir>/nats`); `None` when no server
/// ever started there. It may have stopped since: connecting tells.
pub fn embedded_url(dir: &Path) -> std::io::Result<Option<String>> {
    let address = match std::fs::read_to_string(dir.join(ADDRESS_FILE)) {
        Ok(address) => address,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let password = std::fs::read_to_string(dir.join("credential"))?;
    let host_port = address.trim().trim_start_matches("nats://");
    Ok(Some(format!(
        "nats://{EMBEDDED_USER}:{}@{host_port}",
        password.trim()
    )))
}

fn credential(dir: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let path = dir.join("credential");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim();
        if existing.len() >= 32 && existing.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(existing.to_owned());
        }
    }
    let mut raw = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut raw)?;
    let password: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, password.as_bytes())?;
    Ok(password)
}

/// Writes a file only its owner can read or write (0600), atomically: a temporary file in the
/// same directory, synced, then renamed over the target (the embedded server's credential and
/// config, the api's token keys).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    // A leftover temporary file keeps its mode on open: tighten it.
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Stops a nats-server that an earlier, crashed run left on this store.
fn stop_stale(dir: &Path) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let Ok(pid) = std::fs::read_to_string(dir.join("nats-server.pid")) else {
        return;
    };
    let Ok(pid) = pid.trim().parse::<i32>() else {
        return;
    };
    let conf = dir.join("nats-server.conf");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    // Only our own child: the binary name and this store's config on its command line.
    if !(cmdline.contains("nats-server") && cmdline.contains(&*conf.to_string_lossy())) {
        return;
    }
    tracing::warn!(pid, "stopping a nats-server left running on this data dir");
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && Path::new(&format!("/proc/{pid}")).exists() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
}
