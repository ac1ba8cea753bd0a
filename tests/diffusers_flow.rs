//! diffusers' flow-mode schedulers (`dpmpp2m`, `unipc`) and the
//! `diffusers-flow` grid: the final states of diffusers 0.42 itself (golden
//! tensors from `tests/fixtures/make_diffusers_goldens.py`), the σ lists,
//! the order of convergence on a non-uniform grid, and the refusal of bad
//! input.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fmrt::error::ErrorKind;
use fmrt::field::analytic::GaussianMixture;
use fmrt::field::onnx::OnnxField;
use fmrt::grid::{steps_for, DiffusersFlowGrid, TimeGrid};
use fmrt::sampler::Sampler;
use fmrt::solver::{solve, Interval, Method, MethodKind, OdeSystem, SolverConfig, Steps};
use fmrt::Result;
use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2, Ix2};
use ndarray_npy::ReadNpyExt;

use crate::path::schedules::Ot;

const FLOW: [Method; 2] = [Method::Dpmpp2m, Method::Unipc];

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/diffusers")
        .join(name)
}

fn read<T: ndarray_npy::ReadableElement, D: ndarray::Dimension>(
    name: &str,
) -> ndarray::Array<T, D> {
    let file = std::fs::File::open(golden(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    ndarray::Array::<T, D>::read_npy(file).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn shift(k: f64) -> Vec<(String, f64)> {
    vec![("shift".to_string(), k)]
}

/// max |a − b| / (1 + max |b|).
fn relative(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) -> f64 {
    let diff = a
        .iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    diff / (1.0 + b.iter().map(|v| v.abs()).fold(0.0, f64::max))
}

fn stem(method: Method, steps: usize, k: f64) -> String {
    format!("{method}_n{steps}_shift{k}")
}

#[test]
fn the_preset_builds_diffusers_sigma_lists() {
    for method in FLOW {
        for steps in [10, 20] {
            for k in [1.0, 3.0] {
                let name = stem(method, steps, k);
                let sigmas: Array1<f64> = read(&format!("{name}_sigmas.npy"));
                let grid = DiffusersFlowGrid::with_params(&shift(k)).unwrap();
                let Steps::Grid(times) = grid.steps(method, steps).unwrap() else {
                    panic!("a grid")
                };
                assert_eq!(times.len(), sigmas.len(), "{name}");
                for (t, s) in times.iter().zip(&sigmas) {
                    assert!((t - (1.0 - s)).abs() <= 1e-12, "{name}: {t} vs 1 − {s}");
                }
                // The name resolves to the same list.
                let named = steps_for("diffusers-flow", &shift(k), method, steps).unwrap();
                assert_eq!(named, Steps::Grid(times), "{name}");
            }
        }
    }
    // The two schedulers' lists differ: DPM-Solver++ starts at σ = S(0.999),
    // UniPC at 1 − 1e-6.
    let grid = DiffusersFlowGrid::with_params(&shift(3.0)).unwrap();
    let dpm = grid.sigmas(Method::Dpmpp2m, 20).unwrap();
    let unipc = grid.sigmas(Method::Unipc, 20).unwrap();
    assert!((dpm[0] - 2.997 / 2.998).abs() < 1e-7, "{}", dpm[0]);
    assert!((unipc[0] - (1.0 - 1e-6)).abs() < 1e-7, "{}", unipc[0]);
    assert_eq!(grid.sigmas(Method::Euler, 20).unwrap(), dpm);
}

#[test]
fn dpmpp2m_and_unipc_reproduce_diffusers_final_states() {
    fmrt::field::onnx::ensure_runtime_for_development(Path::new(env!("CARGO_MANIFEST_DIR")))
        .expect("ONNX Runtime (run scripts/fetch-onnxruntime.sh)");
    let field = Arc::new(
        OnnxField::load_file(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gmm_ot.onnx"),
        )
        .unwrap(),
    );
    let noise: Array2<f32> = read("noise.npy");
    let mut worst: f64 = 0.0;
    for method in FLOW {
        for steps in [10, 20] {
            for k in [1.0, 3.0] {
                let name = stem(method, steps, k);
                let reference: Array2<f64> = read(&format!("{name}_final.npy"));
                let grid = steps_for("diffusers-flow", &shift(k), method, steps).unwrap();
                let sampler = Sampler::new(field.clone(), SolverConfig::fixed(method, grid));
                let got = sampler
                    .sample_from_noise(noise.view().into_dyn(), &[])
                    .unwrap();
                assert_eq!(got.stats.nfe, steps, "{name}: one call per step");
                let x = got.x.into_dimensionality::<Ix2>().unwrap().mapv(f64::from);
                let rel = relative(x.view(), reference.view());
                eprintln!("{name}: max |Δ| / (1 + max |ref|) = {rel:.2e}");
                assert!(rel <= 1e-5, "{name}: relative difference {rel:e}");
                worst = worst.max(rel);
            }
        }
    }
    eprintln!("worst relative difference against diffusers: {worst:.2e}");
}

/// The exact velocity of a 2-D mixture on the straight path, in f64.
struct Mixture(GaussianMixture);

impl OdeSystem for Mixture {
    fn rhs(&mut self, t: &[f64], y: ArrayView2<'_, f64>, dy: ArrayViewMut2<'_, f64>) -> Result<()> {
        self.0.velocity_into_f64(y, t, dy)
    }
}

fn mixture() -> Mixture {
    Mixture(GaussianMixture::ring(8, 4.0, 0.3, Arc::new(Ot)).unwrap())
}

fn start() -> Array2<f64> {
    // Fixed points of moderate size (a deterministic spread, no RNG).
    Array2::from_shape_fn((16, 2), |(i, j)| {
        let a = 0.7 * i as f64 + 1.3 * j as f64;
        1.2 * a.sin() + 0.4 * (2.1 * a).cos()
    })
}

fn fitted_order(ns: &[usize], errors: &[f64]) -> f64 {
    let xs: Vec<f64> = ns.iter().map(|&n| (n as f64).ln()).collect();
    let ys: Vec<f64> = errors.iter().map(|e| e.ln()).collect();
    let (mx, my) = (
        xs.iter().sum::<f64>() / xs.len() as f64,
        ys.iter().sum::<f64>() / ys.len() as f64,
    );
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    -sxy / sxx
}

/// Both are second order on the non-uniform shift-3 grid (against a tight
/// dopri5 reference, on the 8-component ring mixture of the fixtures).
/// unipc's corrector gives a clean slope of 2; dpmpp2m approaches 2 from
/// below (its steps in λ = ln(t / (1 − t)) near t = 0 and t = 1 do not
/// shrink with N, which costs it a logarithmic factor: measured local slopes
/// 1.62, 1.72, 1.77 from 320 to 2560 steps), so its slope must stay within
/// 0.3 of 2 and rise with N. A first-order method would show a slope of 1.
#[test]
fn dpmpp2m_and_unipc_converge_at_order_two_on_the_shift_grid() {
    let y0 = start();
    let interval = Interval::Common {
        start: 0.0,
        end: 1.0,
    };
    let tight = SolverConfig::adaptive(Method::Dopri5, 1e-12, 1e-12);
    let reference = solve(&mut mixture(), y0.view(), &tight, &interval, &[])
        .unwrap()
        .y;
    let grid = TimeGrid::builtin("shift", &[("mu".to_string(), 3.0)]).unwrap();
    let ns = [320, 640, 1280, 2560];
    for method in FLOW {
        let errors: Vec<f64> = ns
            .iter()
            .map(|&n| {
                let config = SolverConfig::fixed(method, grid.steps(n).unwrap());
                let y = solve(&mut mixture(), y0.view(), &config, &interval, &[])
                    .unwrap()
                    .y;
                (&y - &reference)
                    .iter()
                    .map(|v| v.abs())
                    .fold(0.0, f64::max)
            })
            .collect();
        let order = fitted_order(&ns, &errors);
        let local: Vec<f64> = errors.windows(2).map(|w| (w[0] / w[1]).log2()).collect();
        eprintln!("{method}: errors {errors:?}, local slopes {local:?}, fitted order {order:.3}");
        let tolerance = if method == Method::Unipc { 0.15 } else { 0.3 };
        assert!(
            (order - 2.0).abs() < tolerance,
            "{method}: order {order}, errors {errors:?}"
        );
        assert!(
            local.windows(2).all(|w| w[1] > w[0] - 0.05),
            "{method}: local slopes {local:?} should approach 2"
        );
    }
}

#[test]
fn flow_solvers_are_fixed_step_and_named() {
    for method in FLOW {
        assert_eq!(method.kind(), MethodKind::FlowMultistep);
        assert!(!method.is_adaptive());
        assert!(method.tableau().is_none());
        assert_eq!(method.name().parse::<Method>().unwrap(), method);
        let err = solve(
            &mut mixture(),
            start().view(),
            &SolverConfig::adaptive(method, 1e-5, 1e-5),
            &Interval::Common {
                start: 0.0,
                end: 1.0,
            },
            &[],
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(err.to_string().contains(method.name()), "{err}");
        assert!(err.to_string().contains("adaptive"), "{err}");
    }
    assert_eq!("UniPC".parse::<Method>().unwrap(), Method::Unipc);
    assert_eq!(" DPMPP2M ".parse::<Method>().unwrap(), Method::Dpmpp2m);
}

#[test]
fn flow_solvers_refuse_intervals_off_the_straight_path() {
    for method in FLOW {
        for (a, b) in [(1.0, 0.0), (-0.5, 1.0), (0.0, 1.5), (0.8, 0.2)] {
            let err = solve(
                &mut mixture(),
                start().view(),
                &SolverConfig::fixed(method, Steps::Count(4)),
                &Interval::Common { start: a, end: b },
                &[],
            )
            .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
            assert!(err.to_string().contains("σ = 1 − t"), "{err}");
        }
    }
}

#[test]
fn bad_diffusers_flow_params_are_refused_naming_them() {
    for (name, value) in [
        ("shift", 0.0),
        ("shift", -3.0),
        ("shift", f64::NAN),
        ("shift", f64::INFINITY),
        ("train_steps", 1.0),
        ("train_steps", 999.5),
        ("mu", 3.0),
    ] {
        let err = steps_for(
            "diffusers-flow",
            &[(name.to_string(), value)],
            Method::Dpmpp2m,
            10,
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(err.to_string().contains(name), "{name} = {value}: {err}");
    }
    let err = steps_for("diffusers-flow", &[], Method::Unipc, 0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
}

#[test]
fn flow_solvers_evaluate_once_per_step_save_states_and_handle_edge_cases() {
    let y0 = start();
    let interval = Interval::Common {
        start: 0.0,
        end: 1.0,
    };
    for method in FLOW {
        for n in [1, 2, 3, 7] {
            let config = SolverConfig::fixed(method, Steps::Count(n));
            // Saving on the grid changes nothing, and the saved end is the result.
            let plain = solve(&mut mixture(), y0.view(), &config, &interval, &[]).unwrap();
            let saves = [0.0, 0.5, 1.0, 0.3];
            let with = solve(&mut mixture(), y0.view(), &config, &interval, &saves).unwrap();
            assert_eq!(plain.stats.nfe, n, "{method} {n}");
            assert_eq!(plain.y, with.y, "{method} {n}");
            assert_eq!(with.saved.index_axis(ndarray::Axis(0), 0), y0);
            assert_eq!(with.saved.index_axis(ndarray::Axis(0), 2), with.y);
            assert!(with.saved.iter().all(|v| v.is_finite()));
        }
        // A single step is Euler.
        let one = solve(
            &mut mixture(),
            y0.view(),
            &SolverConfig::fixed(method, Steps::Count(1)),
            &interval,
            &[],
        )
        .unwrap();
        let euler = solve(
            &mut mixture(),
            y0.view(),
            &SolverConfig::fixed(Method::Euler, Steps::Count(1)),
            &interval,
            &[],
        )
        .unwrap();
        assert!(relative(one.y.view(), euler.y.view()) < 1e-14, "{method}");
        // Per-sample intervals equal solving each sample alone; an empty
        // batch and a zero-length interval are fine.
        let starts = vec![0.0, 0.2, 0.5, 0.1];
        let ends = vec![1.0, 0.9, 1.0, 0.1];
        let y4 = y0.slice(ndarray::s![0..4, ..]).to_owned();
        let config = SolverConfig::fixed(method, Steps::Count(6));
        let all = solve(
            &mut mixture(),
            y4.view(),
            &config,
            &Interval::PerSample {
                starts: starts.clone(),
                ends: ends.clone(),
            },
            &[],
        )
        .unwrap();
        for i in 0..4 {
            let alone = solve(
                &mut mixture(),
                y4.slice(ndarray::s![i..i + 1, ..]),
                &config,
                &Interval::Common {
                    start: starts[i],
                    end: ends[i],
                },
                &[],
            )
            .unwrap();
            assert_eq!(all.y.row(i), alone.y.row(0), "{method} sample {i}");
        }
        assert_eq!(all.y.row(3), y4.row(3), "zero-length interval");
        let empty = Array2::<f64>::zeros((0, 2));
        let out = solve(&mut mixture(), empty.view(), &config, &interval, &[]).unwrap();
        assert_eq!(out.y.nrows(), 0);
    }
}
