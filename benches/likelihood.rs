//! Likelihood overhead benchmark.
//!
//! On the 16-D Gaussian-mixture field at batch 256, for each divergence mode it
//! measures the bare field calls one stage makes (the velocity on B rows plus
//! the derivative call: an exact divergence on B rows, JVPs on B·P rows, or
//! velocities on 2·B·P rows) and the likelihood solve with RK4 and 20 steps.
//! The ratio (solve time per NFE) / (bare calls per stage) is the overhead
//! factor of the augmented system, the probe bookkeeping and the solver (1
//! would mean all of it is free). The analytic field is far cheaper than a
//! network, so this is a worst case. Medians of repeated runs; nothing is
//! asserted.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use fmrt::field::analytic::GaussianMixture;
use fmrt::field::VelocityField;
use fmrt::likelihood::{Divergence, Likelihood};
use fmrt::random::SeededRng;
use fmrt::scheduler::Scheduler;
use fmrt::solver::{Method, SolverConfig, Steps};
use ndarray::{Array2, ArrayD, ArrayViewD, ArrayViewMutD, IxDyn};

const BATCH: usize = 256;
const DIM: usize = 16;
const REPEATS: usize = 7;

/// The mixture without its exact divergence, so `Exact` takes the JVP path.
struct JvpOnly(Arc<GaussianMixture>);

impl VelocityField for JvpOnly {
    fn state_shape(&self) -> Option<&[usize]> {
        self.0.state_shape()
    }

    fn derivatives(&self) -> fmrt::field::Derivatives {
        fmrt::field::Derivatives {
            jvp: true,
            stacked_jvp: false,
            divergence: false,
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
        self.0.velocity(x, t, fmrt::field::Extras::none(), out)
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
        self.0.jvp(x, t, fmrt::field::Extras::none(), v, out)
    }
}

fn median_secs(mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..REPEATS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[REPEATS / 2]
}

/// The median time of one velocity call on `rows` rows.
fn velocity_time(field: &GaussianMixture, rows: usize) -> f64 {
    let x = ArrayD::<f32>::from_elem(IxDyn(&[rows, DIM]), 0.3);
    let mut out = ArrayD::<f32>::zeros(IxDyn(&[rows, DIM]));
    median_secs(|| {
        field
            .velocity(
                x.view(),
                &[0.5],
                fmrt::field::Extras::none(),
                out.view_mut(),
            )
            .expect("velocity");
        black_box(&out);
    })
}

fn main() {
    let ot = Arc::new(Scheduler::builtin("ot", &[]).expect("ot"));
    let mut rng = SeededRng::new(16);
    let means = Array2::from_shape_simple_fn((4, DIM), || 1.5 * rng.normal());
    let field = Arc::new(
        GaussianMixture::new(
            &[1.0, 2.0, 1.5, 0.5],
            means.view(),
            &[0.5, 0.8, 1.0, 0.6],
            ot,
        )
        .expect("mixture"),
    );
    let data = field.sample_data(BATCH, 1).into_dyn();
    let solver = SolverConfig::fixed(Method::Rk4, Steps::Count(20));

    let bare_velocity = velocity_time(&field, BATCH);
    let x = ArrayD::<f32>::from_elem(IxDyn(&[BATCH, DIM]), 0.3);
    let mut div = vec![0.0; BATCH];
    let bare_divergence = median_secs(|| {
        field
            .divergence(x.view(), &[0.5], fmrt::field::Extras::none(), &mut div)
            .expect("divergence");
        black_box(&div);
    });
    let jvp_time = |rows: usize| {
        let x = ArrayD::<f32>::from_elem(IxDyn(&[rows, DIM]), 0.3);
        let v = ArrayD::<f32>::from_elem(IxDyn(&[rows, DIM]), 1.0);
        let mut out = ArrayD::<f32>::zeros(IxDyn(&[rows, DIM]));
        median_secs(|| {
            field
                .jvp(
                    x.view(),
                    &[0.5],
                    fmrt::field::Extras::none(),
                    v.view(),
                    out.view_mut(),
                )
                .expect("jvp");
            black_box(&out);
        })
    };

    let jvp_field: Arc<dyn VelocityField> = Arc::new(JvpOnly(field.clone()));
    let cases: Vec<(&str, Arc<dyn VelocityField>, Divergence, f64)> = vec![
        (
            "exact (field divergence)",
            field.clone(),
            Divergence::Exact,
            bare_divergence,
        ),
        (
            "exact (basis JVPs, B·D rows)",
            jvp_field.clone(),
            Divergence::Exact,
            jvp_time(BATCH * DIM),
        ),
        (
            "Hutchinson, 1 probe",
            jvp_field.clone(),
            Divergence::hutchinson(1),
            jvp_time(BATCH),
        ),
        (
            "Hutchinson, 8 probes",
            jvp_field.clone(),
            Divergence::hutchinson(8),
            jvp_time(8 * BATCH),
        ),
        (
            "finite differences (basis)",
            jvp_field,
            Divergence::finite_difference(1e-3),
            velocity_time(&field, 2 * BATCH * DIM),
        ),
    ];
    println!("likelihood, 16-D mixture, batch {BATCH}, RK4 × 20 steps");
    println!(
        "{:<30} {:>12} {:>14} {:>10}",
        "mode", "solve (ms)", "bare/stage (µs)", "overhead"
    );
    for (name, f, divergence, derivative) in cases {
        let lik = Likelihood::new(f, solver.clone()).with_divergence(divergence);
        let mut nfe = 0;
        let solve = median_secs(|| {
            let result = lik.log_likelihood(data.view()).expect("likelihood");
            nfe = result.stats.nfe;
            black_box(&result);
        });
        let bare = bare_velocity + derivative;
        println!(
            "{name:<30} {:>12.3} {:>14.1} {:>10.2}",
            solve * 1e3,
            bare * 1e6,
            solve / (nfe as f64 * bare)
        );
    }
}
