//! The server configs shipped in nats/conf are valid for the nats-server we run.

use std::process::Command;

#[test]
fn shipped_configs_pass_the_servers_own_check() {
    let server =
        gallery_nats::find_nats_server().expect("nats-server (run scripts/ensure-nats-server.sh)");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let store = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "conf") {
            continue;
        }
        let out = Command::new(&server)
            .arg("-t")
            .arg("-c")
            .arg(&path)
            .env("NATS_SERVER_NAME", "n1")
            .env("NATS_STORE_DIR", store.path())
            .env("NATS_ROUTE_1", "nats://n1:6222")
            .env("NATS_ROUTE_2", "nats://n2:6222")
            .env("NATS_ROUTE_3", "nats://n3:6222")
            .env("NATS_ROUTE_PASSWORD", "route-password")
            .env("NATS_API_PASSWORD", "api-password")
            .env("NATS_PROCESSOR_PASSWORD", "processor-password")
            .env("NATS_ADMIN_PASSWORD", "admin-password")
            .env("NATS_SYS_PASSWORD", "sys-password")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("is valid"),
            "{}: {text}",
            path.display()
        );
        checked += 1;
    }
    // single.conf, cluster.conf, and auth.conf (which both include) on its own.
    assert_eq!(checked, 3);
}
