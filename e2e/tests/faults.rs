//! The fault suite: real `gallery` processes (api, processor replicas) against a real
//! nats-server (one node or a 3-node cluster) and a real S3 server, all on loopback, with
//! faults made the way they happen: `kill -9`, a stopped server, a frozen one, SIGTERM. Each
//! fault waits for the state it needs (deliveries in flight, a backlog), and each scenario is
//! judged by the log, not by the read model (`gallery_e2e::tally`): every acknowledged upload
//! in the log, one outcome per generation, every rendered object in storage at its recorded
//! size, `/ready`, and the read model equal to a rebuild of the log. It prints one line,
//! `<scenario>: hit yes (how), acknowledged N, in log N, outcomes N, lost 0, error 0,
//! duplicated 0, stuck 0, ready yes, model = log yes, p99 upload->done T`, and asserts it
//! (every input is a good photo, and a fault that did not hit fails its scenario). Times are
//! printed, never asserted. These run one at a time (the `faults` test group in
//! .config/nextest.toml).

use std::time::{Duration, Instant};

use gallery::app::AppConfig;
use gallery_e2e::garage::S3Server;
use gallery_e2e::jpeg_photo;
use gallery_e2e::procs::{Client, Proc, Sent, burst, free_port, wait_ready};
use gallery_e2e::tally::{Judged, Tally, redelivered, settle, wait_for};
use gallery_nats::{NatsCluster, NatsServer};

const SECRET: &str = "fault-suite-shared-secret-0123456789";

/// `gallery api` plus processor replicas on one NATS (URL list) and one storage.
struct Deployment {
    dir: tempfile::TempDir,
    api: Proc,
    processors: Vec<Proc>,
    /// Each processor's health port (it serves `/metrics` too).
    health: Vec<u16>,
    client: Client,
    nats_urls: String,
    /// Where the deployment stores objects (the data dir, or S3): what the judge reads.
    storage: AppConfig,
    /// Every process's environment (NATS, data dir, secret, the scenario's settings).
    env: Vec<(&'static str, String)>,
}

fn s3_env(s3: &S3Server) -> Vec<(&'static str, String)> {
    let c = &s3.config;
    vec![
        ("GALLERY_S3_BUCKET", c.bucket.clone()),
        ("AWS_ENDPOINT_URL", c.endpoint.clone().unwrap_or_default()),
        (
            "GALLERY_S3_PUBLIC_ENDPOINT",
            c.public_endpoint.clone().unwrap_or_default(),
        ),
        ("AWS_ACCESS_KEY_ID", c.access_key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY", c.secret_access_key.clone()),
        ("AWS_REGION", c.region.clone()),
        ("AWS_ALLOW_HTTP", "true".into()),
        // Outages must outlast the storage client's own retries quickly.
        ("GALLERY_S3_TIMEOUT", "2s".into()),
        ("GALLERY_S3_RETRY_TIMEOUT", "2s".into()),
    ]
}

impl Deployment {
    async fn start(
        nats_urls: &str,
        processors: usize,
        extra: Vec<(&'static str, String)>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("gallery-faults-")
            .tempdir()?;
        let data = dir.path().join("data");
        let port = free_port()?;
        let mut env = vec![
            ("GALLERY_NATS_URL", nats_urls.to_owned()),
            ("GALLERY_DATA_DIR", data.display().to_string()),
            ("GALLERY_SECRET", SECRET.to_owned()),
        ];
        env.extend(extra);
        let mut api_env = env.clone();
        api_env.push(("GALLERY_LISTEN", format!("127.0.0.1:{port}")));
        // A free port for /metrics, so nothing else on the machine (a developer's `gallery
        // up` on the default 9464) can make the api fail to start.
        api_env.push(("GALLERY_METRICS_LISTEN", "127.0.0.1:0".to_owned()));
        let api = Proc::spawn("api", &["api"], &api_env, dir.path())?;
        let client = Client::new(format!("http://127.0.0.1:{port}"));
        wait_ready(
            &client.http,
            &format!("{}/ready", client.base),
            Duration::from_secs(60),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}; api log: {}", api.log_tail()))?;
        let mut d = Self {
            storage: AppConfig::local(&data),
            dir,
            api,
            processors: Vec::new(),
            health: Vec::new(),
            client,
            nats_urls: nats_urls.to_owned(),
            env,
        };
        for _ in 0..processors {
            d.add_processor(Vec::new())?;
        }
        Ok(d)
    }

    /// Starts one more processor replica, with `extra` environment on top of the deployment's.
    fn add_processor(&mut self, extra: Vec<(&'static str, String)>) -> anyhow::Result<usize> {
        let mut penv = self.env.clone();
        let port = free_port()?;
        penv.push(("GALLERY_HEALTH_LISTEN", format!("127.0.0.1:{port}")));
        penv.push(("GALLERY_CONCURRENCY", "1".into()));
        penv.extend(extra);
        let name = format!("processor-{}", self.processors.len() + 1);
        let proc = Proc::spawn(&name, &["processor"], &penv, self.dir.path())?;
        self.processors.push(proc);
        self.health.push(port);
        Ok(self.processors.len() - 1)
    }

    /// Judges the scenario by the log ([`settle`]), waits for the api's read model to reach the
    /// log, then stops the api to compare its read model with a rebuild of the log, and starts
    /// it again.
    async fn judge(&mut self, project: &str, sent: &[Sent], limit: Duration) -> Tally {
        let js = self.js().await.unwrap();
        let store = gallery::storage::open(&self.storage).await.unwrap().store;
        let judged = Judged {
            client: &self.client,
            js: &js,
            store: store.as_ref(),
            project,
            sent,
            limit,
        };
        let mut tally = settle(judged).await.unwrap();
        tally
            .wait_model(&self.client, project, Duration::from_secs(60))
            .await;
        self.api.terminate(Duration::from_secs(15));
        tally
            .model_equals_log(&js, &self.storage.data_dir)
            .await
            .unwrap();
        self.start_api("/ready").await;
        tally
    }

    /// Starts the (stopped) api again and waits until `path` answers 200.
    async fn start_api(&mut self, path: &str) {
        self.api.start().unwrap();
        let url = format!("{}{path}", self.client.base);
        wait_ready(&self.client.http, &url, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.api.log_tail()));
    }

    /// Prints the line and asserts it, with the processes' logs when it fails.
    fn check(&self, tally: &Tally, scenario: &str) {
        if !tally.clean() {
            eprintln!("{}", self.logs());
        }
        tally.print_and_check(scenario);
    }

    /// A processor's counter from its `/metrics` (0 when absent).
    async fn processor_metric(&self, i: usize, series: &str) -> f64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.health[i]);
        let text = match self.client.http.get(url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        gallery_e2e::metric(&text, series).unwrap_or(0.0)
    }

    async fn js(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        let client = gallery_nats::connect(&self.nats_urls, Duration::from_secs(10)).await?;
        Ok(async_nats::jetstream::new(client))
    }

    fn logs(&self) -> String {
        let mut out = format!("--- api ---\n{}\n", self.api.log_tail());
        for p in &self.processors {
            out.push_str(&format!("--- {} ---\n{}\n", p.name, p.log_tail()));
        }
        out
    }
}

/// A photo whose render takes long enough to be interrupted (12 MP).
fn big_photo() -> Vec<u8> {
    jpeg_photo(4000, 3000)
}

/// The live child processes of `pid` (from /proc).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| stat_of(*child).is_some_and(|(state, ppid)| ppid == pid && state != 'Z'))
        .collect()
}

/// A process's state letter and parent pid, from /proc/PID/stat.
fn stat_of(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": the comm may hold spaces and parentheses; the last ')' ends it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// How many of `pids` are still running (not exited, not a zombie) after `limit`.
async fn outliving(pids: &[u32], limit: Duration) -> usize {
    let running = |p: &u32| stat_of(*p).is_some_and(|(state, _)| state != 'Z' && state != 'X');
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && pids.iter().any(running) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pids.iter().filter(|p| running(p)).count()
}

/// Waits until both replicas hold deliveries (at least 3 jobs in flight: each replica takes
/// at most 2), so a kill is sure to interrupt one.
async fn both_replicas_busy(d: &Deployment, project: &str) -> bool {
    let js = d.js().await.unwrap();
    wait_for(&js, project, Duration::from_secs(30), |flying, _| {
        flying >= 3
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_processor_replica_killed_mid_render() {
    let nats = NatsServer::start_temp().await.unwrap();
    let mut d = Deployment::start(&nats.url(), 2, vec![]).await.unwrap();
    let photo = big_photo();
    let client = d.client.clone();
    let sending =
        tokio::spawn(
            async move { burst(&client, "s1", &photo, 24, Duration::from_secs(60)).await },
        );
    // Kill replica 1 while it holds a delivery, several times, restarting it each time. Its
    // render workers (children) must not outlive it.
    let (mut kills, mut workers, mut orphans) = (0, 0, 0);
    for _ in 0..4 {
        if !both_replicas_busy(&d, "s1").await {
            break;
        }
        // Mid-render: once its render worker is up (started with the replica's first render).
        let pid = d.processors[0].pid().unwrap();
        let rendering = Instant::now() + Duration::from_secs(3);
        while children_of(pid).is_empty() && Instant::now() < rendering {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let children = children_of(pid);
        d.processors[0].kill9();
        kills += 1;
        workers += children.len();
        orphans += outliving(&children, Duration::from_secs(5)).await;
        d.processors[0].start().unwrap();
    }
    println!("kill -9: {workers} render workers of the killed replica, {orphans} outlived it");
    assert!(workers > 0, "the killed replica had render workers");
    assert_eq!(orphans, 0, "render workers outlived their processor");
    let (sent, _) = sending.await.unwrap().unwrap();
    let mut tally = d.judge("s1", &sent, Duration::from_secs(180)).await;
    // The proof it hit: the killed deliveries came again (a later attempt in the log).
    let again = redelivered(&d.js().await.unwrap(), "s1").await.unwrap();

    if kills > 0 && !again.is_empty() {
        tally.hit = Some(format!(
            "{kills} kills with deliveries in flight; attempt >= 2 on {} images",
            again.len()
        ));
    }
    d.check(&tally, "kill -9 a processor replica mid-render");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_nats_server_restarted_while_a_backlog_drains() {
    let mut nats = NatsServer::start_temp().await.unwrap();
    let mut d = Deployment::start(&nats.url(), 1, vec![]).await.unwrap();
    let (sent, _) = burst(&d.client, "s2", &big_photo(), 20, Duration::from_secs(60))
        .await
        .unwrap();
    // The processor has a backlog now (at least 10 unsettled): kill the server and bring it
    // back on the same store.
    let js = d.js().await.unwrap();
    let mut backlog = 0;
    let waited = wait_for(&js, "s2", Duration::from_secs(30), |flying, unsettled| {
        flying >= 1 && unsettled >= 10
    })
    .await;
    if waited {
        backlog = gallery_e2e::tally::in_flight(&js, "s2").await.unwrap().1;
    }
    nats.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.restart().await.unwrap();
    let mut tally = d.judge("s2", &sent, Duration::from_secs(180)).await;
    if waited {
        tally.hit = Some(format!("killed with {backlog} of 20 unsettled"));
    }
    d.check(&tally, "nats-server restarted while a backlog drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_storage_unreachable_longer_than_client_retries() {
    let nats = NatsServer::start_temp().await.unwrap();
    let mut s3 = S3Server::start().await.unwrap();
    let mut d = Deployment::start(&nats.url(), 1, s3_env(&s3))
        .await
        .unwrap();
    d.storage.s3 = Some(s3.config.clone());
    let (sent, _) = burst(&d.client, "s3", &big_photo(), 12, Duration::from_secs(60))
        .await
        .unwrap();
    // Refused connections while jobs wait: the server is gone for 4x the client's retry window.
    let js = d.js().await.unwrap();
    wait_for(&js, "s3", Duration::from_secs(30), |flying, unsettled| {
        flying >= 1 && unsettled >= 6
    })
    .await;
    s3.kill();
    tokio::time::sleep(Duration::from_secs(8)).await;
    s3.start_again().await.unwrap();
    // Then a server that hangs: requests time out instead of failing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    s3.freeze(true).unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    s3.freeze(false).unwrap();
    let mut tally = d.judge("s3", &sent, Duration::from_secs(180)).await;
    // The proof it hit: jobs failed on storage and were retried.
    let retries = d
        .processor_metric(0, "gallery_jobs_total{outcome=\"retry\"}")
        .await;
    if retries > 0.0 {
        tally.hit = Some(format!("{retries} job retries counted by the processor"));
    }
    d.check(
        &tally,
        "S3 unreachable (refused, then hanging) past client retries",
    );
}

/// The image id a log line's span names (`image_id=...`).
fn image_in(line: &str) -> Option<String> {
    let at = line.find("image_id=")? + "image_id=".len();
    Some(
        line[at..]
            .chars()
            .take_while(|c| c.is_ascii_hexdigit() || *c == '-')
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s7_sigterm_during_a_burst_then_start_again() {
    let nats = NatsServer::start_temp().await.unwrap();
    // No grace, so the replica releases what it holds rather than finishing it.
    let grace = vec![("GALLERY_SHUTDOWN_GRACE", "0s".to_owned())];
    let mut d = Deployment::start(&nats.url(), 2, grace).await.unwrap();
    let client = d.client.clone();
    let photo = big_photo();
    let sending =
        tokio::spawn(
            async move { burst(&client, "s7", &photo, 24, Duration::from_secs(60)).await },
        );
    assert!(both_replicas_busy(&d, "s7").await, "{}", d.logs());
    // Replica 1 stops in order within docker's 10 s between SIGTERM and SIGKILL.
    let started = Instant::now();
    let processor = d.processors[0].terminate(Duration::from_secs(10));
    let processor_took = started.elapsed();
    assert!(
        processor.is_some_and(|s| s.success()),
        "processor: {processor:?}\n{}",
        d.logs()
    );
    let released: Vec<String> = d.processors[0]
        .log_lines("released on shutdown")
        .iter()
        .filter_map(|l| image_in(l))
        .collect();
    // What it released finishes on the other replica within 10 s of the SIGTERM.
    let deadline = started + Duration::from_secs(10);
    let mut taken_over = 0;
    for id in &released {
        while Instant::now() < deadline {
            let done = d.processors[1]
                .log_lines(id)
                .iter()
                .any(|l| l.contains("job finished") && l.contains("Completed"));
            if done {
                taken_over += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (sent, _) = sending.await.unwrap().unwrap();
    let api = d.api.terminate(Duration::from_secs(10));
    assert!(
        api.is_some_and(|s| s.success()),
        "api: {api:?}\n{}",
        d.logs()
    );
    d.api.start().unwrap();
    d.processors[0].start().unwrap();
    let mut tally = d.judge("s7", &sent, Duration::from_secs(180)).await;
    println!(
        "SIGTERM: the processor stopped in {:.1}s, released {} deliveries, {taken_over} finished on the other replica within 10 s",
        processor_took.as_secs_f64(),
        released.len()
    );
    if !released.is_empty() && taken_over == released.len() {
        tally.hit = Some(format!(
            "released {} in-flight deliveries, all finished on the other replica within 10 s",
            released.len()
        ));
    }
    d.check(
        &tally,
        "SIGTERM a processor replica during a burst, then start again",
    );
}

/// A valid JPEG carrying a test-only marker in a comment segment, which debug builds of the
/// render worker obey (abort, or hang) as a hostile file could make a C decoder do.
fn poison_jpeg(marker: &[u8]) -> Vec<u8> {
    let jpeg = jpeg_photo(640, 480);
    let mut out = jpeg[..2].to_vec(); // SOI
    out.extend_from_slice(&[0xFF, 0xFE]);
    out.extend_from_slice(&((marker.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(marker);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_poison_images_crash_or_hang_their_worker_not_the_processor() {
    let nats = NatsServer::start_temp().await.unwrap();
    let mut d = Deployment::start(
        &nats.url(),
        1,
        vec![
            ("GALLERY_JOB_DEADLINE", "3s".into()),
            ("GALLERY_CRASH_LIMIT", "3".into()),
        ],
    )
    .await
    .unwrap();
    let pid = d.processors[0].pid();
    let (crash, _) = d
        .client
        .send(
            "s5",
            poison_jpeg(b"GALLERY-TEST-POISON-CRASH"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let (hang, _) = d
        .client
        .send(
            "s5",
            poison_jpeg(b"GALLERY-TEST-POISON-HANG"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    // A TIFF only libtiff reads (old-style JPEG): decoded in the same worker processes.
    let ojpeg = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/tiff/ojpeg_chewey_subsamp21_multi_strip.tiff"
    ))
    .unwrap();
    let (tiff, _) = d
        .client
        .send("s5", ojpeg, Duration::from_secs(30))
        .await
        .unwrap();
    let (mut good, _) = burst(
        &d.client,
        "s5",
        &jpeg_photo(1600, 1200),
        10,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    good.push(tiff.clone());
    let mut all = good.clone();
    all.extend([crash.clone(), hang.clone()]);
    let mut tally = d.judge("s5", &all, Duration::from_secs(120)).await;
    // The two poison images end in `error` by design (checked below); the rest are photos.
    tally.error = tally.error.saturating_sub(2);
    tally
        .errors
        .retain(|e| !e.contains(&crash.image_id) && !e.contains(&hang.image_id));
    let code = |rec: serde_json::Value| rec["error"]["code"].as_str().unwrap_or("").to_owned();
    let listing = d.client.listing("s5").await.unwrap();
    let find = |id: &str| {
        listing
            .iter()
            .find(|r| r["image_id"] == id)
            .cloned()
            .unwrap_or_default()
    };
    let crashed = find(&crash.image_id);
    let hung = find(&hang.image_id);
    println!(
        "poison: crash -> {}, hang -> {}",
        crashed["error"], hung["error"]
    );
    assert_eq!(code(crashed), "processing_crashed", "{}", d.logs());
    assert_eq!(code(hung), "processing_timeout", "{}", d.logs());
    let ojpeg = find(&tiff.image_id);
    assert_eq!(ojpeg["state"], "done", "old-style JPEG TIFF: {ojpeg}");
    assert!(
        d.processors[0].exited().is_none(),
        "the processor kept running"
    );
    assert_eq!(d.processors[0].pid(), pid);
    tally.hit =
        Some("processing_crashed after 3 worker crashes, processing_timeout after a hang".into());
    d.check(
        &tally,
        "poison images (one crashes, one hangs its render worker) in a burst",
    );
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(base: &str, project: &str, since: u64) -> Ws {
    let url = format!(
        "{}/projects/{project}/ws?since={since}",
        base.replacen("http://", "ws://", 1)
    );
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// Reads text messages (their `seq`s) until `want` seqs are in, the socket closes, or `limit`.
async fn ws_read(ws: &mut Ws, seqs: &mut Vec<u64>, want: usize, limit: Duration) {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + limit;
    while seqs.len() < want {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                seqs.push(v["seq"].as_u64().unwrap());
            }
            Ok(Some(Ok(_))) => {}
            _ => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s6_websocket_resume_and_a_client_that_stops_reading() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let nats = NatsServer::start_temp().await.unwrap();
    let mut d = Deployment::start(
        &nats.url(),
        1,
        vec![("GALLERY_WS_PING_INTERVAL", "1s".into())],
    )
    .await
    .unwrap();
    let base = d.client.base.clone();
    // A reads nothing after connecting; B reads everything; C drops mid-burst and resumes.
    let mut stalled = ws_connect(&base, "s6", 0).await;
    let stalled_since = Instant::now();
    let mut reader = ws_connect(&base, "s6", 0).await;
    // The reader keeps reading (and so answering pings) throughout: 12 photos, 8 events each.
    let reading = tokio::spawn(async move {
        let mut seqs = Vec::new();
        ws_read(&mut reader, &mut seqs, 12 * 8, Duration::from_secs(120)).await;
        seqs
    });
    let mut resumer = ws_connect(&base, "s6", 0).await;
    let client = d.client.clone();
    let sending = tokio::spawn(async move {
        burst(
            &client,
            "s6",
            &jpeg_photo(1600, 1200),
            12,
            Duration::from_secs(60),
        )
        .await
    });
    let mut first = Vec::new();
    ws_read(&mut resumer, &mut first, 20, Duration::from_secs(60)).await;
    assert_eq!(first.len(), 20, "the resumer got its first 20 events");
    drop(resumer);
    let (sent, _) = sending.await.unwrap().unwrap();
    let js = d.js().await.unwrap();
    // Every photo settled in the log before the sockets are compared with it.
    gallery_e2e::tally::wait_for(&js, "s6", Duration::from_secs(120), |_, unsettled| {
        unsettled == 0
    })
    .await;

    // What the log holds for the project: every socket must see exactly these.
    let project = gallery_schema::ProjectId::parse("s6").unwrap();
    let log: Vec<u64> = gallery_nats::read::read_until_now(
        &js,
        gallery_schema::subjects::project_filter(&project),
        1,
        Duration::from_secs(10),
    )
    .await
    .unwrap()
    .iter()
    .map(|e| e.seq)
    .collect();
    let mut resumed = first.clone();
    let mut again = ws_connect(&base, "s6", *first.last().unwrap()).await;
    ws_read(&mut again, &mut resumed, log.len(), Duration::from_secs(30)).await;
    assert_eq!(
        resumed, log,
        "resumed with since: every event exactly once, in order"
    );
    let all = reading.await.unwrap();
    assert_eq!(all, log, "a reading client saw every event exactly once");

    // The stalled client answered no ping for three intervals (3 s): the server has closed it.
    // (Reading it now answers pings, so give the server its 3 s of silence first.)
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(stalled_since.elapsed())).await;
    let mut closed = None;
    let mut buffered = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Ok(next) = tokio::time::timeout_at(deadline, stalled.next()).await {
        match next {
            Some(Ok(Message::Close(frame))) => {
                closed = Some(frame.map(|f| f.reason.to_string()).unwrap_or_default());
                break;
            }
            Some(Ok(_)) => buffered += 1,
            Some(Err(e)) => {
                closed = Some(format!("connection ended: {e}"));
                break;
            }
            None => {
                closed = Some("connection ended".to_owned());
                break;
            }
        }
    }
    println!("websocket: the stalled client had {buffered} messages buffered");
    let closed =
        closed.unwrap_or_else(|| panic!("the stalled client was not closed\n{}", d.logs()));
    println!("websocket: the stalled client was closed ({closed:?})");
    println!(
        "websocket: {} events, resumed with since after {}, both readers saw each exactly once",
        log.len(),
        first.len()
    );
    // Judged last: the judge restarts the api, which closes every socket.
    let mut tally = d.judge("s6", &sent, Duration::from_secs(120)).await;
    tally.hit = Some(format!(
        "the stalled client was closed ({closed}); the resumer dropped after {} events",
        first.len()
    ));
    d.check(
        &tally,
        "WebSocket client dropped mid-burst and resumed with since",
    );
}

/// The stream's leader and replica count, from the stream's own info.
async fn stream_cluster(js: &async_nats::jetstream::Context) -> anyhow::Result<(String, usize)> {
    let mut stream = js.get_stream("IMAGES").await?;
    let info = stream.info().await?;
    let leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .unwrap_or_default();
    Ok((leader, info.config.num_replicas))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_cluster_leader_killed_mid_burst() {
    let mut cluster = NatsCluster::start(3).await.unwrap();
    let urls = cluster.urls();
    let mut d = Deployment::start(&urls, 1, vec![]).await.unwrap();
    let js = d.js().await.unwrap();
    let (leader, replicas) = stream_cluster(&js).await.unwrap();
    assert_eq!(replicas, 3, "auto replicas on a 3-node cluster");

    let client = d.client.clone();
    let photo = big_photo();
    let sending =
        tokio::spawn(
            async move { burst(&client, "s4", &photo, 24, Duration::from_secs(90)).await },
        );
    // While link requests and uploads are still coming in.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n: usize = leader.trim_start_matches('n').parse().unwrap();
    cluster.nodes[n - 1].kill();
    let killed = Instant::now();
    // The failover window: until a new upload request is accepted again.
    let mut refused = 0;
    loop {
        let resp = d
            .client
            .http
            .post(format!("{}/images/", d.client.base))
            .json(&serde_json::json!({"filename": "probe.jpg", "project_id": "s4-probe"}))
            .send()
            .await;
        match resp {
            Ok(r) if r.status() == 201 => break,
            Ok(r) => {
                assert_eq!(r.status(), 503, "only 503 during the election");
                refused += 1;
            }
            Err(_) => refused += 1,
        }
        assert!(killed.elapsed() < Duration::from_secs(60), "no failover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let window = killed.elapsed();
    let (sent, retries) = sending.await.unwrap().unwrap();
    let mut tally = d.judge("s4", &sent, Duration::from_secs(180)).await;
    println!(
        "cluster failover: leader {leader} killed, requests accepted again after {:.1}s, {refused} probes refused, {retries} client retries",
        window.as_secs_f64()
    );
    let (new_leader, _) = stream_cluster(&js).await.unwrap();
    if new_leader != leader && refused + retries as usize > 0 {
        tally.hit = Some(format!(
            "leader {leader} -> {new_leader}; {refused} probes refused, {retries} client retries"
        ));
    }
    d.check(&tally, "3-node cluster, stream leader killed -9 mid-burst");

    // A gallery restart keeps the stream at three replicas.
    d.api.terminate(Duration::from_secs(15));
    d.start_api("/health").await;
    let (_, replicas) = stream_cluster(&js).await.unwrap();
    assert_eq!(replicas, 3, "a restart must not scale the stream down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s8_damaged_read_model_is_rebuilt_at_start() {
    let nats = NatsServer::start_temp().await.unwrap();
    let mut d = Deployment::start(&nats.url(), 1, vec![]).await.unwrap();
    let (sent, _) = burst(
        &d.client,
        "s8",
        &jpeg_photo(800, 600),
        8,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let mut before = d.judge("s8", &sent, Duration::from_secs(120)).await;
    before.hit = Some("none yet: the baseline before the damage".into());
    d.check(&before, "before damaging the read model");
    let live = d.client.listing("s8").await.unwrap();

    d.api
        .terminate(Duration::from_secs(15))
        .expect("api stops on SIGTERM");
    let readmodel = d.dir.path().join("data/readmodel");
    damage_sled(&readmodel);
    d.start_api("/ready").await;
    let rebuilt = d.client.listing("s8").await.unwrap();
    let strip = |list: &[serde_json::Value]| -> Vec<serde_json::Value> {
        list.iter()
            .map(|r| {
                serde_json::json!({
                    "image_id": r["image_id"], "state": r["state"], "meta": r["meta"],
                    "filename": r["filename"], "created_at": r["created_at"],
                })
            })
            .collect()
    };
    assert_eq!(strip(&rebuilt), strip(&live));
    assert_eq!(
        d.api.log_count("rebuilding it from the log"),
        1,
        "{}",
        d.api.log_tail()
    );
    let mut after = d.judge("s8", &sent, Duration::from_secs(30)).await;
    after.hit = Some("the damaged read model was found and rebuilt from the log".into());
    d.check(&after, "damaged read model rebuilt at start");
}

/// Overwrites sled's config and the start of its data file with garbage.
fn damage_sled(dir: &std::path::Path) {
    let conf = dir.join("conf");
    assert!(conf.is_file(), "sled layout changed: no {}", conf.display());
    std::fs::write(&conf, b"\x00garbage\xff\xfe not a sled config").unwrap();
    let db = dir.join("db");
    if db.is_file() {
        let mut bytes = std::fs::read(&db).unwrap();
        for b in bytes.iter_mut().take(4096) {
            *b ^= 0x5a;
        }
        std::fs::write(&db, bytes).unwrap();
    }
}

/// libfaketime's preload library (Debian's `faketime` package; `scripts/ensure-faketime.sh`).
fn libfaketime() -> String {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ];
    candidates
        .iter()
        .find(|p| std::path::Path::new(p).is_file())
        .map(|p| (*p).to_owned())
        .expect("libfaketime is missing: scripts/ensure-faketime.sh installs it")
}

/// How long a burst's images of `project` took, from `since`, to all have an outcome in the
/// log, and the outcomes' codes ("done" or the failure's code).
async fn outcomes_after(
    js: &async_nats::jetstream::Context,
    project: &str,
    sent: &[Sent],
    limit: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let events = gallery_e2e::tally::project_events(js, project)
            .await
            .unwrap_or_default();
        let codes: Vec<String> = sent
            .iter()
            .filter_map(|s| {
                events.iter().rev().find_map(|e| {
                    (e.event.image_id.to_string() == s.image_id)
                        .then_some(&e.event.body)
                        .and_then(|b| match b {
                            gallery_schema::EventBody::Processed { .. } => Some("done".into()),
                            gallery_schema::EventBody::Failed(f) => {
                                Some(f.code.as_str().to_owned())
                            }
                            _ => None,
                        })
                })
            })
            .collect();
        if codes.len() == sent.len() || Instant::now() > deadline {
            return codes;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A processor whose clock is 25 h off (libfaketime) measures its retry budget right. 25 h
/// ahead: with S3 down shorter than the budget its photos end `done`; down longer, they end
/// `retries_exhausted` about a budget after the first attempt, neither at once nor never.
/// 25 h behind, S3 refuses every request it signs (Garage: "Date is too old"), outage or not:
/// its photos end `retries_exhausted` about a budget after the first attempt (before the fix,
/// never: a negative elapsed time counted as zero).
async fn skewed_clock(skew: &str, project: &str, s3_takes_its_signatures: bool) {
    const BUDGET: Duration = Duration::from_secs(20);
    let nats = NatsServer::start_temp().await.unwrap();
    let mut s3 = S3Server::start().await.unwrap();
    let mut env = s3_env(&s3);
    env.push(("GALLERY_RETRY_BUDGET", format!("{}s", BUDGET.as_secs())));
    let mut d = Deployment::start(&nats.url(), 0, env).await.unwrap();
    d.storage.s3 = Some(s3.config.clone());
    let js = d.js().await.unwrap();
    let photo = jpeg_photo(1600, 1200);
    let skewed = vec![
        ("LD_PRELOAD", libfaketime()),
        ("FAKETIME", skew.to_owned()),
        // Timers run on the monotonic clock, which stays true.
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
    ];
    // 1. Down for half the budget.
    let (short, _) = burst(&d.client, project, &photo, 3, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(wait_for(&js, project, Duration::from_secs(30), |_, u| u == 3).await);
    s3.kill();
    let started = Instant::now();
    let p = d.add_processor(skewed).unwrap();
    tokio::time::sleep(BUDGET / 2).await;
    s3.start_again().await.unwrap();
    let codes = outcomes_after(&js, project, &short, BUDGET * 4).await;
    let took = started.elapsed();
    if !s3_takes_its_signatures {
        println!(
            "clock {skew}: S3 refuses its signatures; {codes:?} after {:.1}s (budget {}s)",
            took.as_secs_f64(),
            BUDGET.as_secs()
        );
        assert_eq!(codes, ["retries_exhausted"; 3], "{skew}\n{}", d.logs());
        assert!(took >= BUDGET, "{skew}: gave up at once ({took:?})");
        return;
    }
    assert_eq!(codes, ["done"; 3], "{skew}, down shorter\n{}", d.logs());
    // 2. Down for longer than the budget: retries_exhausted after about the budget.
    d.processors[p].terminate(Duration::from_secs(10));
    let (long, _) = burst(&d.client, project, &photo, 3, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(wait_for(&js, project, Duration::from_secs(30), |_, u| u == 3).await);
    s3.kill();
    let started = Instant::now();
    d.processors[p].start().unwrap();
    let codes = outcomes_after(&js, project, &long, BUDGET * 4).await;
    let took = started.elapsed();
    s3.start_again().await.unwrap();
    println!(
        "clock {skew}: down shorter than the budget: 3 done; down longer: {codes:?} after {:.1}s (budget {}s)",
        took.as_secs_f64(),
        BUDGET.as_secs()
    );
    assert_eq!(codes, ["retries_exhausted"; 3], "{skew}\n{}", d.logs());
    assert!(took >= BUDGET, "{skew}: gave up at once ({took:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s9_a_processor_clock_25_hours_ahead_or_behind_keeps_its_budget() {
    skewed_clock("+25h", "s9-ahead", true).await;
    skewed_clock("-25h", "s9-behind", false).await;
}
