//! Renders in child processes. Decoding hostile files with C libraries (libjpeg-turbo, libheif,
//! libde265, dav1d) on threads of the process that holds the NATS and S3 credentials makes a
//! poison file, a hang or a memory blow-up everyone's problem; here each render runs in a
//! render worker process (the same binary's hidden `render-worker` command, under an
//! address-space limit), bytes in and versions out over its pipes ([`crate::protocol`]).
//!
//! A worker that dies mid-render is reported as [`PoolError::Crashed`]; one that passes the
//! deadline is killed and reported as [`PoolError::TimedOut`]. Either way it is replaced by a
//! fresh one on the next job, and the processor goes on. Idle workers are reused, so a job pays
//! for a process start only after a crash.

use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::protocol;
use crate::render::{Limits, RenderError, Rendered};

/// How to start a worker: the program and its arguments.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("the render worker died: {0}")]
    Crashed(String),
    #[error("the render took longer than {0:?}")]
    TimedOut(Duration),
    #[error("no render worker: {0}")]
    Unavailable(String),
}

struct Worker {
    child: Child,
    io: Option<(BufWriter<ChildStdin>, BufReader<ChildStdout>)>,
}

impl Worker {
    fn start(cmd: &WorkerCommand) -> std::io::Result<Self> {
        let mut child = Command::new(&cmd.program)
            .args(&cmd.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        protocol::widen_pipe(&stdin);
        protocol::widen_pipe(&stdout);
        Ok(Self {
            child,
            io: Some((
                BufWriter::with_capacity(1 << 16, stdin),
                BufReader::with_capacity(1 << 16, stdout),
            )),
        })
    }

    /// Why the worker is gone: its exit status, after it was seen to fail.
    fn reap(&mut self) -> String {
        self.io = None;
        for _ in 0..50 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return describe(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(status) => describe(status),
            Err(e) => e.to_string(),
        }
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (_, Some(signal)) => format!("killed by signal {signal}"),
        (Some(code), _) => format!("exited with status {code}"),
        _ => status.to_string(),
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing stdin ends an idle worker; a busy one is killed.
        self.io = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct WorkerPool {
    cmd: WorkerCommand,
    deadline: Duration,
    idle: Mutex<Vec<Worker>>,
    slots: Arc<Semaphore>,
}

impl WorkerPool {
    /// A pool of at most `size` workers (renders at once), each job bounded by `deadline`.
    pub fn new(cmd: WorkerCommand, size: usize, deadline: Duration) -> Self {
        Self {
            cmd,
            deadline,
            idle: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(size.max(1))),
        }
    }

    pub async fn render(
        &self,
        bytes: bytes::Bytes,
        limits: Limits,
    ) -> Result<Result<Rendered, RenderError>, PoolError> {
        let _slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        let idle = self.idle.lock().expect("pool lock").pop();
        // An idle worker that died meanwhile (the OOM killer, an operator) is not this image's
        // crash: start a fresh one instead.
        let idle = idle.and_then(|mut w| match w.child.try_wait() {
            Ok(None) => Some(w),
            _ => None,
        });
        let mut worker = match idle {
            Some(w) => w,
            None => {
                let cmd = self.cmd.clone();
                tokio::task::spawn_blocking(move || Worker::start(&cmd))
                    .await
                    .map_err(|e| PoolError::Unavailable(e.to_string()))?
                    .map_err(|e| PoolError::Unavailable(e.to_string()))?
            }
        };
        let pid = worker.child.id();
        let (mut stdin, mut stdout) = worker.io.take().expect("an idle worker has its pipes");
        let exchange = tokio::task::spawn_blocking(move || {
            let result = protocol::write_request(&mut stdin, limits, &bytes)
                .and_then(|()| protocol::read_response(&mut stdout));
            (result, stdin, stdout)
        });
        match tokio::time::timeout(self.deadline, exchange).await {
            Ok(Ok((Ok(result), stdin, stdout))) => {
                worker.io = Some((stdin, stdout));
                self.idle.lock().expect("pool lock").push(worker);
                Ok(result)
            }
            Ok(Ok((Err(_io), _, _))) => {
                let why = tokio::task::spawn_blocking(move || worker.reap())
                    .await
                    .unwrap_or_default();
                tracing::warn!(pid, why, "a render worker died mid-render");
                Err(PoolError::Crashed(why))
            }
            Ok(Err(join)) => Err(PoolError::Crashed(join.to_string())),
            Err(_) => {
                tracing::warn!(pid, deadline = ?self.deadline, "killing a render worker past its deadline");
                // Killing it ends the blocked exchange (its pipes close).
                let _ = worker.child.kill();
                let _ = tokio::task::spawn_blocking(move || drop(worker)).await;
                Err(PoolError::TimedOut(self.deadline))
            }
        }
    }
}
