//! The `fmrt` binary: exit codes, output formats and error reporting.

use std::process::{Command, Output};

use fmrt::scheduler::{Schedule, Scheduler};

fn fmrt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fmrt"))
        .args(args)
        .output()
        .expect("the fmrt binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_prints_expressions_with_overrides() {
    let out = fmrt(&["check", "poly", "--param", "n=3"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("param n = 3"), "{text}");
    assert!(text.contains("alpha' = n * t^(n - 1)"), "{text}");
    assert!(text.contains("ok: 0 errors, 0 warnings"), "{text}");
}

#[test]
fn check_reports_warnings_but_succeeds() {
    let out = fmrt(&["check", "vp"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("warning: σ' is infinite at t = 1"), "{text}");
    assert!(text.contains("ok: 0 errors, 3 warnings"), "{text}");
}

#[test]
fn check_fails_on_a_broken_file_with_location_and_hint() {
    let dir = std::env::temp_dir().join(format!("fmrt-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("broken.fm");
    std::fs::write(&file, "# a typo\nalpha = sine(t)\nsigma = 1 - t\n").expect("write");
    let out = fmrt(&["check", file.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("broken.fm:2:9"), "{text}");
    assert!(text.contains("did you mean `sin`?"), "{text}");
    assert!(text.contains("failed: 1 error"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn check_rejects_an_unknown_param_override() {
    let out = fmrt(&["check", "poly", "--param", "m=3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("did you mean `n`?"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn eval_json_matches_the_library() {
    let out = fmrt(&["eval", "cosine", "--t", "0,0.25,0.5", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("valid JSON");
    let list = list.as_array().expect("a list");
    assert_eq!(list.len(), 3);
    let cosine = Scheduler::builtin("cosine", &[]).expect("built-in");
    for (entry, t) in list.iter().zip([0.0, 0.25, 0.5]) {
        let c = cosine.coefficients(t);
        assert_eq!(entry["t"].as_f64(), Some(t));
        assert_eq!(entry["alpha"].as_f64(), Some(c.alpha));
        assert_eq!(entry["sigma"].as_f64(), Some(c.sigma));
        assert_eq!(entry["d_alpha"].as_f64(), Some(c.d_alpha));
        assert_eq!(entry["d_sigma"].as_f64(), Some(c.d_sigma));
    }
}

#[test]
fn eval_writes_null_for_an_endpoint_singularity() {
    let out = fmrt(&["eval", "linear_vp", "--t", "1", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("valid JSON");
    assert!(list[0]["d_sigma"].is_null(), "{list}");
    assert_eq!(list[0]["alpha"].as_f64(), Some(1.0));
    assert!(
        stderr(&out).contains("infinite at t = 1"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn eval_table_has_one_row_per_time() {
    let out = fmrt(&["eval", "poly", "--param", "n=2", "--t", "0.5,1"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let row: Vec<f64> = lines[1]
        .split_whitespace()
        .map(|v| v.parse().expect("a number"))
        .collect();
    assert_eq!(row, vec![0.5, 0.25, 0.75, 1.0, -1.0]);
}

#[test]
fn usage_errors_exit_with_2() {
    let out = fmrt(&["eval", "ot", "--t", "1.5"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("outside [0, 1]"));
    let out = fmrt(&["check", "poly", "--param", "n"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("NAME=VALUE"), "{}", stderr(&out));
}

#[test]
fn an_unknown_scheduler_names_the_built_ins() {
    let out = fmrt(&["eval", "cosin", "--t", "0.5"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cosine"), "{}", stderr(&out));
}
