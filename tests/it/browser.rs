//! The sandbox page in a real browser: headless Chromium driven over WebDriver (chromedriver).
//! It loads `/sandbox`, finds a posted card, clicks Approve, and sees the card turn approved;
//! hostile text from an agent stays text. A screenshot is kept in
//! `target/test-artifacts/sandbox.png`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without them the
//! test is skipped locally and fails under `CI=true`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::common::{REVOPS, TestApp, TestDb, discount_proposal};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

struct Driver {
    process: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Driver {
    async fn start() -> Option<Self> {
        if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but {CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)"
            );
            eprintln!("skipping the browser test: install chromium and chromium-driver to run it");
            return None;
        }
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let process = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        // chromedriver answers /status once it listens; it has no other readiness signal.
        let ready = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Ok(response) = http.get(format!("{base}/status")).send().await
                    && response.status().is_success()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(ready.is_ok(), "chromedriver did not come up");
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1400,1000", format!("--user-data-dir={}", profile.path().display())]
        }}}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        let driver = Self {
            process,
            base,
            session,
            http,
            _profile: profile,
        };
        // Element lookups wait up to 10 s for the element to appear (WebDriver's implicit wait).
        driver
            .command("timeouts", json!({"implicit": 10_000}))
            .await;
        Some(driver)
    }

    /// Ends the session (and its Chromium) before chromedriver is killed.
    async fn quit(self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
    }

    async fn command(&self, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}/{path}", self.base, self.session);
        let response: Value = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        response["value"].clone()
    }

    async fn get(&self, path: &str) -> Value {
        let url = format!("{}/session/{}/{path}", self.base, self.session);
        let response: Value = self
            .http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        response["value"].clone()
    }

    async fn find(&self, using: &str, value: &str) -> Option<String> {
        let found = self
            .command("element", json!({"using": using, "value": value}))
            .await;
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// How many elements match now (no implicit wait: zero is an answer).
    async fn count(&self, css: &str) -> u64 {
        let script = json!({"script": "return document.querySelectorAll(arguments[0]).length", "args": [css]});
        self.command("execute/sync", script).await.as_u64().unwrap()
    }

    async fn click(&self, element: &str) {
        self.command(&format!("element/{element}/click"), json!({}))
            .await;
    }

    async fn screenshot(&self, to: &Path) {
        let png = self.get("screenshot").await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, bytes).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_approves_a_card_in_the_sandbox_page() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let db = TestDb::sqlite();
    let app = TestApp::start(&db).await;
    let mut hostile = discount_proposal();
    hostile["summary"] = json!("Discount <img src=x id=injected onerror=alert(1)> <!channel>");
    let created = app.create(REVOPS, &hostile).await;
    let id = created["id"].as_str().unwrap();
    app.slack()
        .wait_for_card("C0FINANCE", id, "the card", |m| {
            m.buttons() == ["approve", "reject"]
        })
        .await;

    // U0FIN002 is a finance approver; the page acts as whoever the URL names.
    driver
        .command(
            "url",
            json!({"url": app.url("/sandbox#C0FINANCE?as=U0FIN002")}),
        )
        .await;
    let approve = driver
        .find(
            "css selector",
            "article.msg button.bk-button[data-action-id=approve]",
        )
        .await
        .expect("the card's Approve button is on the page");
    assert_eq!(
        driver.count("#injected").await,
        0,
        "agent text never becomes markup"
    );
    let script = json!({"script": "return document.querySelector('article.msg .bk-header').innerText", "args": []});
    let shown = driver.command("execute/sync", script).await;
    assert_eq!(
        shown,
        "Discount <img src=x id=injected onerror=alert(1)> <!channel>"
    );

    driver.click(&approve).await;
    // The card turns approved without a reload, and its buttons go.
    driver
        .find(
            "xpath",
            "//article[contains(@class,'msg')]//div[b[text()='Approved']]",
        )
        .await
        .expect("the card shows it is approved");
    // Read the line in one script: the page may redraw (a fresh event) between two commands,
    // which would leave an element handle stale.
    let script = json!({"script": "const line = [...document.querySelectorAll('article.msg .bk-text')].find(e => e.innerText.includes('Approved by')); return line ? line.innerText : null", "args": []});
    let line = driver.command("execute/sync", script).await;
    assert!(
        line.as_str()
            .is_some_and(|l| l.starts_with("✅ Approved by @tomas")),
        "{line}"
    );
    let artifact =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/sandbox.png");
    driver.screenshot(&artifact).await;
    assert_eq!(
        driver
            .count("article.msg button.bk-button[data-action-id=approve]")
            .await,
        0
    );
    let decided: Value = app.get(REVOPS, id).await.json().await.unwrap();
    assert_eq!(decided["status"], "approved");
    assert_eq!(decided["decision"]["by"]["id"], "U0FIN002");
    // The page's event stream is still open: shutdown must not wait for it.
    app.stop().await.unwrap();
    driver.quit().await;
}
