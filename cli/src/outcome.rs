//! How each sample's integration went: per-sample steps and statuses of a
//! run, gathered chunk by chunk in bounded memory, for `--json` and the
//! `--partial` report of `fmrt sample` and `fmrt likelihood`.

use fmrt::solver::{SampleStats, SampleStatus, SolverConfig};
use serde_json::{json, Value};

use crate::failure::{fail, Failure};

/// The unfinished samples named in a report; the rest are counted.
const NAMED: usize = 100;

/// Per-sample counters of a run, summed and bounded as chunks arrive.
#[derive(Debug, Default)]
pub struct Outcome {
    samples: usize,
    accepted: Range,
    rejected: Range,
    max_steps: usize,
    step_size_too_small: usize,
    non_finite: usize,
    /// The first unfinished samples, by index within the run (with its
    /// first index), and their status.
    named: Vec<(u64, SampleStatus)>,
}

/// The smallest, largest and total of a count over the samples.
#[derive(Debug, Default, Clone, Copy)]
struct Range {
    min: usize,
    max: usize,
    total: usize,
}

impl Range {
    fn add(&mut self, value: usize, first: bool) {
        self.min = if first { value } else { self.min.min(value) };
        self.max = self.max.max(value);
        self.total += value;
    }

    fn json(&self, samples: usize) -> Value {
        json!({
            "min": self.min,
            "max": self.max,
            "mean": self.total as f64 / samples.max(1) as f64,
        })
    }
}

/// The name of a status in reports: `done`, `max_steps`,
/// `step_size_too_small` or `non_finite`.
pub fn status_name(status: SampleStatus) -> &'static str {
    match status {
        SampleStatus::Done => "done",
        SampleStatus::MaxSteps => "max_steps",
        SampleStatus::StepSizeTooSmall => "step_size_too_small",
        SampleStatus::NonFinite => "non_finite",
    }
}

impl Outcome {
    /// Adds the samples of one chunk, whose first sample is `first` of the run.
    pub fn add(&mut self, first: u64, samples: &[SampleStats]) {
        for (i, s) in samples.iter().enumerate() {
            let is_first = self.samples == 0;
            self.accepted.add(s.accepted, is_first);
            self.rejected.add(s.rejected, is_first);
            self.samples += 1;
            match s.status {
                SampleStatus::Done => continue,
                SampleStatus::MaxSteps => self.max_steps += 1,
                SampleStatus::StepSizeTooSmall => self.step_size_too_small += 1,
                SampleStatus::NonFinite => self.non_finite += 1,
            }
            if self.named.len() < NAMED {
                self.named.push((first + i as u64, s.status));
            }
        }
    }

    /// The samples that did not finish.
    pub fn unfinished(&self) -> usize {
        self.max_steps + self.step_size_too_small + self.non_finite
    }

    /// The JSON summary: steps per sample and the statuses.
    pub fn json(&self) -> Value {
        json!({
            "accepted_steps": self.accepted.json(self.samples),
            "rejected_steps": self.rejected.json(self.samples),
            "status": {
                "done": self.samples - self.unfinished(),
                "max_steps": self.max_steps,
                "step_size_too_small": self.step_size_too_small,
                "non_finite": self.non_finite,
            },
            "unfinished": self.named.iter().map(|(i, s)| json!({
                "index": i,
                "status": status_name(*s),
            })).collect::<Vec<_>>(),
        })
    }

    /// The status report of a partial run, for stderr, saying what the
    /// stopped samples' rows hold (`None` when every sample finished).
    pub fn report(&self, rows: &str) -> Option<String> {
        if self.unfinished() == 0 {
            return None;
        }
        let named: Vec<String> = self
            .named
            .iter()
            .map(|(i, s)| format!("{i} ({})", status_name(*s)))
            .collect();
        let more = self.unfinished() - self.named.len();
        let tail = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        Some(format!(
            "{} of {} samples did not finish ({} max_steps, {} step_size_too_small, {} \
             non_finite): {}{tail}; their rows hold {rows}",
            self.unfinished(),
            self.samples,
            self.max_steps,
            self.step_size_too_small,
            self.non_finite,
            named.join(", ")
        ))
    }
}

/// Refuses `--partial` where no sample can stop alone (fixed steps, which
/// stochastic sampling also takes, or a shared-step error norm), before any
/// work: the library's rule, under the flag's name.
pub fn check_partial(partial: bool, solver: &SolverConfig) -> Result<(), Failure> {
    if partial {
        fmrt::solver::check_partial(solver).map_err(|e| fail!("--partial: {e}"))?;
    }
    Ok(())
}
