//! A newcomer's operator commands against a real `gallery up` (the built binary, its embedded
//! nats-server): found by the data dir alone, a refused NATS user named as such, `gallery
//! rebuild` refused while the data dir is in use, and `gallery token`, which signs with the
//! deployment's keys and never makes keys up.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use gallery_e2e::procs::{Proc, free_port, gallery_bin, wait_ready};

/// Runs `gallery ARGS` as an operator would in a shell with no NATS URL set.
async fn gallery(args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(gallery_bin().unwrap());
    cmd.args(args)
        .env_remove("GALLERY_NATS_URL")
        .env_remove("GALLERY_DATA_DIR")
        .env_remove("GALLERY_TOKEN_KEYS_FILE")
        .env_remove("GALLERY_TOKEN_KEYS");
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[tokio::test]
async fn operator_commands_find_a_local_gallery_up_by_its_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let listen = format!("127.0.0.1:{}", free_port().unwrap());
    let metrics = format!("127.0.0.1:{}", free_port().unwrap());
    let mut up = Proc::spawn(
        "up",
        &[
            "up",
            "--data-dir",
            arg(&data),
            "--listen",
            &listen,
            "--metrics-listen",
            &metrics,
        ],
        &[],
        dir.path(),
    )
    .unwrap();
    let http = reqwest::Client::new();
    wait_ready(
        &http,
        &format!("http://{listen}/ready"),
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", up.log_tail()));

    // The data dir alone: no URL, no user, no credential file given.
    let out = gallery(&["reprocess", "--all", "--dry-run", "--data-dir", arg(&data)]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("found 0 images"),
        "{}",
        text(&out)
    );
    let out = gallery(&["sweep", "--dry-run", "--data-dir", arg(&data)]).await;
    assert!(out.status.success(), "{}", text(&out));
    let backup = dir.path().join("log.backup");
    let out = gallery(&["backup", "--out", arg(&backup), "--data-dir", arg(&data)]).await;
    assert!(out.status.success(), "{}", text(&out));

    // `gallery rebuild` refuses a data dir a running gallery uses, and leaves its model be.
    let model_before = std::fs::metadata(data.join("readmodel"))
        .unwrap()
        .modified()
        .unwrap();
    let out = gallery(&["rebuild", "--data-dir", arg(&data)]).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is in use by a running gallery"),
        "{}",
        text(&out)
    );
    let model_after = std::fs::metadata(data.join("readmodel"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(model_before, model_after);

    // The right address with the wrong user is refused as such, at once.
    let address = std::fs::read_to_string(data.join("nats/address")).unwrap();
    let intruder = address.trim().replace("nats://", "nats://intruder:wrong@");
    let started = std::time::Instant::now();
    let out = gallery(&["redrive", "--nats-url", &intruder]).await;
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"refused user "intruder" (authorization violation)"#),
        "{}",
        text(&out)
    );
    assert!(
        !stderr.contains("wrong"),
        "the password is not shown: {stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    // A data dir with no deployment says what to do.
    let elsewhere = dir.path().join("elsewhere");
    let out = gallery(&["sweep", "--dry-run", "--data-dir", arg(&elsewhere)]).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no local deployment on"),
        "{}",
        text(&out)
    );

    // `gallery token` signs with the deployment's keys, says which, and the api takes it.
    let out = gallery(&["token", "--project", "demo", "--data-dir", arg(&data)]).await;
    assert!(out.status.success(), "{}", text(&out));
    let keys = data.join("token-keys.json");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(arg(&keys)),
        "{}",
        text(&out)
    );
    // Without keys it refuses, and makes none.
    let out = gallery(&["token", "--project", "demo", "--data-dir", arg(&elsewhere)]).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no token keys at"),
        "{}",
        text(&out)
    );
    assert!(!elsewhere.join("token-keys.json").exists());
    // --init-keys makes them, with an id of their own.
    let out = gallery(&[
        "token",
        "--project",
        "demo",
        "--data-dir",
        arg(&elsewhere),
        "--init-keys",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let kid = |path: &Path| -> String {
        let keys: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        keys[0]["kid"].as_str().unwrap().to_owned()
    };
    assert_ne!(kid(&keys), kid(&elsewhere.join("token-keys.json")));
    // A scope that is no id says what an id may hold.
    let out = gallery(&["token", "--project", "a.b", "--data-dir", arg(&data)]).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("^[A-Za-z0-9_-]{1,64}$"),
        "{}",
        text(&out)
    );

    assert!(
        up.terminate(Duration::from_secs(15))
            .is_some_and(|s| s.success())
    );
}
