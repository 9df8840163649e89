//! docker-compose.yml can't run on the build machine (no Docker engine), so this test keeps it
//! honest: every flag and variable it passes to `gallery` exists in the binary's configuration
//! and parses, and services, ports and health checks line up.

use std::collections::{BTreeMap, BTreeSet};

use clap::CommandFactory;
use gallery::cli::Cli;
use serde_yaml::Value;

fn compose() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml"))
        .unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn env_of(service: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(map) = service["environment"].as_mapping() {
        for (k, v) in map {
            let key = k.as_str().unwrap();
            if key == "<<" {
                for (k2, v2) in v.as_mapping().unwrap() {
                    out.insert(k2.as_str().unwrap().to_owned(), scalar(v2));
                }
            } else {
                out.insert(key.to_owned(), scalar(v));
            }
        }
    }
    out
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("unexpected env value {other:?}"),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().map(scalar).collect())
        .unwrap_or_default()
}

/// Turns a service's command and environment into the argv the binary would see (variables
/// become their flags, so parsing checks names and values).
fn argv(service: &Value) -> Vec<String> {
    let command = strings(&service["command"]);
    let sub = Cli::command()
        .find_subcommand(&command[0])
        .unwrap_or_else(|| panic!("no subcommand {}", command[0]))
        .clone();
    let mut args = vec!["gallery".to_owned()];
    args.extend(command);
    // The subcommand's own arguments and the global ones (`--log-format`).
    let root = Cli::command();
    let known: BTreeMap<String, clap::Arg> = sub
        .get_arguments()
        .chain(root.get_arguments().filter(|a| a.is_global_set()))
        .filter_map(|a| Some((a.get_env()?.to_string_lossy().into_owned(), a.clone())))
        .collect();
    for (name, value) in env_of(service) {
        if name == "RUST_LOG" {
            continue;
        }
        let arg = known
            .get(&name)
            .unwrap_or_else(|| panic!("{name} is not a variable of `gallery {}`", sub.get_name()));
        let long = format!("--{}", arg.get_long().unwrap());
        if matches!(arg.get_action(), clap::ArgAction::SetTrue) {
            if value == "true" {
                args.push(long);
            }
        } else {
            args.push(long);
            args.push(value);
        }
    }
    args
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .unwrap()
        .trim_matches('/')
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn every_gallery_flag_and_variable_exists_and_parses() {
    let doc = compose();
    let services = doc["services"].as_mapping().unwrap();
    let mut gallery_services = 0;
    for (name, service) in services {
        if service.get("build").is_none() {
            continue;
        }
        gallery_services += 1;
        let args = argv(service);
        Cli::command()
            .try_get_matches_from(&args)
            .unwrap_or_else(|e| panic!("service {name:?}: {args:?}: {e}"));
    }
    assert_eq!(gallery_services, 2, "api and processor");
}

#[test]
fn services_ports_and_health_checks_line_up() {
    let doc = compose();
    let s = &doc["services"];
    let names: BTreeSet<String> = s
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    for needed in ["nats", "minio", "minio-init", "api", "processor"] {
        assert!(names.contains(needed), "{needed}");
    }
    // Pinned images, never `latest`.
    for (name, service) in s.as_mapping().unwrap() {
        if let Some(image) = service["image"].as_str() {
            assert!(
                image.contains(':') && !image.ends_with(":latest"),
                "{name:?} image {image} is not pinned"
            );
        }
    }
    let api = env_of(&s["api"]);
    let processor = env_of(&s["processor"]);
    for env in [&api, &processor] {
        assert_eq!(env["GALLERY_NATS_URL"], "nats://nats:4222");
        assert_eq!(env["AWS_ENDPOINT_URL"], "http://minio:9000");
        assert_eq!(env["AWS_ALLOW_HTTP"], "true");
        assert_eq!(env["GALLERY_S3_BUCKET"], "gallery");
    }
    // The init job creates the services' bucket, and their own user (not MinIO's root).
    let init_env = env_of(&s["minio-init"]);
    assert_eq!(init_env["BUCKET"], api["GALLERY_S3_BUCKET"]);
    let init = strings(&s["minio-init"]["entrypoint"]).join(" ");
    assert!(init.contains("local/$$BUCKET"), "{init}");
    assert!(init.contains("mc admin user add") && init.contains("policy attach"));
    assert!(
        init.contains("arn:aws:s3:::$$BUCKET/*"),
        "the policy names the bucket"
    );
    let minio = env_of(&s["minio"]);
    assert_eq!(init_env["APP_KEY"], api["AWS_ACCESS_KEY_ID"]);
    assert_eq!(init_env["APP_SECRET"], api["AWS_SECRET_ACCESS_KEY"]);
    assert_ne!(minio["MINIO_ROOT_USER"], api["AWS_ACCESS_KEY_ID"]);
    assert_ne!(minio["MINIO_ROOT_PASSWORD"], api["AWS_SECRET_ACCESS_KEY"]);
    assert!(
        !minio["MINIO_API_CORS_ALLOW_ORIGIN"].is_empty(),
        "browsers upload to MinIO directly"
    );
    // Browsers reach MinIO on a published port.
    let minio_ports = strings(&s["minio"]["ports"]);
    let public = port_of(&api["GALLERY_S3_PUBLIC_ENDPOINT"]);
    assert!(
        minio_ports
            .iter()
            .any(|p| p == &format!("127.0.0.1:{public}:9000")),
        "{minio_ports:?}"
    );
    // The api listens where its port mapping and health check point.
    let listen = port_of(&api["GALLERY_LISTEN"]);
    assert!(
        strings(&s["api"]["ports"])
            .iter()
            .all(|p| p.ends_with(&format!(":{listen}")))
    );
    assert!(
        strings(&s["api"]["healthcheck"]["test"])
            .join(" ")
            .contains(&format!(":{listen}/ready"))
    );
    // The processor's health check hits its --health-listen port.
    let cmd = strings(&s["processor"]["command"]);
    let at = cmd.iter().position(|a| a == "--health-listen").unwrap();
    let health = port_of(&cmd[at + 1]);
    assert!(
        strings(&s["processor"]["healthcheck"]["test"])
            .join(" ")
            .contains(&format!(":{health}/ready"))
    );
    // Two replicas each; api replicas share the link-signing secret and the token keys.
    assert_eq!(s["api"]["deploy"]["replicas"].as_u64(), Some(2));
    assert_eq!(s["processor"]["deploy"]["replicas"].as_u64(), Some(2));
    assert!(api.contains_key("GALLERY_SECRET") && api.contains_key("GALLERY_TOKEN_KEYS"));
    assert_eq!(api["GALLERY_AUTH"], "on");
    // Each role connects to NATS as its own user.
    assert_eq!(api["GALLERY_NATS_USER"], "api");
    assert_eq!(processor["GALLERY_NATS_USER"], "processor");
    // Every published port is on loopback; NATS is not published at all.
    for (name, service) in s.as_mapping().unwrap() {
        for port in strings(&service["ports"]) {
            assert!(port.starts_with("127.0.0.1:"), "{name:?} publishes {port}");
        }
    }
    assert!(s["nats"]["ports"].is_null());
    // NATS gets the shipped config (single.conf includes auth.conf), JetStream on a volume.
    let volumes = strings(&s["nats"]["volumes"]);
    assert!(
        volumes
            .iter()
            .any(|v| v.starts_with("./nats/conf:/etc/nats"))
    );
    assert!(
        std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/nats/conf/single.conf"
        ))
        .is_file()
    );
}

#[test]
fn the_image_runs_as_a_non_root_user() {
    let dockerfile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let stages = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert!(stages >= 2, "multi-stage");
    let user = dockerfile
        .lines()
        .rev()
        .find(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert!(!user.contains("root") && !user.ends_with(" 0"), "{user}");
}

#[test]
fn the_cluster_variant_routes_three_nodes_and_points_gallery_at_all_of_them() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docker-compose.cluster.yml"
    ))
    .unwrap();
    let mut doc: Value = serde_yaml::from_str(&text).unwrap();
    doc.apply_merge().unwrap();
    let s = &doc["services"];
    let nodes = ["nats", "nats-2", "nats-3"];
    let routes: BTreeSet<String> = nodes
        .iter()
        .map(|n| {
            format!(
                "nats://route:${{NATS_ROUTE_PASSWORD:?run ./scripts/compose-env.sh first}}@{n}:6222"
            )
        })
        .collect();
    let mut names = BTreeSet::new();
    for node in nodes {
        let service = &s[node];
        assert!(
            strings(&service["command"])
                .join(" ")
                .contains("cluster.conf"),
            "{node} runs the cluster config"
        );
        let env = env_of(service);
        names.insert(env["NATS_SERVER_NAME"].clone());
        let node_routes: BTreeSet<String> = ["NATS_ROUTE_1", "NATS_ROUTE_2", "NATS_ROUTE_3"]
            .iter()
            .map(|k| env[*k].clone())
            .collect();
        assert_eq!(node_routes, routes, "{node} routes to every node");
        let mounted = strings(&service["volumes"]).join(" ");
        assert!(mounted.contains("./nats/conf:/etc/nats"));
    }
    assert_eq!(names.len(), 3, "distinct server names");
    for gallery in ["api", "processor"] {
        let url = env_of(&s[gallery])["GALLERY_NATS_URL"].clone();
        let hosts: BTreeSet<String> = url
            .split(',')
            .map(|u| {
                u.trim_start_matches("nats://")
                    .trim_end_matches(":4222")
                    .to_owned()
            })
            .collect();
        assert_eq!(hosts, nodes.iter().map(|n| (*n).to_owned()).collect());
        assert_eq!(gallery_nats::server_addrs(&url).unwrap().len(), 3);
        Cli::command()
            .try_get_matches_from(["gallery", gallery, "--nats-url", &url])
            .unwrap();
    }
}

/// Every secret the compose files read from .env, and nothing else: `scripts/compose-env.sh`
/// writes each one, and no secret is written into the compose files themselves.
#[test]
fn the_secrets_come_from_the_generated_env_file() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut wanted = BTreeSet::new();
    for file in ["docker-compose.yml", "docker-compose.cluster.yml"] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        for part in text.split("${").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                part[name.len()..].starts_with(":?"),
                "{file}: ${{{name}}} must fail loudly when .env is missing"
            );
            wanted.insert(name);
        }
        for literal in ["gallery-minio-secret", "change-me"] {
            assert!(
                !text.contains(literal),
                "{file} commits a secret: {literal}"
            );
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join(".env");
    let status = std::process::Command::new("bash")
        .arg(format!("{root}/scripts/compose-env.sh"))
        .arg(&env_file)
        .status()
        .unwrap();
    assert!(status.success());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&env_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, ".env is readable by others: {mode:o}");
    let text = std::fs::read_to_string(&env_file).unwrap();
    let written: BTreeMap<String, String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_owned(), v.trim_matches('\'').to_owned())
        })
        .collect();
    for name in &wanted {
        let value = written
            .get(name)
            .unwrap_or_else(|| panic!("compose-env.sh does not write {name}"));
        assert!(!value.is_empty());
    }
    // The generated secrets pass the service's own checks.
    gallery_api::auth::TokenKeys::from_json(&written["GALLERY_TOKEN_KEYS"]).unwrap();
    assert!(written["GALLERY_SECRET"].len() >= 32);
    // A second run keeps them.
    std::process::Command::new("bash")
        .arg(format!("{root}/scripts/compose-env.sh"))
        .arg(&env_file)
        .status()
        .unwrap();
    assert_eq!(std::fs::read_to_string(&env_file).unwrap(), text);
}
