//! docker-compose.yml: health checks, dependencies, mounts, and the load balancer in front.

use serde_json::Value;

use super::dockerfile::runtime_stage;
use super::{read, repo, yaml};

fn compose() -> Value {
    yaml("deploy/docker-compose.yml")
}

#[test]
fn compose_has_its_health_checks_dependencies_and_mounts() {
    let compose = compose();
    let services = compose["services"].as_object().expect("services");
    for name in ["countersign", "postgres", "redis", "lb"] {
        assert!(services.contains_key(name), "service {name}");
    }
    // Every dependency waits for a health check that exists.
    for (name, service) in services {
        if let Some(deps) = service.get("depends_on") {
            let deps = deps
                .as_object()
                .unwrap_or_else(|| panic!("{name}: depends_on in long form with a condition"));
            for (dep, how) in deps {
                assert_eq!(
                    how["condition"], "service_healthy",
                    "{name} waits for {dep} to be healthy"
                );
                assert!(
                    services[dep].get("healthcheck").is_some(),
                    "{name} waits for {dep}'s health, which has no healthcheck"
                );
            }
        }
    }
    let countersign = &services["countersign"];
    assert_eq!(
        services["lb"]["depends_on"]["countersign"]["condition"],
        "service_healthy"
    );
    let stage = runtime_stage();
    let port = stage.listen_port();

    // Built from this repository's Dockerfile, with its ignore file beside it.
    assert_eq!(countersign["build"]["context"], "..");
    assert_eq!(countersign["build"]["dockerfile"], "deploy/Dockerfile");
    assert!(repo().join("deploy/Dockerfile.dockerignore").is_file());
    assert!(
        countersign["deploy"]["replicas"]
            .as_str()
            .is_some_and(|r| r.contains(":-2}"))
            || countersign["deploy"]["replicas"] == 2,
        "two replicas by default"
    );
    let environment = &countersign["environment"];
    assert!(
        environment["COUNTERSIGN_DATABASE_URL"]
            .as_str()
            .is_some_and(|u| u.starts_with("postgres://") && u.contains("@postgres:")),
        "countersign uses the compose PostgreSQL"
    );
    assert!(
        environment["COUNTERSIGN_REDIS_URL"]
            .as_str()
            .is_some_and(|u| u.starts_with("redis://redis:")),
        "countersign uses the compose Redis"
    );
    assert_eq!(environment["COUNTERSIGN_LISTEN"], format!("0.0.0.0:{port}"));
    let check: Vec<&str> = countersign["healthcheck"]["test"]
        .as_array()
        .expect("healthcheck test in exec form")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(&check[..3], &["CMD", "countersign", "healthcheck"]);
    assert!(
        check
            .iter()
            .any(|a| a.ends_with(&format!(":{port}/readyz"))),
        "{check:?}"
    );

    // Manifests and policies from the repository, read-only, where the image keeps its own.
    let volumes: Vec<&str> = countersign["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for dir in ["manifests", "policies"] {
        let expected = format!("../{dir}:{}/{dir}:ro", stage.workdir);
        assert!(
            volumes.contains(&expected.as_str()),
            "{expected} in {volumes:?}"
        );
        assert!(
            stage
                .copies
                .iter()
                .any(|(from, to)| from.len() == 1 && from[0] == dir && to == dir),
            "the image has its own {dir}/ under WORKDIR"
        );
    }
    // Named volumes are declared.
    let declared = compose["volumes"].as_object().expect("top-level volumes");
    for (name, service) in services {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            if source.starts_with('.') || source.starts_with('/') {
                assert!(
                    repo().join("deploy").join(source).exists(),
                    "{name}: {source} does not exist"
                );
            } else {
                assert!(
                    declared.contains_key(source),
                    "{name}: volume {source} undeclared"
                );
            }
        }
    }
    assert!(declared.contains_key("pgdata"));

    // The load balancer forwards to the replicas' port.
    let nginx = read("deploy/nginx.conf");
    assert!(
        nginx.contains(&format!("server countersign:{port}")),
        "nginx.conf's upstream is countersign:{port}"
    );
    let lb_port = services["lb"]["ports"][0].as_str().unwrap();
    let listen = lb_port.rsplit(':').next().unwrap();
    assert!(
        nginx.contains(&format!("listen {listen};")),
        "lb publishes nginx's port"
    );

    // Every ${VAR} the file interpolates is explained in the env example.
    let example = read("deploy/.env.example");
    let interpolated = regex::Regex::new(r"\$\{([A-Z0-9_]+)").unwrap();
    for var in interpolated.captures_iter(&read("deploy/docker-compose.yml")) {
        assert!(
            example.contains(&format!("\n{}=", &var[1])),
            "{} is used by docker-compose.yml but not listed in .env.example",
            &var[1]
        );
    }
}
