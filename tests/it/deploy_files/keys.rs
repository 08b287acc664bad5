//! Configuration keys named in deploy/: real ones, every one in the env example, secrets wired
//! from the chart's Secret.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::{is_secret, read, repo};

fn deploy_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            deploy_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn every_countersign_variable_in_deploy_is_a_real_key_and_secrets_are_wired() {
    let known: BTreeSet<String> = countersign::config::KEYS
        .iter()
        .map(|k| format!("COUNTERSIGN_{}", k.to_ascii_uppercase()))
        // The one variable that is a command-line option rather than a key.
        .chain(["COUNTERSIGN_CONFIG".to_owned()])
        .collect();
    let pattern = regex::Regex::new(r"COUNTERSIGN_[A-Z0-9_]*[A-Z0-9]").unwrap();
    let mut files = Vec::new();
    deploy_files(&repo().join("deploy"), &mut files);
    let mut unknown: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for found in pattern.find_iter(&text) {
            if !known.contains(found.as_str()) {
                unknown
                    .entry(found.as_str().to_owned())
                    .or_default()
                    .insert(file.strip_prefix(repo()).unwrap().display().to_string());
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "deploy/ names variables countersign does not read (config::KEYS): {unknown:?}"
    );

    // Every key is in the env example, so operators see every knob.
    let example = read("deploy/.env.example");
    let helpers = read("deploy/helm/countersign/templates/_helpers.tpl");
    for key in countersign::config::KEYS {
        let var = format!("COUNTERSIGN_{}", key.to_ascii_uppercase());
        assert!(
            example.contains(&var),
            "deploy/.env.example does not mention {var}"
        );
        // Secrets reach the chart's pods from the Secret, never from values.
        if is_secret(key) {
            assert!(
                helpers.contains(&format!("\"{var}\"")),
                "the chart's secretEnv (templates/_helpers.tpl) does not wire {var}"
            );
            let values = read("deploy/helm/countersign/values.yaml");
            assert!(
                values.contains(&var),
                "values.yaml's secrets section does not document {var}"
            );
        }
    }
}
