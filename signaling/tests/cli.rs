//! The `aula` binary as an operator meets it: exit codes and one-line errors.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use aula_signaling::token::{self, ApiKeys};
use common::ServeProcess;

fn aula() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aula"))
}

fn temp_config(name: &str, text: &str) -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("aula-cli-test-{}-{name}.toml", std::process::id()));
    let mut file = std::fs::File::create(&path).expect("create temp config");
    file.write_all(text.as_bytes()).expect("write temp config");
    path
}

#[test]
fn token_with_dev_keys_prints_a_verifiable_jwt_and_warns() {
    let out = aula()
        .args([
            "token",
            "--room",
            "math",
            "--identity",
            "ana",
            "--role",
            "student",
            "--name",
            "Ana",
        ])
        .env_remove("AULA_CONFIG")
        .output()
        .expect("run aula");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    let stderr = String::from_utf8(out.stderr).expect("UTF-8");
    let claims = token::verify(&ApiKeys::dev(), stdout.trim()).expect("valid dev token");
    assert_eq!(claims.room, "math");
    assert_eq!(claims.name, "Ana");
    assert!(stderr.contains("dev keys"), "{stderr}");
}

#[test]
fn token_with_configured_keys_uses_them() {
    let secret = "k".repeat(40);
    let path = temp_config(
        "keys",
        &format!("[keys]\napi_key = \"school\"\napi_secret = \"{secret}\"\n"),
    );
    let out = aula()
        .args([
            "token",
            "--room",
            "r",
            "--identity",
            "t",
            "--role",
            "teacher",
            "--ttl-secs",
            "60",
        ])
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run aula");
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "{out:?}");
    let keys = ApiKeys {
        key: "school".into(),
        secret,
    };
    let claims = token::verify(&keys, String::from_utf8_lossy(&out.stdout).trim()).expect("valid");
    assert!(claims.can_publish);
    assert!(claims.exp <= claims.nbf + 60);
    assert!(
        out.stderr.is_empty(),
        "no dev warning: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_config_is_one_line_and_exit_code_2() {
    let path = temp_config("bad", "[http]\nbind = \"nope\"\n");
    for sub in [
        &["serve"][..],
        &[
            "token",
            "--room",
            "r",
            "--identity",
            "i",
            "--role",
            "teacher",
        ],
    ] {
        let out = aula()
            .args(sub)
            .arg("--config")
            .arg(&path)
            .output()
            .expect("run aula");
        assert_eq!(out.status.code(), Some(2), "{sub:?}: {out:?}");
        let stderr = String::from_utf8(out.stderr).expect("UTF-8");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("`http.bind`"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let _ = std::fs::remove_file(&path);

    let out = aula()
        .args(["serve", "--config", "/nonexistent/aula.toml"])
        .output()
        .expect("run aula");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn serve_starts_warns_about_dev_keys_and_stops_on_sigterm() {
    // Once it says it listens, stop it the way systemd does.
    let mut serve = ServeProcess::start("serve", &[]);
    let child = &mut serve.child;
    let pid = child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("aula serve did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    serve.read_log_after_exit();
    let log = &serve.log;
    assert!(exit.success(), "{exit:?}\n{log}");
    assert!(log.contains("dev keys"), "{log}");
    assert!(
        log.contains(&ApiKeys::dev().secret),
        "prints the dev secret: {log}"
    );
    assert!(log.contains("stopping"), "graceful: {log}");
}
