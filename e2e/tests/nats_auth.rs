//! The broker is closed: the shipped per-role permissions (nats/conf/auth.conf) are enough for
//! the whole flow and no more, and NATS over TLS works with a CA of our own, against a real
//! nats-server started by the test.

use std::time::Duration;

use gallery::app::{AppConfig, Roles};
use gallery_e2e::{jpeg_photo, upload_with_params};
use gallery_nats::{NatsAuth, NatsServer};
use serde_json::{Value, json};

const PASSWORDS: [(&str, &str); 4] = [
    ("NATS_API_PASSWORD", "api-2f6c1e0b9d8a7f6e5d4c3b2a19080706"),
    (
        "NATS_PROCESSOR_PASSWORD",
        "proc-0a1b2c3d4e5f60718293a4b5c6d7e8f9",
    ),
    (
        "NATS_ADMIN_PASSWORD",
        "admin-9f8e7d6c5b4a39281706f5e4d3c2b1a0",
    ),
    (
        "NATS_SYS_PASSWORD",
        "sys-1122334455667788990011223344556677",
    ),
];

fn password(name: &str) -> String {
    PASSWORDS
        .iter()
        .find(|(k, _)| *k == name)
        .unwrap()
        .1
        .to_owned()
}

fn user(name: &str, password_var: &str) -> NatsAuth {
    NatsAuth {
        user: Some(name.into()),
        password: Some(password(password_var)),
        ..NatsAuth::default()
    }
}

/// A nats-server running the shipped `nats/conf/single.conf` (with its `include ./auth.conf`
/// inlined), on a free loopback port with a temporary store and no monitoring port.
async fn shipped_server() -> NatsServer {
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/../nats/conf");
    let single = std::fs::read_to_string(format!("{conf}/single.conf")).unwrap();
    let auth = std::fs::read_to_string(format!("{conf}/auth.conf")).unwrap();
    let mut template = String::new();
    for line in single.lines() {
        let line = match line.trim() {
            "listen: 0.0.0.0:4222" => "listen: \"127.0.0.1:{port}\"".to_owned(),
            "http: 127.0.0.1:8222" => String::new(),
            "include ./auth.conf" => auth.clone(),
            "store_dir: $NATS_STORE_DIR" => "  store_dir: {store}".to_owned(),
            _ => line.to_owned(),
        };
        template.push_str(&line);
        template.push('\n');
    }
    for replaced in ["{port}", "{store}", "user: processor"] {
        assert!(
            template.contains(replaced),
            "single.conf changed shape: {replaced}"
        );
    }
    let mut env = PASSWORDS.to_vec();
    env.push(("NATS_SERVER_NAME", "auth-test"));
    NatsServer::start_configured(&template, &env).await.unwrap()
}

/// Requests a link, uploads a photo and waits for `done`, over HTTP.
async fn sample_flow(base: &str) {
    let http = reqwest::Client::new();
    let link: Value = http
        .post(format!("{base}/images/"))
        .json(&json!({"filename": "a.jpg", "project_id": "closed"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = link["image_id"].as_str().unwrap().to_owned();
    let (status, body) =
        upload_with_params(&http, &link, link["params"].clone(), jpeg_photo(320, 240))
            .await
            .unwrap();
    assert_eq!(status, 201, "{body}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let rec: Value = http
            .get(format!("{base}/images/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if rec["state"] == "done" {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "not done: {rec}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn each_role_works_through_its_own_permissions_and_can_do_nothing_more() {
    let server = shipped_server().await;
    let data = tempfile::tempdir().unwrap();
    let mut api_cfg = AppConfig::local(data.path());
    api_cfg.nats_url = Some(server.address().into());
    api_cfg.nats_auth = user("api", "NATS_API_PASSWORD");
    api_cfg.roles = Roles::Api;
    let api = gallery::app::start(api_cfg).await.unwrap();
    let mut proc_cfg = AppConfig::local(data.path());
    proc_cfg.nats_url = Some(server.address().into());
    proc_cfg.nats_auth = user("processor", "NATS_PROCESSOR_PASSWORD");
    proc_cfg.roles = Roles::Processor;
    let processor = gallery::app::start(proc_cfg).await.unwrap();

    sample_flow(&api.base_url()).await;
    // The processor's health port serves its metrics.
    let metrics = reqwest::get(format!("{}/metrics", processor.base_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"gallery_jobs_total{outcome="done"} 1"#),
        "{metrics}"
    );
    // The flow needed nothing it isn't allowed.
    let log = server.log();
    let violations: Vec<&str> = log.lines().filter(|l| l.contains("Violation")).collect();
    assert!(violations.is_empty(), "{violations:#?}");

    let wait = Duration::from_secs(10);
    let stream_last = |client: async_nats::Client| async move {
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("IMAGES").await.unwrap();
        stream.info().await.unwrap().state.last_sequence
    };
    let admin = gallery_nats::connect_with(
        &server.address(),
        &user("admin", "NATS_ADMIN_PASSWORD"),
        wait,
    )
    .await
    .unwrap();
    let before = stream_last(admin.clone()).await;

    // The processor can't append what only the api writes, delete the stream, or ask for
    // re-drives.
    let proc_client = gallery_nats::connect_with(
        &server.address(),
        &user("processor", "NATS_PROCESSOR_PASSWORD"),
        wait,
    )
    .await
    .unwrap();
    let mut js = async_nats::jetstream::new(proc_client.clone());
    js.set_timeout(Duration::from_secs(2));
    let image = gallery_schema::ImageId::new_v7();
    let project = gallery_schema::ProjectId::parse("closed").unwrap();
    for kind in [
        gallery_schema::EventKind::UploadRequested,
        gallery_schema::EventKind::Uploaded,
        gallery_schema::EventKind::ReprocessRequested,
    ] {
        let subject = gallery_schema::subjects::event_subject(&project, &image, kind);
        let outcome = match js.publish(subject.clone(), "x".into()).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        assert!(outcome.is_err(), "the processor appended to {subject}");
    }
    assert!(js.delete_stream("IMAGES").await.is_err());
    let redrive = tokio::time::timeout(
        Duration::from_secs(3),
        proc_client.request(gallery_schema::subjects::ADMIN_REDRIVE, "{}".into()),
    )
    .await;
    assert!(
        !matches!(redrive, Ok(Ok(_))),
        "the processor asked for a re-drive"
    );
    // An operator's command run as a user without the admin subjects is told so, not "no
    // api is running" (the api is running).
    let refused = gallery_e2e::procs::gallery_admin(
        &server.address(),
        &[
            "reprocess",
            "--all",
            "--dry-run",
            "--nats-user",
            "processor",
            "--nats-password",
            &password("NATS_PROCESSOR_PASSWORD"),
        ],
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        refused.contains(r#"not authorized for gallery.admin.reprocess as user "processor""#),
        "{refused}"
    );

    // The durable consumers are not the processor's to remove.
    assert!(
        js.delete_consumer_from_stream("deleter", "IMAGES")
            .await
            .is_err()
    );
    assert!(
        js.delete_consumer_from_stream("upload-watcher", "IMAGES")
            .await
            .is_err()
    );
    assert!(
        js.delete_consumer_from_stream("processor", "IMAGES")
            .await
            .is_err()
    );
    // An operator (admin) asks for a re-drive, and the api answers.
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        admin.request(gallery_schema::subjects::ADMIN_REDRIVE, "{}".into()),
    )
    .await
    .expect("an answer within 10 s")
    .expect("the api answers an admin's re-drive request");
    let reply: Value = serde_json::from_slice(&answer.payload).unwrap();
    assert!(reply.get("found").is_some(), "{reply}");
    // And a sweep's dry run; the processor can't ask for one.
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        admin.request(
            gallery_schema::subjects::ADMIN_SWEEP,
            r#"{"dry_run":true}"#.into(),
        ),
    )
    .await
    .expect("an answer within 10 s")
    .expect("the api answers an admin's sweep request");
    let reply: Value = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(reply["dry_run"], true, "{reply}");
    let sweep = tokio::time::timeout(
        Duration::from_secs(3),
        proc_client.request(
            gallery_schema::subjects::ADMIN_SWEEP,
            r#"{"dry_run":false}"#.into(),
        ),
    )
    .await;
    assert!(
        !matches!(sweep, Ok(Ok(_))),
        "the processor asked for a sweep"
    );

    // The api can't delete or purge the log either.
    let api_client =
        gallery_nats::connect_with(&server.address(), &user("api", "NATS_API_PASSWORD"), wait)
            .await
            .unwrap();
    let mut api_js = async_nats::jetstream::new(api_client);
    api_js.set_timeout(Duration::from_secs(2));
    assert!(api_js.delete_stream("IMAGES").await.is_err());
    let stream = api_js.get_stream("IMAGES").await.unwrap();
    assert!(stream.purge().await.is_err());

    // Nothing was written or lost by the refused attempts, and the server said why.
    assert_eq!(stream_last(admin).await, before);
    assert!(
        server.log().contains("Publish Violation"),
        "{}",
        server.log()
    );
    // Nobody connects without a user.
    let anonymous = tokio::time::timeout(
        Duration::from_secs(10),
        async_nats::connect(server.address()),
    )
    .await;
    assert!(
        matches!(anonymous, Ok(Err(_))),
        "an anonymous client connected"
    );
    processor.stop().await;
    api.stop().await;
}

/// A CA, and a server certificate for 127.0.0.1 and localhost signed by it, as PEM files.
fn certificates(
    dir: &std::path::Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let paths = (
        dir.join(format!("{name}-ca.pem")),
        dir.join(format!("{name}-server.pem")),
        dir.join(format!("{name}-server-key.pem")),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

#[tokio::test]
async fn the_service_runs_over_tls_to_nats_with_a_ca_of_our_own() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(certs.path(), "gallery");
    let (other_ca, _, _) = certificates(certs.path(), "stranger");
    let template = format!(
        "listen: \"127.0.0.1:{{port}}\"\nserver_name: \"tls-test\"\n\
         authorization {{ user: \"gallery\", password: \"tls-test-password-0123456789abcdef\" }}\n\
         tls {{\n  cert_file: {cert:?}\n  key_file: {key:?}\n}}\n\
         jetstream {{\n  store_dir: {{store}}\n}}\n"
    );
    let server = NatsServer::start_configured(&template, &[]).await.unwrap();
    let auth = NatsAuth {
        user: Some("gallery".into()),
        password: Some("tls-test-password-0123456789abcdef".into()),
        ca_file: Some(ca.clone()),
        ..NatsAuth::default()
    };
    let url = server.address().replacen("nats://", "tls://", 1);

    // The whole stack over TLS.
    let data = tempfile::tempdir().unwrap();
    let mut cfg = AppConfig::local(data.path());
    cfg.nats_url = Some(url.clone().into());
    cfg.nats_auth = auth.clone();
    let running = gallery::app::start(cfg).await.unwrap();
    sample_flow(&running.base_url()).await;
    running.stop().await;

    // A client that trusts another CA, or only the public roots, can't connect: the server's
    // certificate is ours alone.
    let wait = Duration::from_secs(3);
    for bad in [
        NatsAuth {
            ca_file: Some(other_ca),
            ..auth.clone()
        },
        NatsAuth {
            ca_file: None,
            ..auth.clone()
        },
    ] {
        let client = gallery_nats::connect_with(&server.address(), &bad, wait).await;
        let connected =
            client.is_ok_and(|c| c.connection_state() == async_nats::connection::State::Connected);
        assert!(!connected, "connected without trusting the server's CA");
    }
}
