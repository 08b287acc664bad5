//! The Dockerfile's runtime stage laid out on disk and run: its CMD, then its HEALTHCHECK until
//! it passes.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::dockerfile::{Runtime, runtime_stage};
use super::repo;

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
