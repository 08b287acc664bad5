//! deploy/ checked without a container engine or Helm: the Dockerfile's runtime stage is staged
//! on disk from the Dockerfile itself and run (its CMD, then its HEALTHCHECK until it passes);
//! the compose file, the chart and the env example are parsed and held to each other, to the
//! Dockerfile and to the configuration keys countersign really has. (`deploy/lint` runs the real
//! linters and Helm's renderer; it downloads them, so CI does not.)

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_saphyr::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

/// Settings that hold secrets, by the shape of their name; each must come from the chart's
/// Secret and be listed in the env example.
fn is_secret(key: &str) -> bool {
    key.contains("token") || key.contains("secret") || key == "database_url" || key == "redis_url"
}

// ---------------------------------------------------------------------------------------------
// The Dockerfile, read the way docker reads it (line-based instructions).

struct Instruction {
    keyword: String,
    args: String,
}

/// The instructions of `text`: comments dropped, `\` continuations joined.
fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                pending.push_str(part);
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                let (keyword, args) = pending
                    .split_once(char::is_whitespace)
                    .unwrap_or((&pending, ""));
                out.push(Instruction {
                    keyword: keyword.to_ascii_uppercase(),
                    args: args.trim().to_owned(),
                });
                pending.clear();
            }
        }
    }
    assert!(
        pending.is_empty(),
        "Dockerfile ends inside a continued line"
    );
    out
}

/// Shell-like words: whitespace-separated, double quotes group.
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut started) = (false, false);
    for c in text.chars() {
        match c {
            '"' => (quoted, started) = (!quoted, true),
            c if c.is_whitespace() && !quoted => {
                if started {
                    out.push(std::mem::take(&mut word));
                }
                started = false;
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        out.push(word);
    }
    out
}

fn exec_form(args: &str, what: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("{what} must be in exec (JSON) form: {e}"))
}

/// What the image's last stage (the runtime) is made of.
#[derive(Default, Debug)]
struct Runtime {
    workdir: String,
    env: Vec<(String, String)>,
    /// (sources in the build context, destination)
    copies: Vec<(Vec<String>, String)>,
    /// (stage, source, destination) of `COPY --from=…`
    artifacts: Vec<(String, String, String)>,
    /// Directories a RUN creates, and owners a RUN gives them.
    mkdirs: Vec<String>,
    chowns: Vec<(String, String)>,
    user: String,
    exposed: Vec<u16>,
    healthcheck: Vec<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
}

fn runtime_stage() -> Runtime {
    let all = instructions(&read("deploy/Dockerfile"));
    let last_from = all
        .iter()
        .rposition(|i| i.keyword == "FROM")
        .expect("a FROM");
    assert!(
        all[last_from].args.starts_with("debian:bookworm-slim"),
        "the runtime stage is debian:bookworm-slim: {}",
        all[last_from].args
    );
    let mut stage = Runtime::default();
    for instruction in &all[last_from + 1..] {
        let args = &instruction.args;
        match instruction.keyword.as_str() {
            "WORKDIR" => stage.workdir = args.clone(),
            "ENV" => {
                for word in words(args) {
                    let (k, v) = word.split_once('=').expect("ENV KEY=VALUE form");
                    stage.env.push((k.to_owned(), v.to_owned()));
                }
            }
            "COPY" => {
                let mut parts = words(args);
                let dest = parts.pop().expect("COPY destination");
                let from = parts
                    .iter()
                    .find_map(|p| p.strip_prefix("--from="))
                    .map(str::to_owned);
                parts.retain(|p| !p.starts_with("--"));
                match from {
                    Some(stage_name) => {
                        assert_eq!(parts.len(), 1, "one artifact per COPY --from");
                        stage.artifacts.push((stage_name, parts.remove(0), dest));
                    }
                    None => stage.copies.push((parts, dest)),
                }
            }
            "RUN" => {
                for command in args.split("&&").map(words) {
                    match command.first().map(String::as_str) {
                        Some("mkdir") => stage
                            .mkdirs
                            .extend(command[1..].iter().filter(|w| !w.starts_with('-')).cloned()),
                        Some("chown") => {
                            let rest: Vec<&String> = command[1..]
                                .iter()
                                .filter(|w| !w.starts_with('-'))
                                .collect();
                            for path in &rest[1..] {
                                stage.chowns.push((rest[0].clone(), path.to_string()));
                            }
                        }
                        _ => {}
                    }
                }
            }
            "USER" => stage.user = args.clone(),
            "EXPOSE" => stage.exposed.extend(words(args).iter().map(|p| {
                p.trim_end_matches("/tcp")
                    .parse::<u16>()
                    .expect("EXPOSE port")
            })),
            "HEALTHCHECK" => {
                let (_, command) = args.split_once("CMD ").expect("HEALTHCHECK … CMD [...]");
                stage.healthcheck = exec_form(command.trim(), "HEALTHCHECK CMD");
            }
            "ENTRYPOINT" => stage.entrypoint = exec_form(args, "ENTRYPOINT"),
            "CMD" => stage.cmd = exec_form(args, "CMD"),
            _ => {}
        }
    }
    assert!(stage.workdir.starts_with('/'), "an absolute WORKDIR");
    stage
}

impl Runtime {
    fn env(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The port of the image's COUNTERSIGN_LISTEN.
    fn listen_port(&self) -> u16 {
        let listen = self
            .env("COUNTERSIGN_LISTEN")
            .expect("ENV COUNTERSIGN_LISTEN");
        let address: std::net::SocketAddr = listen.parse().expect("a socket address");
        address.port()
    }

    fn uid_gid(&self) -> (u32, u32) {
        let (uid, gid) = self
            .user
            .split_once(':')
            .unwrap_or((&self.user, &self.user));
        let number = |s: &str| {
            s.parse::<u32>().unwrap_or_else(|_| {
                panic!(
                    "USER must be numeric uid:gid (Kubernetes' runAsNonRoot checks it): {}",
                    self.user
                )
            })
        };
        (number(uid), number(gid))
    }
}

/// The image's filesystem, laid out under a temporary root.
struct Staged {
    root: tempfile::TempDir,
    stage: Runtime,
    as_root: bool,
}

impl Staged {
    fn path(&self, image_path: &str) -> PathBuf {
        let absolute = if image_path.starts_with('/') {
            PathBuf::from(image_path)
        } else {
            Path::new(&self.stage.workdir).join(image_path)
        };
        self.root.path().join(absolute.strip_prefix("/").unwrap())
    }

    /// `program args…` as the container would run it: the image's PATH (Debian's default),
    /// ENV, WORKDIR and USER, with COUNTERSIGN_LISTEN moved to `port`.
    fn command(&self, argv: &[String], port: u16) -> Command {
        let path_dirs = [
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ];
        let program = if argv[0].contains('/') {
            self.path(&argv[0])
        } else {
            path_dirs
                .iter()
                .map(|dir| self.path(&format!("{dir}/{}", argv[0])))
                .find(|candidate| candidate.is_file())
                .unwrap_or_else(|| panic!("{} is not on the image's PATH", argv[0]))
        };
        let mut command = Command::new(program);
        command.args(&argv[1..]).env_clear();
        for (key, value) in &self.stage.env {
            command.env(key, value);
        }
        let listen = self.stage.env("COUNTERSIGN_LISTEN").unwrap();
        let host = listen.rsplit_once(':').unwrap().0;
        command
            .env("COUNTERSIGN_LISTEN", format!("{host}:{port}"))
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(self.path(&self.stage.workdir));
        if self.as_root {
            let (uid, gid) = self.stage.uid_gid();
            command.uid(uid).gid(gid);
        }
        command
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // Directories made read-only for the run must be writable again to be removed.
        let workdir = self.path(&self.stage.workdir);
        let _ = std::fs::set_permissions(&workdir, std::fs::Permissions::from_mode(0o755));
    }
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
}

/// Lays out the runtime stage: the build context's COPYs, the binary, the directories RUN makes
/// and their owners; everything else read-only to the image's user, as in the image.
fn stage_image() -> Staged {
    let stage = runtime_stage();
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_root = std::fs::metadata(root.path()).unwrap().uid() == 0;
    let staged = Staged {
        root,
        stage,
        as_root,
    };
    std::fs::create_dir_all(staged.path(&staged.stage.workdir)).unwrap();
    for (sources, dest) in &staged.stage.copies {
        for source in sources {
            let from = repo().join(source);
            assert!(from.exists(), "COPY {source}: not in the repository");
            let to = if sources.len() > 1 || dest.ends_with('/') {
                staged
                    .path(dest)
                    .join(Path::new(source).file_name().unwrap())
            } else {
                staged.path(dest)
            };
            copy_tree(&from, &to);
        }
    }
    assert!(
        !staged.stage.artifacts.is_empty(),
        "the binary comes from the build stage"
    );
    for (_, source, dest) in &staged.stage.artifacts {
        assert!(
            source.ends_with("/countersign") && dest.ends_with("/countersign"),
            "the only build artifact is the countersign binary: COPY {source} {dest}"
        );
        let to = staged.path(dest);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(env!("CARGO_BIN_EXE_countersign"), &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for dir in &staged.stage.mkdirs {
        std::fs::create_dir_all(staged.path(dir)).unwrap();
    }
    let (uid, gid) = staged.stage.uid_gid();
    for (owner, dir) in &staged.stage.chowns {
        assert_eq!(
            owner,
            &format!("{uid}:{gid}"),
            "RUN chown gives {dir} to the image's USER"
        );
        if staged.as_root {
            std::os::unix::fs::chown(staged.path(dir), Some(uid), Some(gid)).unwrap();
        }
    }
    // Not root: take write permission away from the WORKDIR so that only what the Dockerfile
    // hands to the user stays writable (as root the uid switch does this).
    if !staged.as_root {
        std::fs::set_permissions(
            staged.path(&staged.stage.workdir),
            std::fs::Permissions::from_mode(0o555),
        )
        .unwrap();
    }
    staged
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn stop(child: &mut Child) {
    // SIGTERM, as `docker stop` sends (the shell's kill: no procps needed).
    let _ = Command::new("sh")
        .args(["-c", "kill -TERM \"$0\"", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_images_runtime_stage_serves_and_passes_its_healthcheck() {
    let staged = stage_image();
    let stage = &staged.stage;
    assert!(
        stage.exposed.contains(&stage.listen_port()),
        "EXPOSE {:?} includes COUNTERSIGN_LISTEN's port",
        stage.exposed
    );
    assert_eq!(
        stage.healthcheck.get(1).map(String::as_str),
        Some("healthcheck"),
        "HEALTHCHECK uses `countersign healthcheck` (the image has no curl)"
    );
    let port = free_port();

    // Nothing listens yet: the health check must say so.
    let before = staged
        .command(&stage.healthcheck, port)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!before.success(), "healthcheck passed with no server");

    // The image's files are a valid configuration.
    let check = staged
        .command(
            &["countersign".to_owned(), "policy".into(), "check".into()],
            port,
        )
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "policy check in the image's layout: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("serve.log");
    let argv: Vec<String> = stage.entrypoint.iter().chain(&stage.cmd).cloned().collect();
    let mut server = staged
        .command(&argv, port)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(logs.path().join("serve.err")).unwrap())
        .spawn()
        .unwrap();
    let server_log = || {
        format!(
            "{}{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            std::fs::read_to_string(logs.path().join("serve.err")).unwrap_or_default()
        )
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = server.try_wait().unwrap() {
            panic!("{argv:?} exited with {status}:\n{}", server_log());
        }
        let health = staged.command(&stage.healthcheck, port).output().unwrap();
        if health.status.success() {
            break;
        }
        if Instant::now() > deadline {
            stop(&mut server);
            panic!(
                "HEALTHCHECK never passed: {}\nserver:\n{}",
                String::from_utf8_lossy(&health.stderr),
                server_log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let ready = staged
        .command(
            &[
                "countersign".to_owned(),
                "healthcheck".into(),
                "--url".into(),
                format!("http://127.0.0.1:{port}/readyz"),
            ],
            port,
        )
        .output()
        .unwrap();
    stop(&mut server);
    assert!(
        ready.status.success(),
        "/readyz: {}\n{}",
        String::from_utf8_lossy(&ready.stderr),
        server_log()
    );
    // The default database landed in the directory the Dockerfile hands to its user.
    assert!(
        staged.path("data/countersign.db").is_file(),
        "no data/countersign.db under WORKDIR:\n{}",
        server_log()
    );
    assert!(
        stage.env("COUNTERSIGN_DATABASE_URL").is_none(),
        "the image keeps the default database_url (data/countersign.db)"
    );
}

// ---------------------------------------------------------------------------------------------
// Configuration keys named in deploy/.

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

// ---------------------------------------------------------------------------------------------
// docker-compose.yml.

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

// ---------------------------------------------------------------------------------------------
// The Helm chart.

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
