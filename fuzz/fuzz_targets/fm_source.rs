//! `.fm` scheduler source through the parser, the checker and the compiled
//! program: no input may panic, overflow the stack or allocate without bound.
//!
//! Input: the source text; after an optional NUL byte, param overrides as
//! `name=value` lines (so seed files are plain `.fm` sources).

#![no_main]

use fmrt::scheduler::{check_source, Schedule};
use libfuzzer_sys::fuzz_target;

/// Times at which a compiled scheduler is evaluated: the ends, the middle and
/// points just inside the ends, where singular schedules misbehave.
const TIMES: [f64; 6] = [0.0, 1e-12, 0.25, 0.5, 1.0 - 1e-12, 1.0];

fuzz_target!(|data: &[u8]| {
    let (source, params) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(source) = std::str::from_utf8(source) else {
        return;
    };
    let overrides: Vec<(String, f64)> = String::from_utf8_lossy(params)
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once('=')?;
            Some((name.trim().to_string(), value.trim().parse().ok()?))
        })
        .collect();
    let report = check_source(source, "fuzz.fm", &overrides);
    // Rendering walks every diagnostic's span over the source (CRLF, UTF-8).
    let rendered = report.rendered();
    if let Some(scheduler) = report.loaded {
        for t in TIMES {
            let _ = scheduler.coefficients(t);
        }
        let _ = scheduler.rendered_warnings();
        let _ = format!("{:?}", scheduler.expressions());
    } else {
        assert!(!rendered.is_empty(), "a source that fails says why");
    }
});
