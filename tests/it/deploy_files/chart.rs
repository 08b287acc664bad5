//! The Helm chart: its templates use only values that exist, and its pods fit the image.

use std::collections::BTreeSet;

use super::dockerfile::runtime_stage;
use super::{read, repo, yaml};

const CHART: &str = "deploy/helm/countersign";

fn templates() -> Vec<(String, String)> {
    let dir = repo().join(CHART).join("templates");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn chart_parses_and_its_templates_use_only_values_that_exist() {
    let chart = yaml(&format!("{CHART}/Chart.yaml"));
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["name"], "countersign");
    assert!(chart["version"].is_string() && chart["appVersion"].is_string());
    let values = yaml(&format!("{CHART}/values.yaml"));
    assert!(values.is_object());

    let path = regex::Regex::new(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)").unwrap();
    let include = regex::Regex::new(r#"include "([a-zA-Z.]+)""#).unwrap();
    let all = templates();
    let names: BTreeSet<String> = all.iter().map(|(n, _)| n.clone()).collect();
    for required in [
        "_helpers.tpl",
        "NOTES.txt",
        "deployment.yaml",
        "service.yaml",
        "hpa.yaml",
        "pdb.yaml",
        "servicemonitor.yaml",
        "configmap.yaml",
    ] {
        assert!(names.contains(required), "templates/{required}");
    }
    for (name, text) in &all {
        assert_eq!(
            text.matches("{{").count(),
            text.matches("}}").count(),
            "templates/{name}: unbalanced {{{{ }}}}"
        );
        for found in path.captures_iter(text) {
            let mut node = &values;
            for segment in found[1].trim_start_matches('.').split('.') {
                node = node.get(segment).unwrap_or_else(|| {
                    panic!(
                        "templates/{name} uses .Values{} but values.yaml has no such key",
                        &found[1]
                    )
                });
            }
        }
        // Every `include "x"` names a template that is defined.
        for used in include.captures_iter(text) {
            let defined = all
                .iter()
                .any(|(_, t)| t.contains(&format!("define \"{}\"", &used[1])));
            assert!(defined, "templates/{name} includes undefined {}", &used[1]);
        }
    }
}

#[test]
fn chart_probes_ports_user_and_paths_fit_the_image() {
    let values = yaml(&format!("{CHART}/values.yaml"));
    let deployment = read(&format!("{CHART}/templates/deployment.yaml"));
    let helpers = read(&format!("{CHART}/templates/_helpers.tpl"));
    let stage = runtime_stage();

    // The probe paths: readiness on /readyz, liveness and startup on /healthz.
    let probe_path = |probe: &str| {
        let at = deployment
            .find(&format!("{probe}:"))
            .unwrap_or_else(|| panic!("{probe} in deployment.yaml"));
        let rest = &deployment[at..];
        let path = rest.find("path: ").expect("an httpGet path");
        rest[path + 6..]
            .split([',', '}', '\n'])
            .next()
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(probe_path("readinessProbe"), "/readyz");
    assert_eq!(probe_path("livenessProbe"), "/healthz");
    assert_eq!(probe_path("startupProbe"), "/healthz");

    // One port: what countersign listens on is what the container declares and the image exposes.
    assert!(helpers.contains("value: \"0.0.0.0:{{ .Values.containerPort }}\""));
    assert!(deployment.contains("containerPort: {{ $root.Values.containerPort }}"));
    assert_eq!(values["containerPort"], stage.listen_port());

    // The pods run as the image's user, non-root, read-only, without capabilities.
    let (uid, gid) = stage.uid_gid();
    let pod = &values["podSecurityContext"];
    assert_eq!(pod["runAsUser"], uid);
    assert_eq!(pod["runAsGroup"], gid);
    assert_eq!(pod["fsGroup"], gid);
    assert_eq!(pod["runAsNonRoot"], true);
    let container = &values["securityContext"];
    assert_eq!(container["readOnlyRootFilesystem"], true);
    assert_eq!(container["allowPrivilegeEscalation"], false);
    assert_eq!(
        container["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );

    // With a read-only root, the only writable places are volumes: the data directory of the
    // default database and /tmp.
    assert!(deployment.contains(&format!("mountPath: {}/data}}", stage.workdir)));
    assert!(deployment.contains("mountPath: /tmp}"));
    // The init container falls back on the image's own manifests and policies.
    for dir in ["manifests", "manifests/agents", "policies"] {
        assert!(
            helpers.contains(&format!("copy_flat {}/{dir} ", stage.workdir)),
            "_helpers.tpl copies the image's {dir}"
        );
    }
    // The roles the Deployments run are the ones `serve --role` knows.
    assert!(deployment.contains(r#"args: ["serve", "--role", "{{ $component }}"]"#));
    for role in ["all", "api", "worker"] {
        assert!(countersign::config::ServeRole::parse(role).is_some());
        assert!(helpers.contains(role));
    }
    // Secrets are referenced, never templated from values.
    assert!(!deployment.contains("kind: Secret"));
    assert!(values["secrets"]["existingSecret"] == "");
}
