//! The `aegis` command as a person runs it: tokens, and clear refusals of bad configuration.

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn aegis() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_aegis"));
    for (name, _) in std::env::vars() {
        if name.starts_with("AEGIS_") {
            command.env_remove(name);
        }
    }
    command
}

/// A data folder holding a development secret, as `aegis up` leaves it.
fn data_dir_with_secret() -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(
        data.path().join("dev-user-token.secret"),
        "0123456789abcdef0123456789abcdef",
    )
    .unwrap();
    data
}

#[test]
fn token_mints_a_jwt_with_the_given_roles() {
    let data = data_dir_with_secret();

    let output = aegis()
        .args([
            "token", "--user", "alice", "--name", "Alice", "--role", "analyst",
        ])
        .args(["--role", "approver", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap();
    let parts: Vec<&str> = token.trim().split('.').collect();
    assert_eq!(parts.len(), 3);
    use base64::Engine as _;
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1])
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&claims).unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["roles"], serde_json::json!(["analyst", "approver"]));
}

#[test]
fn token_refuses_to_invent_a_secret_no_server_knows() {
    let empty = tempfile::tempdir().unwrap();

    let output = aegis()
        .args([
            "token",
            "--user",
            "alice",
            "--role",
            "analyst",
            "--data-dir",
        ])
        .arg(empty.path())
        .output()
        .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("no development secret"), "{stderr}");
    assert!(!empty.path().join("dev-user-token.secret").exists());
}

#[test]
fn an_unknown_role_is_refused_in_one_line() {
    let data = data_dir_with_secret();

    let output = aegis()
        .args([
            "token",
            "--user",
            "alice",
            "--role",
            "superuser",
            "--data-dir",
        ])
        .arg(data.path())
        .output()
        .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("unknown role \"superuser\""), "{stderr}");
}

#[test]
fn serve_refuses_to_start_without_configured_keys() {
    let data = tempfile::tempdir().unwrap();

    let output = aegis()
        .args(["serve", "cases", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .arg("--database-url")
        .arg(format!("sqlite://{}/aegis.db", data.path().display()))
        .output()
        .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("AEGIS_AUTH_JWKS_URL"), "{stderr}");
    assert!(
        !data.path().join("dev-user-token.secret").exists(),
        "no development key is made"
    );
}

#[test]
fn an_unsupported_database_url_is_refused_before_serving() {
    let data = tempfile::tempdir().unwrap();

    let output = aegis()
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            "mysql://root@127.0.0.1/aegis",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("unsupported database URL scheme"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "no banner is printed");
}
