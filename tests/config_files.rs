//! The example configurations all check, `config/warren.toml` states the real defaults, and
//! `warren check-config` answers as documented: a one-line summary and exit 0 for a good file,
//! every problem with its file, line and column and exit 2 for a bad one.

#[path = "common/warren_process.rs"]
mod warren_process;

use std::path::{Path, PathBuf};

use warren::config::{self, Settings};
use warren_process::{run_warren, TempDir};

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

#[test]
fn every_file_in_config_checks() {
    let mut checked = 0;
    for entry in std::fs::read_dir(config_dir()).expect("config/") {
        let path = entry.expect("a directory entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        if let Err(report) = config::load(&path) {
            panic!("{} does not check:\n{report}", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} files in config/");
}

#[test]
fn warren_toml_states_the_defaults() {
    let config = config::load(&config_dir().join("warren.toml")).expect("warren.toml checks");
    let defaults = Settings::default();
    let mut stated = config.settings.clone();
    // 0.4 of the machine's memory, computed back from the default: equal to a few bytes.
    let difference = stated
        .memory_high_watermark
        .abs_diff(defaults.memory_high_watermark);
    assert!(
        difference < 1024,
        "memory_high_watermark is off by {difference}"
    );
    stated.memory_high_watermark = defaults.memory_high_watermark;
    assert_eq!(stated, defaults);
    assert_eq!(config.users.len(), 1);
    assert_eq!(config.users[0].name, "guest");
}

#[test]
fn check_config_prints_a_summary_and_exits_0() {
    let orders = config_dir().join("orders.toml");
    let output = run_warren(&["check-config", orders.to_str().expect("a UTF-8 path")]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!(
            "{}: ok: 1 vhost, 3 exchanges, 6 queues, 8 bindings, 1 user\n",
            orders.display()
        )
    );
}

#[test]
fn check_config_reports_every_problem_and_exits_2() {
    let dir = TempDir::new("check-config");
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[[exchanges]]\nname = \"orders\"\ntype = \"topc\"\n\n[[queues]]\nname = \"q\"\n\
         arguments = { \"x-message-ttl\" = -1 }\n\n[[bindings]]\nsource = \"nope\"\n\
         destination = \"q\"\n",
    )
    .expect("write the file");
    let name = file.display().to_string();
    let output = run_warren(&["check-config", &name]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        vec![
            format!("{name}:3:8: unknown exchange type 'topc' (expected direct, fanout, topic, headers or x-delayed-message)"),
            format!("{name}:7:33: queue 'q': argument 'x-message-ttl' must not be negative (got -1)"),
            format!("{name}:10:10: binding from exchange 'nope' in vhost '/', which is neither declared in this file nor built in"),
            format!("{name}: 3 problems"),
        ]
    );
}

#[test]
fn check_config_of_a_missing_file_exits_2() {
    let output = run_warren(&["check-config", "/nonexistent/warren.toml"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("/nonexistent/warren.toml: cannot read the file:"),
        "{stderr}"
    );
}

#[test]
fn an_invalid_file_stops_the_start_with_exit_2() {
    let dir = TempDir::new("bad-start");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[server]\nheartbeat = 60\n").expect("write the file");
    let data = dir.path().join("data");
    let output = run_warren(&[
        "--config",
        file.to_str().expect("a UTF-8 path"),
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().expect("a UTF-8 path"),
    ]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.toml:2:13: heartbeat: invalid type: integer `60`"),
        "{stderr}"
    );
}
