//! The Dockerfile, read the way docker reads it (line-based instructions), down to what its
//! runtime stage is made of.

use super::read;

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
pub(super) struct Runtime {
    pub(super) workdir: String,
    pub(super) env: Vec<(String, String)>,
    /// (sources in the build context, destination)
    pub(super) copies: Vec<(Vec<String>, String)>,
    /// (stage, source, destination) of `COPY --from=…`
    pub(super) artifacts: Vec<(String, String, String)>,
    /// Directories a RUN creates, and owners a RUN gives them.
    pub(super) mkdirs: Vec<String>,
    pub(super) chowns: Vec<(String, String)>,
    pub(super) user: String,
    pub(super) exposed: Vec<u16>,
    pub(super) healthcheck: Vec<String>,
    pub(super) entrypoint: Vec<String>,
    pub(super) cmd: Vec<String>,
}

pub(super) fn runtime_stage() -> Runtime {
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
    pub(super) fn env(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The port of the image's COUNTERSIGN_LISTEN.
    pub(super) fn listen_port(&self) -> u16 {
        let listen = self
            .env("COUNTERSIGN_LISTEN")
            .expect("ENV COUNTERSIGN_LISTEN");
        let address: std::net::SocketAddr = listen.parse().expect("a socket address");
        address.port()
    }

    pub(super) fn uid_gid(&self) -> (u32, u32) {
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
