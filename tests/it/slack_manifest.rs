//! `countersign slack manifest`: the app manifest a user pastes into Slack, with their URL.

use serde_json::Value;

fn countersign(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(args)
        .env("COUNTERSIGN_MANIFESTS", crate::common::manifests_dir())
        .env("RUST_LOG", "warn")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run countersign")
}

#[test]
fn the_app_manifest_carries_the_public_url_and_only_the_scopes_used() {
    let output = countersign(&[
        "slack",
        "manifest",
        "--public-url",
        "https://cs.acme.example/",
    ]);
    assert!(output.status.success(), "{output:?}");
    let manifest: Value =
        serde_saphyr::from_str(&String::from_utf8(output.stdout).unwrap()).unwrap();
    assert_eq!(
        manifest["features"]["slash_commands"][0]["url"],
        "https://cs.acme.example/slack/commands"
    );
    assert_eq!(
        manifest["settings"]["interactivity"]["request_url"],
        "https://cs.acme.example/slack/interactions"
    );
    let scopes: Vec<&str> = manifest["oauth_config"]["scopes"]["bot"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(
        scopes,
        [
            "chat:write",
            "commands",
            "im:write",
            "users:read",
            "users:read.email",
            "usergroups:read",
            "files:write",
            // Read only by `countersign doctor` (role channels exist and have the bot).
            "channels:read",
            "groups:read"
        ]
    );

    let socket = countersign(&["slack", "manifest", "--socket-mode"]);
    assert!(socket.status.success(), "{socket:?}");
    let socket: Value = serde_saphyr::from_str(&String::from_utf8(socket.stdout).unwrap()).unwrap();
    assert_eq!(socket["settings"]["socket_mode_enabled"], true);
    assert_eq!(socket["settings"]["interactivity"]["is_enabled"], true);
    assert!(
        socket["settings"]["interactivity"]
            .get("request_url")
            .is_none()
    );
    assert_eq!(
        socket["features"]["slash_commands"][0]["command"],
        "/countersign"
    );
    assert!(socket["features"]["slash_commands"][0].get("url").is_none());
    assert_eq!(
        socket["oauth_config"], manifest["oauth_config"],
        "the same scopes"
    );

    let refused = countersign(&[
        "slack",
        "manifest",
        "--public-url",
        "http://cs.acme.example/",
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("only calls https://"));
}
