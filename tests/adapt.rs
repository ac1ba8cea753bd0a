//! Adapters: schedule changes against the closed form of the Gaussian mixture,
//! classifier-free guidance against its definition, prediction conversions.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use fmrt::field::adapt::{Guided, Predicted, ScheduleChange};
use fmrt::field::analytic::GaussianMixture;
use fmrt::field::{ExtraTensor, Extras, VelocityField};
use fmrt::path::{AffinePath, Prediction};
use fmrt::random::SeededRng;
use fmrt::sampler::Sampler;
use fmrt::scheduler::{Schedule, Scheduler};
use fmrt::solver::{Method, SolverConfig};
use fmrt::Error;
use ndarray::{Array2, ArrayD, ArrayViewD, ArrayViewMutD, Axis};

fn builtin(name: &str) -> Arc<dyn Schedule> {
    Arc::new(Scheduler::builtin(name, &[]).expect("built-in scheduler"))
}

fn ring(schedule: Arc<dyn Schedule>) -> Arc<GaussianMixture> {
    Arc::new(GaussianMixture::ring(8, 4.0, 0.3, schedule).expect("valid mixture"))
}

fn random_points(n: usize, seed: u64) -> ArrayD<f32> {
    let mut rng = SeededRng::new(seed);
    Array2::from_shape_simple_fn((n, 2), || (3.0 * rng.normal()) as f32).into_dyn()
}

fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    (a - b).iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

fn velocity_of(field: &dyn VelocityField, x: &ArrayD<f32>, t: &[f64]) -> ArrayD<f32> {
    let mut out = ArrayD::zeros(x.raw_dim());
    field
        .velocity(x.view(), t, Extras::none(), out.view_mut())
        .expect("velocity");
    out
}

/// The mixture's marginal velocity is unique for a given path, so the field of
/// the mixture under `ot`, moved to another schedule, must equal the field of
/// the mixture under that schedule, at every (x, r) including the ends.
#[test]
fn schedule_change_matches_the_closed_form() {
    let trained = builtin("ot");
    let from_ot = ring(trained.clone());
    let x = random_points(64, 1);
    let mut failures = Vec::new();
    for target_name in ["cosine", "poly", "convex_cosine", "linear_vp"] {
        let target = builtin(target_name);
        let changed = ScheduleChange::new(from_ot.clone(), trained.clone(), target.clone());
        let exact = ring(target);
        let mut rng = SeededRng::new(2);
        let mut times: Vec<f64> = (0..64).map(|_| rng.uniform()).collect();
        times[0] = 0.0;
        if target_name != "linear_vp" {
            times[1] = 1.0; // linear_vp's σ' is infinite at r = 1
        }
        let got = velocity_of(&changed, &x, &times);
        let want = velocity_of(exact.as_ref(), &x, &times);
        for (i, (g, w)) in got.outer_iter().zip(want.outer_iter()).enumerate() {
            let scale = w.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let err = (&g - &w).iter().fold(0.0f32, |m, v| m.max(v.abs())) / scale;
            if err > 2e-5 {
                failures.push(format!(
                    "{target_name}: r = {} relative error {err}",
                    times[i]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// ot → cosine has a closed-form time map: t_r = sin(πr/2) / (sin(πr/2) + cos(πr/2)),
/// and s_r = sin + cos; its derivatives match central differences.
#[test]
fn time_map_of_ot_to_cosine() {
    let change = ScheduleChange::new(ring(builtin("ot")), builtin("ot"), builtin("cosine"));
    let exact = |r: f64| {
        let (s, c) = (std::f64::consts::FRAC_PI_2 * r).sin_cos();
        (s / (s + c), s + c)
    };
    for r in [0.0, 0.1, 0.37, 0.5, 0.83, 0.99, 1.0] {
        let m = change.time_map(r).expect("time map");
        let (t, s) = exact(r);
        assert!((m.t - t).abs() < 1e-13, "t_r at {r}: {} vs {t}", m.t);
        assert!((m.s - s).abs() < 1e-12, "s_r at {r}: {} vs {s}", m.s);
        if (0.01..=0.99).contains(&r) {
            let h = 1e-6;
            let (tp, sp) = exact(r + h);
            let (tm, sm) = exact(r - h);
            assert!((m.dt - (tp - tm) / (2.0 * h)).abs() < 1e-7, "dt at {r}");
            assert!((m.ds - (sp - sm) / (2.0 * h)).abs() < 1e-7, "ds at {r}");
        }
    }
}

/// Sampling the ot-trained mixture along the cosine schedule gives the same
/// samples as sampling the cosine mixture directly: the flow map from noise to
/// data is the same (x̄_r = s_r·x_{t_r} with s = 1 and t = r at both ends).
#[test]
fn sampling_after_a_schedule_change_gives_the_same_samples() {
    let ot = builtin("ot");
    let cosine = builtin("cosine");
    let changed = Arc::new(ScheduleChange::new(ring(ot.clone()), ot, cosine.clone()));
    let solver = SolverConfig::adaptive(Method::Dopri5, 1e-7, 1e-7);
    let a = Sampler::new(changed, solver.clone())
        .sample(2000, 5)
        .expect("changed schedule");
    let b = Sampler::new(ring(cosine.clone()), solver)
        .sample(2000, 5)
        .expect("direct");
    let diff = max_abs_diff(&a.x, &b.x);
    assert!(diff < 1e-3, "max difference {diff}");
}

/// The time map itself is undefined where the sampling schedule's derivative
/// is infinite (VP's σ' at r = 1): an error, not a NaN. The field is still
/// defined there, through its endpoint margin.
#[test]
fn schedule_change_reports_singular_times() {
    let change = ScheduleChange::new(ring(builtin("ot")), builtin("ot"), builtin("vp"));
    assert!(change.time_map(0.5).is_ok());
    match change.time_map(1.0) {
        Err(Error::Singular { reason }) => {
            assert!(reason.contains("not finite"), "{reason}")
        }
        other => panic!("expected an error, got {other:?}"),
    }
    let x = random_points(4, 1);
    let u = velocity_of(&change, &x, &[1.0]);
    assert!(u.iter().all(|v| v.is_finite()), "{u:?}");
}

/// Sampling along a schedule whose σ' is infinite at r = 1 (vp, linear_vp)
/// works with the adaptive default and fixed steps, and gives the samples of
/// the untransformed model (Meta's flow_matching fails here with a step-size
/// underflow).
#[test]
fn schedule_changes_to_singular_targets_give_the_same_samples() {
    let ot = builtin("ot");
    let plain = Sampler::new(
        ring(ot.clone()),
        SolverConfig::adaptive(Method::Dopri5, 1e-7, 1e-7),
    )
    .sample(500, 12)
    .unwrap();
    // Bounds about 3× the differences measured (1.7e-3, 4.4e-4, 7.4e-4,
    // 5.3e-3): the solver's error near the square-root singularity of σ̄ at
    // r = 1, not the reference's (tolerance 1e-7).
    for (target, bounds) in [("vp", [5e-3, 1.5e-3]), ("linear_vp", [2.5e-3, 1.6e-2])] {
        let changed: Arc<dyn VelocityField> = Arc::new(ScheduleChange::new(
            ring(ot.clone()),
            ot.clone(),
            builtin(target),
        ));
        for (solver, bound) in [
            SolverConfig::adaptive(Method::Dopri5, 1e-5, 1e-5),
            SolverConfig::fixed(Method::Rk4, fmrt::solver::Steps::Count(400)),
        ]
        .into_iter()
        .zip(bounds)
        {
            let got = Sampler::new(changed.clone(), solver.clone())
                .sample(500, 12)
                .unwrap_or_else(|e| panic!("{target} {:?}: {e}", solver.method));
            let diff = max_abs_diff(&got.x, &plain.x);
            println!(
                "ot -> {target} {:?}: max difference {diff:e}, {} evaluations",
                solver.method, got.stats.nfe
            );
            assert!(diff <= bound, "ot -> {target} {:?}: {diff}", solver.method);
        }
    }
}

/// A conditional test field: label k is component k of the mixture alone,
/// label `K` (the null label) the whole mixture. It counts its calls.
pub(crate) struct LabelledMixture {
    components: Vec<GaussianMixture>,
    whole: GaussianMixture,
    calls: AtomicUsize,
    rows: AtomicUsize,
}

impl LabelledMixture {
    /// The ring of 4 components of std 0.5 on the circle of radius 3; label
    /// k < 4 is component k, any other the whole ring (as
    /// tests/fixtures/gmm_label_ot.onnx computes it).
    pub(crate) fn new(schedule: Arc<dyn Schedule>) -> Self {
        let whole = GaussianMixture::ring(4, 3.0, 0.5, schedule.clone()).expect("mixture");
        let components = (0..4)
            .map(|k| {
                let mean = whole.means().row(k).to_owned().insert_axis(Axis(0));
                GaussianMixture::new(&[1.0], mean.view(), &[0.5], schedule.clone())
                    .expect("component")
            })
            .collect();
        Self {
            components,
            whole,
            calls: AtomicUsize::new(0),
            rows: AtomicUsize::new(0),
        }
    }
}

impl VelocityField for LabelledMixture {
    fn state_shape(&self) -> Option<&[usize]> {
        self.whole.state_shape()
    }

    fn derivatives(&self) -> fmrt::field::Derivatives {
        fmrt::field::Derivatives {
            jvp: true,
            stacked_jvp: false,
            divergence: true,
        }
    }

    fn velocity(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        mut out: ArrayViewMutD<'_, f32>,
    ) -> fmrt::Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.rows.fetch_add(x.shape()[0], Ordering::SeqCst);
        let Some(ExtraTensor::Int64(labels)) = extras.get("label") else {
            return Err(Error::field("test field", "needs a label"));
        };
        for (i, (xi, mut oi)) in x.outer_iter().zip(out.outer_iter_mut()).enumerate() {
            let ti = [if t.len() == 1 { t[0] } else { t[i] }];
            let field = self.for_label(labels[i]);
            let xi = xi.to_owned().insert_axis(Axis(0));
            let mut oi2 = ArrayD::zeros(xi.raw_dim());
            field.velocity(xi.view(), &ti, Extras::none(), oi2.view_mut())?;
            oi.assign(&oi2.index_axis(Axis(0), 0));
        }
        Ok(())
    }

    fn jvp(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        v: ArrayViewD<'_, f32>,
        mut out: ArrayViewMutD<'_, f32>,
    ) -> fmrt::Result<()> {
        let labels = Self::labels(extras)?;
        for (i, mut oi) in out.outer_iter_mut().enumerate() {
            let ti = [if t.len() == 1 { t[0] } else { t[i] }];
            let row =
                |a: &ArrayViewD<'_, f32>| a.index_axis(Axis(0), i).to_owned().insert_axis(Axis(0));
            let mut oi2 = ArrayD::zeros(row(&x).raw_dim());
            self.for_label(labels[i]).jvp(
                row(&x).view(),
                &ti,
                Extras::none(),
                row(&v).view(),
                oi2.view_mut(),
            )?;
            oi.assign(&oi2.index_axis(Axis(0), 0));
        }
        Ok(())
    }

    fn divergence(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        out: &mut [f64],
    ) -> fmrt::Result<()> {
        let labels = Self::labels(extras)?;
        for (i, o) in out.iter_mut().enumerate() {
            let ti = [if t.len() == 1 { t[0] } else { t[i] }];
            let xi = x.index_axis(Axis(0), i).to_owned().insert_axis(Axis(0));
            let mut d = [0.0];
            self.for_label(labels[i])
                .divergence(xi.view(), &ti, Extras::none(), &mut d)?;
            *o = d[0];
        }
        Ok(())
    }
}

impl LabelledMixture {
    /// Component `label` alone, or the whole mixture for the null label.
    fn for_label(&self, label: i64) -> &GaussianMixture {
        usize::try_from(label)
            .ok()
            .and_then(|k| self.components.get(k))
            .unwrap_or(&self.whole)
    }

    fn labels(extras: &Extras) -> fmrt::Result<Vec<i64>> {
        match extras.get("label") {
            Some(ExtraTensor::Int64(labels)) => Ok(labels.iter().copied().collect()),
            _ => Err(Error::field("test field", "needs a label")),
        }
    }
}

#[test]
fn guidance_combines_both_halves_in_one_call() {
    let inner = Arc::new(LabelledMixture::new(builtin("cosine")));
    let x = random_points(6, 3);
    let t = [0.1, 0.3, 0.5, 0.7, 0.9, 0.95];
    let labels = Extras::new().with("label", ExtraTensor::labels(&[0, 1, 2, 3, 0, 1]));
    let null = Guided::null_label("label", 4);

    let mut conditional = ArrayD::zeros(x.raw_dim());
    inner
        .velocity(x.view(), &t, &labels, conditional.view_mut())
        .expect("conditional");
    let mut unconditional = ArrayD::zeros(x.raw_dim());
    let null_labels = Extras::new().with("label", ExtraTensor::labels(&[4; 6]));
    inner
        .velocity(x.view(), &t, &null_labels, unconditional.view_mut())
        .expect("unconditional");

    for w in [0.0, 0.5, 3.0] {
        let guided = Guided::new(inner.clone(), w, null.clone()).expect("guided");
        let calls_before = inner.calls.load(Ordering::SeqCst);
        let rows_before = inner.rows.load(Ordering::SeqCst);
        let mut got = ArrayD::zeros(x.raw_dim());
        guided
            .velocity(x.view(), &t, &labels, got.view_mut())
            .expect("guided velocity");
        assert_eq!(
            inner.calls.load(Ordering::SeqCst) - calls_before,
            1,
            "one batched call"
        );
        let rows = inner.rows.load(Ordering::SeqCst) - rows_before;
        assert_eq!(rows, if w == 0.0 { 6 } else { 12 });
        let want =
            conditional.mapv(|c| (1.0 + w as f32) * c) - unconditional.mapv(|u| w as f32 * u);
        assert!(max_abs_diff(&got, &want) < 1e-5, "w = {w}");
    }
}

/// A guided field reuses its call buffers between calls: calls of other batch
/// sizes in between, and calls from several threads at once, give the same
/// bits as a lone call on a fresh field.
#[test]
fn guided_calls_reuse_buffers_without_mixing_calls() {
    let inner = Arc::new(LabelledMixture::new(builtin("cosine")));
    let null = Guided::null_label("label", 4);
    let lone = |n: usize, seed: u64| {
        let fresh = Guided::new(inner.clone(), 1.5, null.clone()).expect("guided");
        let x = random_points(n, seed);
        let labels: Vec<i64> = (0..n as i64).map(|i| i % 4).collect();
        let extras = Extras::new().with("label", ExtraTensor::labels(&labels));
        let mut v = ArrayD::zeros(x.raw_dim());
        fresh
            .velocity(x.view(), &[0.6], &extras, v.view_mut())
            .expect("velocity");
        (x, extras, v)
    };
    let cases: Vec<_> = [(5, 1), (2, 2), (9, 3), (5, 4)]
        .into_iter()
        .map(|(n, seed)| lone(n, seed))
        .collect();
    let shared = Guided::new(inner.clone(), 1.5, null.clone()).expect("guided");
    for round in 0..3 {
        for (k, (x, extras, want)) in cases.iter().enumerate() {
            let mut got = ArrayD::zeros(x.raw_dim());
            shared
                .velocity(x.view(), &[0.6], extras, got.view_mut())
                .expect("velocity");
            assert_eq!(&got, want, "round {round}, case {k}");
        }
    }
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..20 {
                    for (x, extras, want) in &cases {
                        let mut got = ArrayD::zeros(x.raw_dim());
                        shared
                            .velocity(x.view(), &[0.6], extras, got.view_mut())
                            .expect("velocity");
                        assert_eq!(&got, want);
                    }
                }
            });
        }
    });
}

/// A guidance interval [a, b]: [0, 1] is plain guidance bit for bit; a sample
/// whose time is outside is the conditional field exactly, velocity, JVP and
/// divergence alike; a call with every time outside costs one plain call.
#[test]
fn guidance_interval_guides_only_inside() {
    let inner = Arc::new(LabelledMixture::new(builtin("cosine")));
    let x = random_points(6, 3);
    let t = [0.1, 0.3, 0.5, 0.7, 0.9, 0.95];
    let labels = Extras::new().with("label", ExtraTensor::labels(&[0, 1, 2, 3, 0, 1]));
    let null = Guided::null_label("label", 4);
    let plain = Guided::new(inner.clone(), 2.0, null.clone()).expect("guided");
    let full = Guided::new(inner.clone(), 2.0, null.clone())
        .and_then(|g| g.with_interval(0.0, 1.0))
        .expect("guided");
    let part = Guided::new(inner.clone(), 2.0, null.clone())
        .and_then(|g| g.with_interval(0.25, 0.75))
        .expect("guided");
    let velocity = |f: &dyn VelocityField, t: &[f64]| {
        let mut out = ArrayD::zeros(x.raw_dim());
        f.velocity(x.view(), t, &labels, out.view_mut())
            .expect("velocity");
        out
    };
    let v = random_points(6, 8);
    let jvp = |f: &dyn VelocityField, t: &[f64]| {
        let mut out = ArrayD::zeros(x.raw_dim());
        f.jvp(x.view(), t, &labels, v.view(), out.view_mut())
            .expect("jvp");
        out
    };
    let div = |f: &dyn VelocityField, t: &[f64]| {
        let mut out = vec![0.0; 6];
        f.divergence(x.view(), t, &labels, &mut out)
            .expect("divergence");
        out
    };
    assert_eq!(velocity(&full, &t), velocity(&plain, &t));
    assert_eq!(jvp(&full, &t), jvp(&plain, &t));
    assert_eq!(div(&full, &t), div(&plain, &t));

    let (vc, jc, dc) = (velocity(&*inner, &t), jvp(&*inner, &t), div(&*inner, &t));
    let (vg, jg, dg) = (velocity(&plain, &t), jvp(&plain, &t), div(&plain, &t));
    let (vp, jp, dp) = (velocity(&part, &t), jvp(&part, &t), div(&part, &t));
    for (i, &ti) in t.iter().enumerate() {
        let inside = (0.25..=0.75).contains(&ti);
        let (want_v, want_j, want_d) = if inside {
            (&vg, &jg, &dg)
        } else {
            (&vc, &jc, &dc)
        };
        assert_eq!(
            vp.index_axis(Axis(0), i),
            want_v.index_axis(Axis(0), i),
            "t = {ti}"
        );
        assert_eq!(
            jp.index_axis(Axis(0), i),
            want_j.index_axis(Axis(0), i),
            "t = {ti}"
        );
        assert_eq!(dp[i], want_d[i], "t = {ti}");
    }
    // Guidance does change the inside rows, so the comparison above has power.
    assert_ne!(vg.index_axis(Axis(0), 2), vc.index_axis(Axis(0), 2));

    // One time for all samples, outside: one plain call of 6 rows.
    let rows_before = inner.rows.load(Ordering::SeqCst);
    assert_eq!(velocity(&part, &[0.9]), velocity(&*inner, &[0.9]));
    assert_eq!(inner.rows.load(Ordering::SeqCst) - rows_before, 12);

    // Bad intervals are errors.
    for (a, b) in [(0.6, 0.4), (f64::NAN, 1.0), (0.0, f64::INFINITY)] {
        assert!(Guided::new(inner.clone(), 2.0, null.clone())
            .and_then(|g| g.with_interval(a, b))
            .is_err());
    }
    // Derivatives follow finite differences across the interval's edge.
    check_derivatives(&part, &x, &t, &labels);
}

#[test]
fn guidance_needs_a_condition() {
    let inner = Arc::new(LabelledMixture::new(builtin("ot")));
    assert!(Guided::new(inner.clone(), 1.0, Extras::new()).is_err());
    assert!(Guided::new(inner.clone(), f64::NAN, Guided::null_label("label", 4)).is_err());
    let guided = Guided::new(inner, 1.0, Guided::null_label("label", 4)).expect("guided");
    let x = random_points(2, 0);
    let mut out = ArrayD::zeros(x.raw_dim());
    match guided.velocity(x.view(), &[0.5], Extras::none(), out.view_mut()) {
        Err(Error::InvalidArgument(message)) => {
            assert!(message.contains("`label`"), "{message}")
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Guided sampling moves samples towards their label's component: with w = 2 the
/// share of samples nearest to their label's mean is at least as high as with w = 0.
#[test]
fn guided_sampling_follows_the_label() {
    let schedule = builtin("ot");
    let inner = Arc::new(LabelledMixture::new(schedule.clone()));
    let labels: Vec<i64> = (0..400).map(|i| i % 4).collect();
    let extras = Extras::new().with("label", ExtraTensor::labels(&labels));
    let share = |w: f64| {
        let guided = Arc::new(
            Guided::new(inner.clone(), w, Guided::null_label("label", 4)).expect("guided"),
        );
        let samples = Sampler::new(
            guided,
            SolverConfig::fixed(Method::Midpoint, fmrt::solver::Steps::Count(40)),
        )
        .with_extras(extras.clone())
        .sample(400, 9)
        .expect("sampling");
        let x = samples
            .x
            .into_dimensionality::<ndarray::Ix2>()
            .expect("2-D");
        let assigned = inner.whole.assign(x.view()).expect("assign");
        assigned
            .iter()
            .zip(&labels)
            .filter(|(a, l)| **a as i64 == **l)
            .count() as f64
            / 400.0
    };
    let plain = share(0.0);
    let guided = share(2.0);
    assert!(
        plain > 0.97,
        "conditional sampling puts {plain} in the right component"
    );
    assert!(
        guided >= plain,
        "guidance lowered the share: {guided} < {plain}"
    );
}

/// A field that outputs the mixture flow's x1- or x0-prediction, with its
/// exact derivatives: m = c·x + d·u is affine in (x, u), and the conversion
/// from a velocity is finite at both ends.
struct AsPrediction {
    inner: Arc<GaussianMixture>,
    path: AffinePath,
    prediction: Prediction,
}

impl AsPrediction {
    fn new(
        inner: Arc<GaussianMixture>,
        schedule: Arc<dyn Schedule>,
        prediction: Prediction,
    ) -> Self {
        Self {
            inner,
            path: AffinePath::new(schedule),
            prediction,
        }
    }
}

impl VelocityField for AsPrediction {
    fn state_shape(&self) -> Option<&[usize]> {
        self.inner.state_shape()
    }

    fn derivatives(&self) -> fmrt::field::Derivatives {
        fmrt::field::Derivatives {
            jvp: true,
            stacked_jvp: false,
            divergence: true,
        }
    }

    fn velocity(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &fmrt::field::Extras,
        out: ArrayViewMutD<'_, f32>,
    ) -> fmrt::Result<()> {
        extras.expect_none("this test field")?;
        let mut u = ArrayD::<f32>::zeros(x.raw_dim());
        self.inner
            .velocity(x.view(), t, Extras::none(), u.view_mut())?;
        self.path
            .from_velocity(self.prediction, u.view(), x, t, out)
    }

    fn jvp(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &fmrt::field::Extras,
        v: ArrayViewD<'_, f32>,
        out: ArrayViewMutD<'_, f32>,
    ) -> fmrt::Result<()> {
        extras.expect_none("this test field")?;
        let mut ju = ArrayD::<f32>::zeros(x.raw_dim());
        self.inner
            .jvp(x, t, Extras::none(), v.view(), ju.view_mut())?;
        self.path
            .from_velocity(self.prediction, ju.view(), v, t, out)
    }

    fn divergence(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &fmrt::field::Extras,
        out: &mut [f64],
    ) -> fmrt::Result<()> {
        extras.expect_none("this test field")?;
        self.inner.divergence(x, t, Extras::none(), out)?;
        let dim = self.inner.dim() as f64;
        for (i, d) in out.iter_mut().enumerate() {
            let ti = if t.len() == 1 { t[0] } else { t[i] };
            let (c, e) =
                self.path
                    .conversion_coefficients(Prediction::Velocity, self.prediction, ti)?;
            *d = dim * c + e * *d;
        }
        Ok(())
    }
}

#[test]
fn predicted_x0_converts_back_to_the_velocity() {
    let schedule = builtin("cosine");
    let field = ring(schedule.clone());
    let predictor = Arc::new(AsPrediction::new(
        field.clone(),
        schedule.clone(),
        Prediction::X0,
    ));
    let adapted = Predicted::new(predictor, schedule, Prediction::X0);
    let x = random_points(32, 4);
    let t: Vec<f64> = (0..32).map(|i| 0.05 + 0.9 * i as f64 / 31.0).collect();
    let diff = max_abs_diff(
        &velocity_of(&adapted, &x, &t),
        &velocity_of(field.as_ref(), &x, &t),
    );
    assert!(diff < 1e-4, "max difference {diff}");
    // At t = 0, α = 0: the model is read at the margin ε, and on noise-like
    // states the velocity is the field's there up to O(ε·Var(x1)·|x|): the
    // ring's variance of 8 makes that about 0.04 at ε = 1e-3 (the samples
    // above it are far closer, since the bias lasts only for a time ε).
    let noise = x.mapv(|v| v / 3.0);
    let at_zero = velocity_of(&adapted, &noise, &[0.0]);
    let diff = max_abs_diff(&at_zero, &velocity_of(field.as_ref(), &noise, &[0.0]));
    println!("x0 prediction at t = 0: max difference {diff:e}");
    assert!(diff < 6e-2, "max difference at t = 0: {diff}");
}

/// x1- and x0-predicting versions of the mixture flow sample like the flow
/// itself with methods that evaluate the singular end (dopri5, rk4) and one
/// that does not (midpoint), and give its exact log-density.
#[test]
fn predicted_fields_work_at_their_singular_ends() {
    let ot = builtin("ot");
    let field = ring(ot.clone());
    for prediction in [Prediction::X1, Prediction::X0] {
        let predictor = Arc::new(AsPrediction::new(field.clone(), ot.clone(), prediction));
        let adapted: Arc<dyn VelocityField> =
            Arc::new(Predicted::new(predictor, ot.clone(), prediction));
        for solver in [
            SolverConfig::adaptive(Method::Dopri5, 1e-5, 1e-5),
            SolverConfig::fixed(Method::Rk4, fmrt::solver::Steps::Count(100)),
            SolverConfig::fixed(Method::Midpoint, fmrt::solver::Steps::Count(200)),
        ] {
            let a = Sampler::new(adapted.clone(), solver.clone())
                .sample(400, 8)
                .unwrap();
            let b = Sampler::new(field.clone(), solver.clone())
                .sample(400, 8)
                .unwrap();
            let diff = max_abs_diff(&a.x, &b.x);
            println!(
                "{prediction} {:?}: max |adapted - flow| = {diff:e}",
                solver.method
            );
            assert!(diff <= 2e-3, "{prediction} {:?}: {diff}", solver.method);
        }
        let data = Sampler::new(
            field.clone(),
            SolverConfig::adaptive(Method::Dopri5, 1e-6, 1e-6),
        )
        .sample(200, 9)
        .unwrap()
        .x;
        let exact = field
            .log_density(data.view().into_dimensionality().unwrap(), &[1.0])
            .unwrap();
        let got = fmrt::likelihood::Likelihood::new(
            adapted.clone(),
            SolverConfig::adaptive(Method::Dopri5, 1e-6, 1e-6),
        )
        .log_likelihood(data.view())
        .unwrap()
        .log_p;
        let mae = got
            .iter()
            .zip(&exact)
            .map(|(a, b)| (a - b).abs())
            .sum::<f64>()
            / 200.0;
        println!("{prediction}: log p mean absolute error {mae:e}");
        assert!(mae <= 2e-4, "{prediction}: log p MAE {mae:e}");
    }
}

// ---------------------------------------------------------------------------
// Derivatives through the adapters: each adapter is affine in its inner field,
// so its JVP and divergence come from the inner field's.

/// Checks `field`'s JVP against central differences of its velocity along
/// random directions, and its divergence (when it has one) against the trace
/// of its Jacobian from JVPs along the basis directions.
fn check_derivatives(field: &dyn VelocityField, x: &ArrayD<f32>, t: &[f64], extras: &Extras) {
    assert!(field.derivatives().jvp);
    let (n, d) = (x.shape()[0], x.shape()[1]);
    let v = random_points(n, 99).mapv(|e| e / 3.0);
    let mut jv = ArrayD::zeros(x.raw_dim());
    field
        .jvp(x.view(), t, extras, v.view(), jv.view_mut())
        .expect("jvp");
    let eps = 3e-3f32;
    let (mut plus, mut minus) = (ArrayD::zeros(x.raw_dim()), ArrayD::zeros(x.raw_dim()));
    let xp = x + &v.mapv(|e| e * eps);
    let xm = x - &v.mapv(|e| e * eps);
    field
        .velocity(xp.view(), t, extras, plus.view_mut())
        .unwrap();
    field
        .velocity(xm.view(), t, extras, minus.view_mut())
        .unwrap();
    let fd = (plus - minus).mapv(|e| e / (2.0 * eps));
    let scale = 1.0 + fd.iter().fold(0.0f32, |m, e| m.max(e.abs()));
    let err = max_abs_diff(&jv, &fd) / scale;
    println!("JVP vs finite differences (ε = {eps}): relative error {err:e}");
    // The difference's truncation error is O(ε²) (≈ 1e-3 here for the x1/x0
    // conversions, whose coefficients grow like 1/σ); a wrong JVP is off by O(1).
    assert!(
        err <= 5e-3,
        "JVP vs finite differences: relative error {err:e}"
    );

    // The trace from basis JVPs.
    let mut trace = vec![0.0f64; n];
    for k in 0..d {
        let mut e = ArrayD::<f32>::zeros(x.raw_dim());
        e.index_axis_mut(Axis(1), k).fill(1.0);
        let mut je = ArrayD::zeros(x.raw_dim());
        field
            .jvp(x.view(), t, extras, e.view(), je.view_mut())
            .unwrap();
        for (i, tr) in trace.iter_mut().enumerate() {
            *tr += f64::from(je[[i, k]]);
        }
    }
    if field.derivatives().divergence {
        let mut div = vec![0.0; n];
        field
            .divergence(x.view(), t, extras, &mut div)
            .expect("divergence");
        for (a, b) in div.iter().zip(&trace) {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "divergence {a} vs trace {b}"
            );
        }
    }
}

/// Gives a field stacked Jacobian–vector products
/// ([`VelocityField::velocity_and_jvps`]) made of its own velocity and JVP
/// calls, so that an adapter around it must pass the stacked call through.
struct Stacking(Arc<dyn VelocityField>);

impl VelocityField for Stacking {
    fn state_shape(&self) -> Option<&[usize]> {
        self.0.state_shape()
    }

    fn derivatives(&self) -> fmrt::field::Derivatives {
        fmrt::field::Derivatives {
            jvp: true,
            stacked_jvp: true,
            divergence: false,
        }
    }

    fn velocity(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        out: ArrayViewMutD<'_, f32>,
    ) -> fmrt::Result<()> {
        self.0.velocity(x, t, extras, out)
    }

    fn jvp(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        v: ArrayViewD<'_, f32>,
        out: ArrayViewMutD<'_, f32>,
    ) -> fmrt::Result<()> {
        self.0.jvp(x, t, extras, v, out)
    }

    fn velocity_and_jvps(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        v: ArrayViewD<'_, f32>,
        velocity: ArrayViewMutD<'_, f32>,
        mut products: ArrayViewMutD<'_, f32>,
    ) -> fmrt::Result<()> {
        self.0.velocity(x.view(), t, extras, velocity)?;
        for (v_p, products_p) in v.outer_iter().zip(products.outer_iter_mut()) {
            self.0.jvp(x.view(), t, extras, v_p, products_p)?;
        }
        Ok(())
    }
}

/// Checks that `field` passes stacked calls through: its
/// `velocity_and_jvps` gives its own velocity and JVPs along 3 directions.
fn check_stacked(field: &dyn VelocityField, x: &ArrayD<f32>, t: &[f64], extras: &Extras) {
    assert!(field.derivatives().stacked_jvp, "the stacked call is lost");
    let directions = 3;
    let mut stacked_shape = vec![directions];
    stacked_shape.extend_from_slice(x.shape());
    let v = ArrayD::from_shape_vec(
        stacked_shape,
        (0..directions)
            .flat_map(|p| random_points(x.shape()[0], 40 + p as u64).into_iter())
            .collect(),
    )
    .expect("directions");
    let mut velocity = ArrayD::zeros(x.raw_dim());
    let mut products = ArrayD::zeros(v.raw_dim());
    field
        .velocity_and_jvps(
            x.view(),
            t,
            extras,
            v.view(),
            velocity.view_mut(),
            products.view_mut(),
        )
        .expect("stacked call");
    let mut expected = ArrayD::zeros(x.raw_dim());
    field
        .velocity(x.view(), t, extras, expected.view_mut())
        .unwrap();
    assert!(max_abs_diff(&velocity, &expected) <= 1e-5);
    for p in 0..directions {
        field
            .jvp(
                x.view(),
                t,
                extras,
                v.index_axis(Axis(0), p),
                expected.view_mut(),
            )
            .unwrap();
        let got = products.index_axis(Axis(0), p).to_owned();
        let err = max_abs_diff(&got, &expected);
        assert!(err <= 1e-5, "direction {p}: stacked vs separate {err:e}");
    }
    // A direction tensor of the wrong shape is an error, not a panic.
    let mut wrong = ArrayD::zeros(x.raw_dim());
    let r = field.velocity_and_jvps(
        x.view(),
        t,
        extras,
        x.view(),
        velocity.view_mut(),
        wrong.view_mut(),
    );
    assert!(matches!(r, Err(Error::Shape { .. })), "{r:?}");
}

fn interior_times(n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| 0.1 + 0.8 * i as f64 / (n - 1) as f64)
        .collect()
}

#[test]
fn predicted_fields_have_the_derivatives_of_their_conversion() {
    let ot = builtin("ot");
    // The mixture's output read as an x1 or an x0 prediction defines a field
    // u = a·x + b·m whose derivatives follow from the mixture's.
    for prediction in [Prediction::X1, Prediction::X0] {
        let field = Predicted::new(ring(ot.clone()), ot.clone(), prediction);
        assert!(field.derivatives().divergence);
        let x = random_points(12, 4);
        check_derivatives(&field, &x, &interior_times(12), &Extras::new());
        let stacking = Predicted::new(Arc::new(Stacking(ring(ot.clone()))), ot.clone(), prediction);
        check_stacked(&stacking, &x, &interior_times(12), &Extras::new());
    }
}

#[test]
fn guided_fields_have_the_derivatives_of_both_halves() {
    let inner = Arc::new(LabelledMixture::new(builtin("cosine")));
    let labels = Extras::new().with("label", ExtraTensor::labels(&[0, 1, 2, 3, 0, 1, 2, 3]));
    for w in [0.0, 1.5] {
        let guided = Guided::new(inner.clone(), w, Guided::null_label("label", 4)).unwrap();
        let x = random_points(8, 5);
        check_derivatives(&guided, &x, &interior_times(8), &labels);
        let stacking = Guided::new(
            Arc::new(Stacking(inner.clone())),
            w,
            Guided::null_label("label", 4),
        )
        .unwrap();
        check_stacked(&stacking, &x, &interior_times(8), &labels);
    }
}

#[test]
fn schedule_changed_fields_have_the_derivatives_of_the_time_map() {
    let ot = builtin("ot");
    let field = ScheduleChange::new(ring(ot.clone()), ot, builtin("cosine"));
    let x = random_points(10, 6);
    check_derivatives(&field, &x, &interior_times(10), &Extras::new());
    // The whole chain: prediction, then guidance, then a schedule change.
    let cosine = builtin("cosine");
    let inner = Arc::new(LabelledMixture::new(cosine.clone()));
    let chain = ScheduleChange::new(
        Arc::new(Guided::new(inner, 2.0, Guided::null_label("label", 4)).unwrap()),
        cosine,
        builtin("ot"),
    );
    let labels = Extras::new().with("label", ExtraTensor::labels(&[3, 2, 1, 0, 3, 2]));
    check_derivatives(&chain, &random_points(6, 7), &interior_times(6), &labels);

    // Stacked calls pass through a schedule change, alone and in the chain.
    let ot = builtin("ot");
    let stacking = ScheduleChange::new(Arc::new(Stacking(ring(ot.clone()))), ot, builtin("cosine"));
    check_stacked(&stacking, &x, &interior_times(10), &Extras::new());
    let cosine = builtin("cosine");
    let inner = Arc::new(Stacking(Arc::new(LabelledMixture::new(cosine.clone()))));
    let chain = ScheduleChange::new(
        Arc::new(Guided::new(inner, 2.0, Guided::null_label("label", 4)).unwrap()),
        cosine,
        builtin("ot"),
    );
    check_stacked(&chain, &random_points(6, 7), &interior_times(6), &labels);
}

#[test]
fn adapters_check_times_and_shapes_instead_of_panicking() {
    // A schedule change called with no time, or 2 times for 3 samples, used
    // to index past the end of its time maps.
    let inner = ring(builtin("ot"));
    let adapters: Vec<(&str, Box<dyn VelocityField>)> = vec![
        (
            "schedule change",
            Box::new(ScheduleChange::new(
                inner.clone(),
                builtin("ot"),
                builtin("cosine"),
            )),
        ),
        (
            "predicted",
            Box::new(Predicted::new(inner.clone(), builtin("ot"), Prediction::X1)),
        ),
        (
            "guided",
            Box::new(
                Guided::new(inner.clone(), 1.0, Guided::null_label("label", 4)).expect("guided"),
            ),
        ),
        (
            "clock",
            Box::new(
                fmrt::field::adapt::Clock::new(
                    inner.clone(),
                    fmrt::field::adapt::TimeDirection::Reversed,
                    1000.0,
                    Prediction::Velocity,
                )
                .expect("clock"),
            ),
        ),
    ];
    let x = random_points(3, 1);
    let labels = Extras::new().with("label", ExtraTensor::labels(&[0, 1, 2]));
    for (name, field) in &adapters {
        for t in [&[][..], &[0.1, 0.2][..], &[0.1, 0.2, 0.3, 0.4][..]] {
            let mut out = ArrayD::<f32>::zeros(x.raw_dim());
            let r = field.velocity(x.view(), t, &labels, out.view_mut());
            assert!(
                matches!(&r, Err(Error::Shape { tensor, .. }) if tensor == "t"),
                "{name}, {} times: {r:?}",
                t.len()
            );
            // The derivatives check the times before indexing them too.
            let mut div = vec![0.0; 3];
            let r = field.divergence(x.view(), t, &labels, &mut div);
            assert!(
                matches!(&r, Err(Error::Shape { tensor, .. }) if tensor == "t")
                    || matches!(&r, Err(Error::Unsupported { .. })),
                "{name} divergence, {} times: {r:?}",
                t.len()
            );
            let v = x.clone();
            let r = field.jvp(x.view(), t, &labels, v.view(), out.view_mut());
            assert!(
                matches!(&r, Err(Error::Shape { tensor, .. }) if tensor == "t")
                    || matches!(&r, Err(Error::Unsupported { .. })),
                "{name} jvp, {} times: {r:?}",
                t.len()
            );
        }
        let mut out = ArrayD::<f32>::zeros(x.raw_dim());
        let r = field.velocity(x.view(), &[f64::NAN], &labels, out.view_mut());
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{name}: {r:?}");
        let mut short = ArrayD::<f32>::zeros(ndarray::IxDyn(&[2, 2]));
        let r = field.velocity(x.view(), &[0.5], &labels, short.view_mut());
        assert!(
            matches!(&r, Err(Error::Shape { tensor, .. }) if tensor == "out"),
            "{name}: {r:?}"
        );
        let scalar = ArrayD::<f32>::zeros(ndarray::IxDyn(&[]));
        let mut out = scalar.clone();
        let r = field.velocity(scalar.view(), &[0.5], &labels, out.view_mut());
        assert!(
            matches!(&r, Err(Error::Shape { tensor, .. }) if tensor == "x"),
            "{name}: {r:?}"
        );
    }
}

/// A user-written affine adapter: ū(x, t) = 0.5·x + 2·m(x/2, t²).
struct HalfAndDouble;

impl fmrt::field::adapt::AffineMaps for HalfAndDouble {
    fn map_at(&self, t: f64) -> fmrt::Result<fmrt::field::adapt::AffineMap> {
        Ok(fmrt::field::adapt::AffineMap {
            t: t * t,
            s: 2.0,
            a: 0.5,
            b: 2.0,
        })
    }
}

/// The one affine adapter's velocity, JVP and divergence against its
/// definition on the mixture's closed form, for a map of the caller's own.
#[test]
fn an_affine_map_of_ones_own_has_the_derivatives_of_its_definition() {
    let ot = builtin("ot");
    let inner = ring(ot);
    let field = fmrt::field::adapt::Affine::from_maps(inner.clone(), HalfAndDouble);
    assert_eq!(field.derivatives(), inner.derivatives());
    let x = random_points(5, 11);
    let v = random_points(5, 12);
    let t = [0.1, 0.3, 0.5, 0.7, 0.9];
    let inner_t: Vec<f64> = t.iter().map(|t| t * t).collect();
    let half = x.mapv(|x| x / 2.0);

    let m = velocity_of(inner.as_ref(), &half, &inner_t);
    let expect = &x * 0.5 + &m * 2.0;
    let got = velocity_of(&field, &x, &t);
    assert!(max_abs_diff(&got, &expect) < 1e-5);

    let mut jm = ArrayD::zeros(x.raw_dim());
    inner
        .jvp(
            half.view(),
            &inner_t,
            Extras::none(),
            v.view(),
            jm.view_mut(),
        )
        .unwrap();
    let expect = &v * 0.5 + &jm * 1.0; // (b/s) = 1
    let mut got = ArrayD::zeros(x.raw_dim());
    field
        .jvp(x.view(), &t, Extras::none(), v.view(), got.view_mut())
        .unwrap();
    assert!(max_abs_diff(&got, &expect) < 1e-5);

    let mut dm = [0.0; 5];
    inner
        .divergence(half.view(), &inner_t, Extras::none(), &mut dm)
        .unwrap();
    let mut got = [0.0; 5];
    field
        .divergence(x.view(), &t, Extras::none(), &mut got)
        .unwrap();
    for (g, d) in got.iter().zip(dm) {
        assert!((g - (2.0 * 0.5 + d)).abs() < 1e-9, "{g} vs {}", 1.0 + d);
    }
}

/// An unconditional field given a conditioning input refuses it by name
/// instead of dropping it.
#[test]
fn an_unconditional_field_refuses_extras_by_name() {
    let field = ring(builtin("ot"));
    let x = random_points(2, 4);
    let extras = Extras::new().with("label", ExtraTensor::labels(&[1, 2]));
    let mut out = ArrayD::zeros(x.raw_dim());
    match field.velocity(x.view(), &[0.5], &extras, out.view_mut()) {
        Err(Error::Extra { input, .. }) => assert_eq!(input, "label"),
        other => panic!("expected an extras error, got {other:?}"),
    }
}

/// Guidance spreads a conditioning input of one row over the batch, as an
/// unguided call does: the same velocity as the label repeated per sample.
#[test]
fn guidance_spreads_a_one_row_condition_over_the_batch() {
    let inner = Arc::new(LabelledMixture::new(builtin("cosine")));
    let guided = Guided::new(inner, 1.5, Guided::null_label("label", 4)).expect("guided");
    let x = random_points(3, 8);
    let t = [0.2, 0.5, 0.8];
    let one = Extras::new().with("label", ExtraTensor::labels(&[2]));
    let each = Extras::new().with("label", ExtraTensor::labels(&[2, 2, 2]));
    let mut spread = ArrayD::zeros(x.raw_dim());
    guided
        .velocity(x.view(), &t, &one, spread.view_mut())
        .expect("one row for all");
    let mut repeated = ArrayD::zeros(x.raw_dim());
    guided
        .velocity(x.view(), &t, &each, repeated.view_mut())
        .expect("one row each");
    assert_eq!(spread, repeated);
}

/// Guidance keeps the paired conditional and null rows between the calls
/// of a solve, by the extras' identity: changed extras (a new set, or the
/// same set changed in place) are paired anew, never served stale.
#[test]
fn guidance_pairs_changed_extras_anew() {
    let inner = Arc::new(LabelledMixture::new(builtin("cosine")));
    let guided = Guided::new(inner.clone(), 2.0, Guided::null_label("label", 4)).expect("guided");
    let x = random_points(3, 9);
    let t = [0.3];
    let run = |field: &Guided, extras: &Extras| {
        let mut out = ArrayD::zeros(x.raw_dim());
        field
            .velocity(x.view(), &t, extras, out.view_mut())
            .expect("guided velocity");
        out
    };
    let fresh = |extras: &Extras| {
        let field = Guided::new(inner.clone(), 2.0, Guided::null_label("label", 4)).unwrap();
        run(&field, extras)
    };
    let mut labels = Extras::new().with("label", ExtraTensor::labels(&[0, 1, 2]));
    let first = run(&guided, &labels);
    assert_eq!(first, run(&guided, &labels), "the same extras twice");
    assert_eq!(
        first,
        run(&guided, &labels.clone()),
        "a clone is the same contents"
    );
    labels.insert("label", ExtraTensor::labels(&[3, 3, 3]));
    let changed = run(&guided, &labels);
    assert_ne!(changed, first);
    assert_eq!(changed, fresh(&labels), "changed in place");
    let other = Extras::new().with("label", ExtraTensor::labels(&[1, 0, 1]));
    assert_eq!(run(&guided, &other), fresh(&other), "another set");
}
