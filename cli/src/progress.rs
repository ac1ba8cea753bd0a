//! A progress bar on stderr for sampling and likelihood runs: a velocity
//! field wrapper that follows the solver's time and counts field evaluations.
//!
//! The bar appears only once a run has lasted a second, only when stderr is a
//! terminal (indicatif draws nothing otherwise), and never with `--quiet`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fmrt::field::{Derivatives, Extras, VelocityField};
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{ArrayViewD, ArrayViewMutD};

/// Ticks of the bar from the start time to the end time.
const TICKS: u64 = 1000;

/// Wraps a field, showing progress from time `from` to time `to`.
pub struct Progress {
    inner: Arc<dyn VelocityField>,
    from: f64,
    to: f64,
    started: Instant,
    enabled: bool,
    nfe: AtomicU64,
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress {
    /// A wrapper of `inner` integrated from `from` to `to`; `quiet` hides the bar.
    pub fn new(inner: Arc<dyn VelocityField>, from: f64, to: f64, quiet: bool) -> Arc<Self> {
        Arc::new(Self {
            inner,
            from,
            to,
            started: Instant::now(),
            enabled: !quiet && std::io::stderr().is_terminal(),
            nfe: AtomicU64::new(0),
            bar: Mutex::new(None),
        })
    }

    /// Records one field evaluation at times `t`.
    fn tick(&self, t: &[f64]) {
        let nfe = self.nfe.fetch_add(1, Ordering::Relaxed) + 1;
        if !self.enabled || self.started.elapsed() < Duration::from_secs(1) {
            return;
        }
        let Some(&t) = t.first() else { return };
        let mut bar = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        let bar = bar.get_or_insert_with(|| {
            let bar = ProgressBar::new(TICKS);
            if let Ok(style) =
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
            {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let span = self.to - self.from;
        let fraction = if span == 0.0 {
            1.0
        } else {
            (t - self.from) / span
        };
        bar.set_position((fraction.clamp(0.0, 1.0) * TICKS as f64) as u64);
        bar.set_message(format!("t = {t:.4}  NFE {nfe}"));
    }

    /// Removes the bar (call when the run is over).
    pub fn finish(&self) {
        let bar = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bar) = bar.as_ref() {
            bar.finish_and_clear();
        }
    }
}

impl VelocityField for Progress {
    fn state_shape(&self) -> Option<&[usize]> {
        self.inner.state_shape()
    }

    fn derivatives(&self) -> Derivatives {
        self.inner.derivatives()
    }

    fn velocity(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        out: ArrayViewMutD<'_, f32>,
    ) -> fmrt::Result<()> {
        self.tick(t);
        self.inner.velocity(x, t, extras, out)
    }

    fn jvp(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        v: ArrayViewD<'_, f32>,
        out: ArrayViewMutD<'_, f32>,
    ) -> fmrt::Result<()> {
        self.tick(t);
        self.inner.jvp(x, t, extras, v, out)
    }

    fn velocity_and_jvps(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        v: ArrayViewD<'_, f32>,
        velocity: ArrayViewMutD<'_, f32>,
        products: ArrayViewMutD<'_, f32>,
    ) -> fmrt::Result<()> {
        self.tick(t);
        self.inner
            .velocity_and_jvps(x, t, extras, v, velocity, products)
    }

    fn divergence(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        out: &mut [f64],
    ) -> fmrt::Result<()> {
        self.tick(t);
        self.inner.divergence(x, t, extras, out)
    }
}
