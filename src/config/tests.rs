use super::*;
use std::collections::HashMap;

fn load(file: Option<&str>, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("countersign.toml");
    if let Some(text) = file {
        std::fs::write(&path, text).unwrap();
    }
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load_from(file.map(|_| path.as_path()), |k| env.get(k).cloned())
}

#[test]
fn defaults_apply_without_file_or_env() {
    let config = load(None, &[]).unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(
        config.database_url,
        DatabaseUrl::Sqlite("data/countersign.db".into())
    );
    assert_eq!(config.public_url.as_str(), "http://127.0.0.1:8080/");
}

#[test]
fn env_overrides_file_overrides_defaults() {
    let config = load(
        Some("listen = \"0.0.0.0:9000\"\nmanifests = \"m\"\n"),
        &[("COUNTERSIGN_LISTEN", "127.0.0.1:9001")],
    )
    .unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:9001");
    assert_eq!(config.manifests, PathBuf::from("m"));
}

#[test]
fn errors_name_the_key_and_its_source() {
    let err = load(None, &[("COUNTERSIGN_LISTEN", "localhost")])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("listen (from env COUNTERSIGN_LISTEN)"),
        "{err}"
    );
    let err = load(None, &[("COUNTERSIGN_LISTEN", "fd00::1:8080")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs brackets, e.g. [::1]:8080"), "{err}");
    let err = load(None, &[("COUNTERSIGN_PUBLIC_URL", "http://fd00::1:8080/")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs brackets"), "{err}");
    let err = load(Some("database_url = \"mysql://x\"\n"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("database_url (from ") && err.contains("countersign.toml"),
        "{err}"
    );
    let err = load(Some("listen = \"x\"\nlisten_port = 1\n"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 2") || err.contains("listen_port"),
        "{err}"
    );
    let err = load(Some("listne = \"x\"\n"), &[]).unwrap_err().to_string();
    assert!(err.contains("unknown key `listne`"), "{err}");
}

#[test]
fn a_slack_token_needs_its_signing_secret() {
    let err = load(None, &[("COUNTERSIGN_SLACK_BOT_TOKEN", "xoxb-1")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("slack_bot_token") && err.contains("slack_signing_secret"),
        "{err}"
    );
    assert!(!err.contains("xoxb-1"), "{err}");
}

#[test]
fn socket_mode_takes_an_app_token_beside_the_bot_token_and_no_signing_secret() {
    let config = load(
        None,
        &[
            ("COUNTERSIGN_SLACK_BOT_TOKEN", "xoxb-1"),
            ("COUNTERSIGN_SLACK_APP_TOKEN", "xapp-1-A0-very-secret"),
        ],
    )
    .unwrap();
    assert!(config.slack_app_token.is_some() && config.slack_signing_secret.is_none());
    assert!(config.describe().contains("slack_app_token=(set)"));
    assert!(!format!("{config:?}").contains("very-secret"));

    let err = load(None, &[("COUNTERSIGN_SLACK_APP_TOKEN", "xapp-1")])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("slack_app_token (from env COUNTERSIGN_SLACK_APP_TOKEN)")
            && err.contains("needs slack_bot_token"),
        "{err}"
    );
    let err = load(
        None,
        &[
            ("COUNTERSIGN_SLACK_BOT_TOKEN", "xoxb-1"),
            ("COUNTERSIGN_SLACK_APP_TOKEN", "xoxb-2-pasted-twice"),
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("xapp-") && !err.contains("pasted-twice"),
        "{err}"
    );
}

#[test]
fn secrets_never_print() {
    let config = load(
        None,
        &[
            (
                "COUNTERSIGN_DATABASE_URL",
                "postgres://cs:hunter2@db/cs?sslmode=require&password=hunter3&sslpassword=hunter4",
            ),
            ("COUNTERSIGN_SLACK_BOT_TOKEN", "xoxb-very-secret"),
            ("COUNTERSIGN_SLACK_SIGNING_SECRET", "signing-very-secret"),
            ("COUNTERSIGN_ADMIN_TOKEN", "admin-token-that-is-long-enough"),
            (
                "COUNTERSIGN_SECRET_KEY",
                "secret-key-that-is-long-enough-for-hmac",
            ),
        ],
    )
    .unwrap();
    let shown = format!("{config:?} {} {}", config.describe(), config.database_url);
    for secret in [
        "hunter2",
        "hunter3",
        "hunter4",
        "xoxb-very-secret",
        "signing-very-secret",
        "admin-token-that-is-long-enough",
        "secret-key-that-is-long-enough-for-hmac",
    ] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
    assert!(
        config
            .describe()
            .contains("postgres://cs:***@db/cs?sslmode=require&password=***"),
        "{}",
        config.describe()
    );
}

#[test]
fn a_private_ca_for_a_tls_redis_is_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, include_str!("../../tests/fixtures/redis-tls/ca.pem")).unwrap();
    let ca_path = ca.to_str().unwrap();
    let config = load(
        None,
        &[
            ("COUNTERSIGN_REDIS_URL", "rediss://localhost:6380/"),
            ("COUNTERSIGN_REDIS_CA_FILE", ca_path),
        ],
    )
    .unwrap();
    assert_eq!(config.redis_ca.unwrap().path, ca);

    let refused = |env: &[(&str, &str)]| match load(None, env).unwrap_err() {
        ConfigError::Invalid { key, message, .. } => (key, message),
        other => panic!("{other:?}"),
    };
    let (key, message) = refused(&[
        ("COUNTERSIGN_REDIS_URL", "redis://localhost:6379/"),
        ("COUNTERSIGN_REDIS_CA_FILE", ca_path),
    ]);
    assert_eq!(key, "redis_ca_file");
    assert!(message.contains("rediss://"), "{message}");
    let not_pem = dir.path().join("notes.txt");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let (key, message) = refused(&[
        ("COUNTERSIGN_REDIS_URL", "rediss://localhost:6380/"),
        ("COUNTERSIGN_REDIS_CA_FILE", not_pem.to_str().unwrap()),
    ]);
    assert_eq!(key, "redis_ca_file");
    assert!(message.contains("no certificate"), "{message}");
    let (_, message) = refused(&[
        ("COUNTERSIGN_REDIS_URL", "rediss://localhost:6380/"),
        ("COUNTERSIGN_REDIS_CA_FILE", "/nonexistent/ca.pem"),
    ]);
    assert!(message.contains("cannot read"), "{message}");
}

#[test]
fn the_slack_tier_scale_is_one_unless_set_within_bounds() {
    assert_eq!(load(None, &[]).unwrap().slack_tier_scale, 1);
    let config = load(None, &[("COUNTERSIGN_SLACK_TIER_SCALE", "20")]).unwrap();
    assert_eq!(config.slack_tier_scale, 20);
    for bad in ["0", "101", "fast"] {
        let err = load(None, &[("COUNTERSIGN_SLACK_TIER_SCALE", bad)])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("slack_tier_scale (from env"), "{err}");
    }
}

#[test]
fn connection_limits_have_defaults_and_are_bounded() {
    let config = load(None, &[]).unwrap();
    assert_eq!(config.max_connections, 1024);
    assert_eq!(
        config.header_read_timeout,
        std::time::Duration::from_secs(10)
    );
    let config = load(
        Some("max_connections = 64\nheader_read_timeout = \"2s\"\n"),
        &[("COUNTERSIGN_HEADER_READ_TIMEOUT", "500ms")],
    )
    .unwrap();
    assert_eq!(config.max_connections, 64);
    assert_eq!(
        config.header_read_timeout,
        std::time::Duration::from_millis(500)
    );
    let err = load(None, &[("COUNTERSIGN_MAX_CONNECTIONS", "0")])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("max_connections (from env COUNTERSIGN_MAX_CONNECTIONS)"),
        "{err}"
    );
    let err = load(Some("header_read_timeout = \"1h\"\n"), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("header_read_timeout (from "), "{err}");
}
