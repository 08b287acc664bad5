//! deploy/ checked without a container engine or Helm: the Dockerfile's runtime stage is staged
//! on disk from the Dockerfile itself and run (its CMD, then its HEALTHCHECK until it passes);
//! the compose file, the chart and the env example are parsed and held to each other, to the
//! Dockerfile and to the configuration keys countersign really has. (`deploy/lint` runs the real
//! linters and Helm's renderer; it downloads them, so CI does not.)

mod chart;
mod compose;
mod dockerfile;
mod image;
mod keys;

use std::path::PathBuf;

use serde_json::Value;

pub(super) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(super) fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub(super) fn yaml(path: &str) -> Value {
    serde_saphyr::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

/// Settings that hold secrets, by the shape of their name; each must come from the chart's
/// Secret and be listed in the env example.
pub(super) fn is_secret(key: &str) -> bool {
    key.contains("token") || key.contains("secret") || key == "database_url" || key == "redis_url"
}
