//! Storage faults: a full disk and a read-only one. The affected requests fail with 503 and
//! a reason; no execution is corrupted; everything resumes once the disk is usable again.
//! Needs a small tmpfs (root in a sandbox that allows `mount`); skipped with a reason otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::harness::{Api, HostProcess, testkit_saga, wasm};

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size_mib: u64) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(Self(dir.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn remount(&self, mode: &str) {
        let ok =
            Command::new("mount").args(["-o", &format!("remount,{mode}")]).arg(&self.0).status().unwrap().success();
        assert!(ok, "remount {mode}");
    }

    fn free(&self) -> u64 {
        let st = nix::sys::statvfs::statvfs(&self.0).unwrap();
        st.blocks_available() as u64 * st.fragment_size() as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

async fn trigger_status(api: &Api) -> (u16, serde_json::Value) {
    api.call(Method::POST, "/v1/sagas/s/executions", Some(b"{}".to_vec())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_read_only_disk_fails_requests_with_503_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = match Tmpfs::mount(&tmp.path().join("mnt"), 48) {
        Ok(fs) => fs,
        Err(why) => {
            println!("SKIPPED: cannot mount a tmpfs here ({})", why.trim());
            return;
        }
    };
    let dir = fs.0.join("data");
    let mut host = HostProcess::start(&dir, &["--min-free-mib", "8"]);
    let api = Api::new(&host.url);
    api.put_plugin("testkit", wasm("testkit")).await;
    let retry = json!({"retry": {"max_attempts": 10, "initial_backoff_ms": 300, "multiplier": 1.0}});
    api.put_saga("s", &testkit_saga(&["a", "b"], retry)).await;
    // One execution waits in backoff while the disk fills up.
    let waiting = api.trigger("s", &json!({"behaviors": {"b": "fail_until:3"}}), None).await;

    let filler = fs.0.join("filler");
    let fill = fs.free().saturating_sub(4 << 20);
    std::fs::write(&filler, vec![0u8; fill as usize]).unwrap();
    let (status, body) = trigger_status(&api).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(body["error"]["message"].as_str().unwrap().contains("disk almost full"), "{body}");
    // Reads still work.
    assert_eq!(api.execution(&waiting).await["id"], waiting.as_str());

    std::fs::remove_file(&filler).unwrap();
    let (status, body) = trigger_status(&api).await;
    assert_eq!(status, 202, "writes resume once space returns: {body}");
    let exec = api.wait_terminal(&waiting).await;
    assert_eq!(exec["status"], "completed", "the execution that waited through the outage: {exec}");

    // A data directory that became read-only cannot hold a store: the host refuses to start
    // and says why, rather than serve requests it cannot record. (A running host cannot be
    // switched: remounting with open files is refused, so the guard's read-only check is
    // exercised only by the kernel's own errors=remount-ro.)
    host.kill();
    fs.remount("ro");
    let out = Command::new(env!("CARGO_BIN_EXE_sagahost"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("opening the store"), "{stderr}");
    fs.remount("rw");

    // Nothing was corrupted: a restart reads every stream back.
    let host = HostProcess::start(&dir, &["--min-free-mib", "8"]);
    let api = Api::new(&host.url);
    let (_, list) = api.call(Method::GET, "/v1/executions?saga=s", None).await;
    for e in list["executions"].as_array().unwrap() {
        let exec =
            api.wait_for(e["id"].as_str().unwrap(), Duration::from_secs(30), |x| x["status"] == "completed").await;
        assert_eq!(exec["status"], "completed");
    }
}
