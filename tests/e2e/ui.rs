//! The built-in web page in a real browser: headless Chromium (Debian's `chromium`) loads the
//! timeline of a compensated execution, runs its script against the live API, and the
//! rendered page must show the compensation bars. Skipped, with the reason printed, where no
//! Chromium is installed (`.ci/run` installs it).

use std::process::Command;

use serde_json::json;

use crate::harness::{Api, HostProcess, data_dir, testkit_saga, wasm};

fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_page_shows_the_compensations_in_a_browser() {
    let Some(browser) = chromium() else {
        println!("SKIPPED: no Chromium found (apt-get install chromium)");
        return;
    };
    let (_tmp, dir) = data_dir();
    let host = HostProcess::start(&dir, &[]);
    let api = Api::new(&host.url);
    api.put_plugin("testkit", wasm("testkit")).await;
    api.put_saga(
        "booking",
        &testkit_saga(&["reserve", "pay", "ship"], json!({"retry": {"max_attempts": 2, "initial_backoff_ms": 50}})),
    )
    .await;
    let id = api.trigger("booking", &json!({"behaviors": {"ship": "retryable"}}), None).await;
    assert_eq!(api.wait_terminal(&id).await["status"], "compensated");

    let profile = tempfile::tempdir().unwrap();
    let url = format!("{}/ui#{id}", host.url);
    let out = tokio::task::spawn_blocking({
        let browser = browser.to_owned();
        let profile = profile.path().to_owned();
        move || {
            Command::new(browser)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--virtual-time-budget=8000",
                ])
                .arg(format!("--user-data-dir={}", profile.display()))
                .arg("--dump-dom")
                .arg(&url)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains(r#"id="exec-status" class="status compensated""#),
        "page did not render the execution:\n{dom}"
    );
    for step in ["pay", "reserve"] {
        let bar = format!(r#"data-kind="compensation" data-step="{step}" data-state="completed""#);
        assert!(dom.contains(&bar), "no compensation bar for {step}:\n{dom}");
    }
    assert!(!dom.contains(r#"data-kind="compensation" data-step="ship""#), "ship failed: nothing to undo");
    // Its two failed attempts are both on the timeline, with the retry marked.
    assert_eq!(dom.matches(r#"data-kind="execute" data-step="ship" data-state="failed""#).count(), 2);
    assert!(dom.contains("retry scheduled"));
    // The raw events are listed too.
    assert!(dom.contains("execution_compensated"));
}
