//! A real browser for the end-to-end tests: Debian's `chromium`, driven over W3C WebDriver by
//! Debian's `chromedriver` (package `chromium-driver`), through the `fantoccini` client.
//! `scripts/ensure-browser.sh` installs both. Nothing comes from npm.
//!
//! Beyond plain WebDriver, two of chromedriver's own endpoints are used: the browser log
//! (`se/log`, every console error, uncaught exception and failed resource of the page, what
//! a developer sees in red in the console) and the DevTools bridge (`goog/cdp/execute`), for an
//! exact viewport and a full-page screenshot.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// How long a wait for the page gives up after.
pub const PAGE_WAIT: Duration = Duration::from_secs(60);

/// `$CHROMIUM`, else Debian's `/usr/bin/chromium`.
pub fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), PathBuf::from)
}

/// `$CHROMEDRIVER`, else Debian's `/usr/bin/chromedriver`.
pub fn chromedriver_path() -> PathBuf {
    std::env::var_os("CHROMEDRIVER").map_or_else(|| "/usr/bin/chromedriver".into(), PathBuf::from)
}

/// A chromedriver process on a free loopback port and one headless chromium session.
/// Dropping it kills chromedriver's process group (chromium included) if [`close`](Self::close)
/// was not reached, e.g. after a failed assertion.
pub struct Browser {
    client: Option<Client>,
    driver: Child,
    /// The driver's exit was collected: its process group id may be someone else's now.
    reaped: bool,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a chromium session with a `width` x `height` viewport.
    pub async fn start(width: u32, height: u32) -> anyhow::Result<Self> {
        let (chromium, chromedriver) = (chromium_path(), chromedriver_path());
        for (what, path) in [("chromium", &chromium), ("chromedriver", &chromedriver)] {
            anyhow::ensure!(
                path.is_file(),
                "no {what} at {}: run scripts/ensure-browser.sh",
                path.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("gallery-browser-")
            .tempdir()?;
        let log = dir.path().join("chromedriver.log");
        let port = crate::procs::free_port()?;
        let driver = spawn_driver(&chromedriver, port, &log)?;
        let mut browser = Self {
            client: None,
            driver,
            reaped: false,
            log,
            dir,
        };
        let url = format!("http://127.0.0.1:{port}");
        browser.wait_driver_ready(&url).await?;
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities(&chromium, &browser.dir.path().join("profile")))
            .connect(&url)
            .await
            .with_context(|| format!("new chromium session: {}", browser.driver_log()))?;
        browser.client = Some(client);
        browser.set_viewport(width, height).await?;
        Ok(browser)
    }

    async fn wait_driver_ready(&mut self, url: &str) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Exited (e.g. the port was taken): whatever answers there is not ours.
            if let Ok(Some(exit)) = self.driver.try_wait() {
                self.reaped = true;
                bail!("chromedriver exited ({exit}): {}", self.driver_log());
            }
            if let Ok(resp) = http.get(format!("{url}/status")).send().await
                && let Ok(status) = resp.json::<Value>().await
                && status["value"]["ready"] == true
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("chromedriver not ready after 20 s: {}", self.driver_log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn driver_log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        text[text.floor_char_boundary(start)..].to_owned()
    }

    /// The WebDriver session, for what the helpers here don't cover.
    pub fn client(&self) -> &Client {
        self.client
            .as_ref()
            .expect("the session is open until close()")
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        Ok(self.client().goto(url).await?)
    }

    /// Runs `script` (a function body: `arguments` holds `args`, `return` gives the result; a
    /// returned promise is awaited) in the page.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        self.client()
            .execute(script, args)
            .await
            .with_context(|| format!("running in the page: {script}"))
    }

    /// Polls `script` until it returns a truthy value (up to [`PAGE_WAIT`]); `what` names the
    /// wait in the error.
    pub async fn wait_until(
        &self,
        what: &str,
        script: &str,
        args: Vec<Value>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + PAGE_WAIT;
        // The predicate's value (awaited when it is a promise); `undefined` means a missing
        // `return`, a mistake in the test rather than a page that isn't there yet.
        let script = format!(
            "return Promise.resolve((function() {{ {script} }}).apply(null, arguments))
               .then((v) => v === undefined ? 'undefined' : !!v);"
        );
        loop {
            match self.js(&script, args.clone()).await? {
                Value::Bool(true) => return Ok(()),
                Value::Bool(false) => {}
                other => bail!("the wait for {what} returned {other}: is `return` missing?"),
            }
            if Instant::now() > deadline {
                bail!("waited {PAGE_WAIT:?} for {what}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn find(&self, css: &str) -> anyhow::Result<fantoccini::elements::Element> {
        self.client()
            .find(Locator::Css(css))
            .await
            .with_context(|| format!("no element {css}"))
    }

    /// Clicks the element `locator` finds once it is displayed (a user can't click a hidden
    /// one, and WebDriver refuses to).
    pub async fn click(&self, what: &str, locator: Locator<'_>) -> anyhow::Result<()> {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            if let Ok(el) = self.client().find(locator).await
                && el.is_displayed().await.unwrap_or(false)
            {
                return el.click().await.with_context(|| format!("clicking {what}"));
            }
            if Instant::now() > deadline {
                bail!("waited {PAGE_WAIT:?} for {what} to show");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks the button whose text is `name`, once it shows.
    pub async fn click_button(&self, name: &str) -> anyhow::Result<()> {
        let xpath = format!("//button[normalize-space()='{name}']");
        self.click(&format!("the button {name:?}"), Locator::XPath(&xpath))
            .await
    }

    /// Clicks the element `css` selects, once it shows.
    pub async fn click_css(&self, css: &str) -> anyhow::Result<()> {
        self.click(css, Locator::Css(css)).await
    }

    /// The form field whose `<label>` reads `label` (found through the label, as a user would).
    pub async fn field(&self, label: &str) -> anyhow::Result<fantoccini::elements::Element> {
        let xpath = format!("//*[@id=//label[normalize-space()='{label}']/@for]");
        self.client()
            .find(Locator::XPath(&xpath))
            .await
            .with_context(|| format!("no field labelled {label:?}"))
    }

    /// Chooses `files` in the file input `css`, as the file picker does.
    pub async fn choose_files(&self, css: &str, files: &[impl AsRef<Path>]) -> anyhow::Result<()> {
        // chromedriver takes canonical paths only.
        let paths = files
            .iter()
            .map(|p| {
                let path = p.as_ref();
                let full = path
                    .canonicalize()
                    .with_context(|| format!("{}", path.display()))?;
                Ok(full.display().to_string())
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(self.find(css).await?.send_keys(&paths.join("\n")).await?)
    }

    /// Presses a key (a WebDriver key code such as `"\u{E00C}"`, Escape) where the focus is.
    pub async fn press(&self, key: &str) -> anyhow::Result<()> {
        Ok(self.client().active_element().await?.send_keys(key).await?)
    }

    /// Accepts the `confirm()` the page opens (waiting for it to open).
    pub async fn accept_dialog(&self) -> anyhow::Result<String> {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            match self.client().get_alert_text().await {
                Ok(text) => {
                    self.client().accept_alert().await?;
                    return Ok(text);
                }
                Err(e) if !e.is_no_such_alert() => {
                    return Err(e).context("waiting for a dialog");
                }
                Err(e) if Instant::now() > deadline => bail!("no dialog opened: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Sets the page's viewport to exactly `width` x `height` CSS pixels.
    pub async fn set_viewport(&self, width: u32, height: u32) -> anyhow::Result<()> {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await?;
        Ok(())
    }

    /// A PNG of the whole page, beyond the viewport, written to `path`.
    pub async fn screenshot_full_page(&self, path: &Path) -> anyhow::Result<()> {
        use base64::Engine;
        let metrics = self.cdp("Page.getLayoutMetrics", json!({})).await?;
        // The content, and at least the viewport (content may be narrower than the screen).
        let (content, view) = (&metrics["cssContentSize"], &metrics["cssLayoutViewport"]);
        let side = |c: &str, v: &str| -> anyhow::Result<f64> {
            let c = content[c].as_f64().context("content size")?;
            let v = view[v].as_f64().context("viewport size")?;
            Ok(c.max(v))
        };
        let clip = json!({
            "x": 0, "y": 0, "scale": 1,
            "width": side("width", "clientWidth")?,
            "height": side("height", "clientHeight")?,
        });
        let shot = self
            .cdp(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true, "clip": clip }),
            )
            .await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().context("screenshot data")?)?;
        std::fs::write(path, png)?;
        Ok(())
    }

    /// The browser log's entries at level SEVERE since the last call: console errors,
    /// uncaught exceptions, failed loads and CSP refusals.
    pub async fn console_errors(&self) -> anyhow::Result<Vec<String>> {
        let entries = self
            .client()
            .issue_cmd(SessionPost::new("se/log", json!({ "type": "browser" })))
            .await
            .context("reading the browser log")?;
        Ok(entries
            .as_array()
            .context("browser log entries")?
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect())
    }

    /// A Chrome DevTools Protocol command through chromedriver.
    pub async fn cdp(&self, cmd: &str, params: Value) -> anyhow::Result<Value> {
        self.client()
            .issue_cmd(SessionPost::new(
                "goog/cdp/execute",
                json!({ "cmd": cmd, "params": params }),
            ))
            .await
            .with_context(|| format!("DevTools {cmd}"))
    }

    /// Ends the session (chromium exits) and stops chromedriver.
    pub async fn close(mut self) -> anyhow::Result<()> {
        if let Some(client) = self.client.take() {
            client.close().await?;
        }
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver leads its own process group, which chromium joins: one signal ends both.
        if !self.reaped {
            let pgid = nix::unistd::Pid::from_raw(self.driver.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = self.driver.wait();
        }
    }
}

fn spawn_driver(chromedriver: &Path, port: u16, log: &Path) -> anyhow::Result<Child> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(log)?;
    Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .arg("--log-level=WARNING")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", chromedriver.display()))
}

fn capabilities(chromium: &Path, profile: &Path) -> serde_json::Map<String, Value> {
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium.display().to_string(),
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
        // Every console message is kept for console_errors().
        "goog:loggingPrefs": { "browser": "ALL" },
        // A confirm() stays open until the test answers it.
        "unhandledPromptBehavior": "ignore",
    });
    match caps {
        Value::Object(map) => map,
        _ => unreachable!("a JSON object literal"),
    }
}

/// `POST /session/{id}/{path}` with a JSON body: chromedriver's own endpoints.
#[derive(Debug)]
struct SessionPost {
    path: &'static str,
    body: Value,
}

impl SessionPost {
    fn new(path: &'static str, body: Value) -> Self {
        Self { path, body }
    }
}

impl WebDriverCompatibleCommand for SessionPost {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        let session = session_id.unwrap_or_default();
        base_url.join(&format!("session/{session}/{}", self.path))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(self.body.to_string()))
    }
}
