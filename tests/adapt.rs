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
        .velocity(x.view(), t, out.view_mut())
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

/// A schedule change to a schedule whose SNR cannot be reached is an error,
/// not a NaN: VP's σ' is infinite at r = 1.
#[test]
fn schedule_change_reports_singular_times() {
    let change = ScheduleChange::new(ring(builtin("ot")), builtin("ot"), builtin("vp"));
    assert!(change.time_map(0.5).is_ok());
    match change.time_map(1.0) {
        Err(Error::InvalidArgument(message)) => {
            assert!(message.contains("not finite"), "{message}")
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

/// A conditional test field: label k is component k of the mixture alone,
/// label `K` (the null label) the whole mixture. It counts its calls.
struct LabelledMixture {
    components: Vec<GaussianMixture>,
    whole: GaussianMixture,
    calls: AtomicUsize,
    rows: AtomicUsize,
}

impl LabelledMixture {
    fn new(schedule: Arc<dyn Schedule>) -> Self {
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
    fn state_shape(&self) -> &[usize] {
        self.whole.state_shape()
    }

    fn velocity(
        &self,
        _x: ArrayViewD<'_, f32>,
        _t: &[f64],
        _out: ArrayViewMutD<'_, f32>,
    ) -> fmrt::Result<()> {
        Err(Error::field("test field", "needs a label"))
    }

    fn velocity_with(
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
            let field = match usize::try_from(labels[i])
                .ok()
                .and_then(|k| self.components.get(k))
            {
                Some(component) => component,
                None => &self.whole,
            };
            let xi = xi.to_owned().insert_axis(Axis(0));
            let mut oi2 = ArrayD::zeros(xi.raw_dim());
            field.velocity(xi.view(), &ti, oi2.view_mut())?;
            oi.assign(&oi2.index_axis(Axis(0), 0));
        }
        Ok(())
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
        .velocity_with(x.view(), &t, &labels, conditional.view_mut())
        .expect("conditional");
    let mut unconditional = ArrayD::zeros(x.raw_dim());
    let null_labels = Extras::new().with("label", ExtraTensor::labels(&[4; 6]));
    inner
        .velocity_with(x.view(), &t, &null_labels, unconditional.view_mut())
        .expect("unconditional");

    for w in [0.0, 0.5, 3.0] {
        let guided = Guided::new(inner.clone(), w, null.clone()).expect("guided");
        let calls_before = inner.calls.load(Ordering::SeqCst);
        let rows_before = inner.rows.load(Ordering::SeqCst);
        let mut got = ArrayD::zeros(x.raw_dim());
        guided
            .velocity_with(x.view(), &t, &labels, got.view_mut())
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

#[test]
fn guidance_needs_a_condition() {
    let inner = Arc::new(LabelledMixture::new(builtin("ot")));
    assert!(Guided::new(inner.clone(), 1.0, Extras::new()).is_err());
    assert!(Guided::new(inner.clone(), f64::NAN, Guided::null_label("label", 4)).is_err());
    let guided = Guided::new(inner, 1.0, Guided::null_label("label", 4)).expect("guided");
    let x = random_points(2, 0);
    let mut out = ArrayD::zeros(x.raw_dim());
    match guided.velocity(x.view(), &[0.5], out.view_mut()) {
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

/// A field that outputs the x0-prediction of the mixture's flow.
struct X0Predictor {
    inner: Arc<GaussianMixture>,
    path: AffinePath,
}

impl VelocityField for X0Predictor {
    fn state_shape(&self) -> &[usize] {
        self.inner.state_shape()
    }

    fn velocity(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        out: ArrayViewMutD<'_, f32>,
    ) -> fmrt::Result<()> {
        let mut u = ArrayD::<f32>::zeros(x.raw_dim());
        self.inner.velocity(x.view(), t, u.view_mut())?;
        self.path.from_velocity(Prediction::X0, u.view(), x, t, out)
    }
}

#[test]
fn predicted_x0_converts_back_to_the_velocity() {
    let schedule = builtin("cosine");
    let field = ring(schedule.clone());
    let predictor = Arc::new(X0Predictor {
        inner: field.clone(),
        path: AffinePath::new(schedule.clone()),
    });
    let adapted = Predicted::new(predictor, schedule, Prediction::X0);
    let x = random_points(32, 4);
    let t: Vec<f64> = (0..32).map(|i| 0.05 + 0.9 * i as f64 / 31.0).collect();
    let diff = max_abs_diff(
        &velocity_of(&adapted, &x, &t),
        &velocity_of(field.as_ref(), &x, &t),
    );
    assert!(diff < 1e-4, "max difference {diff}");
    // At t = 0, α = 0 and an x0-prediction carries no information about x1.
    let mut out = ArrayD::zeros(x.raw_dim());
    assert!(adapted.velocity(x.view(), &[0.0], out.view_mut()).is_err());
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
    ];
    let x = random_points(3, 1);
    let labels = Extras::new().with("label", ExtraTensor::labels(&[0, 1, 2]));
    for (name, field) in &adapters {
        for t in [&[][..], &[0.1, 0.2][..], &[0.1, 0.2, 0.3, 0.4][..]] {
            let mut out = ArrayD::<f32>::zeros(x.raw_dim());
            let r = field.velocity_with(x.view(), t, &labels, out.view_mut());
            assert!(
                matches!(&r, Err(Error::Shape { tensor, .. }) if tensor == "t"),
                "{name}, {} times: {r:?}",
                t.len()
            );
        }
        let mut out = ArrayD::<f32>::zeros(x.raw_dim());
        let r = field.velocity_with(x.view(), &[f64::NAN], &labels, out.view_mut());
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{name}: {r:?}");
        let mut short = ArrayD::<f32>::zeros(ndarray::IxDyn(&[2, 2]));
        let r = field.velocity_with(x.view(), &[0.5], &labels, short.view_mut());
        assert!(
            matches!(&r, Err(Error::Shape { tensor, .. }) if tensor == "out"),
            "{name}: {r:?}"
        );
        let scalar = ArrayD::<f32>::zeros(ndarray::IxDyn(&[]));
        let mut out = scalar.clone();
        let r = field.velocity_with(scalar.view(), &[0.5], &labels, out.view_mut());
        assert!(
            matches!(&r, Err(Error::Shape { tensor, .. }) if tensor == "x"),
            "{name}: {r:?}"
        );
    }
}
