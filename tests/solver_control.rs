//! Step-size controllers of the adaptive methods: names, tolerances met by
//! both, and the PI controller's damping of rejections where stability
//! limits the step.

use fmrt::solver::{
    solve, AdaptiveOptions, Controller, Interval, Method, OdeSystem, Solution, SolverConfig,
};
use fmrt::{Error, Result};
use ndarray::{array, Array2, ArrayView2, ArrayViewMut2};

const ADAPTIVE: [Method; 3] = [Method::Bosh3, Method::Dopri5, Method::Tsit5];

#[test]
fn controllers_by_name_and_default() {
    assert_eq!(AdaptiveOptions::default().controller, Controller::PI);
    assert_eq!(Controller::default(), Controller::PI);
    for controller in Controller::ALL {
        assert_eq!(
            Controller::from_name(controller.name()).unwrap(),
            controller
        );
        let upper = controller.to_string().to_uppercase();
        assert_eq!(upper.parse::<Controller>().unwrap(), controller);
    }
    assert_eq!(" i ".parse::<Controller>().unwrap(), Controller::I);
    assert_eq!("Pi".parse::<Controller>().unwrap(), Controller::PI);
    assert!(matches!(
        Controller::from_name("pid"),
        Err(Error::InvalidArgument(m)) if m.contains("`pid`") && m.contains("pi")
    ));
}

/// y' = −cos(t)·y + J·y (J the plane rotation generator):
/// y(t) = exp(−sin t)·R(t)·y(0).
struct Wobble;

impl OdeSystem for Wobble {
    fn rhs(
        &mut self,
        t: &[f64],
        y: ArrayView2<'_, f64>,
        mut dy: ArrayViewMut2<'_, f64>,
    ) -> Result<()> {
        for ((&t, y), mut dy) in t.iter().zip(y.rows()).zip(dy.rows_mut()) {
            let a = -t.cos();
            dy[0] = a * y[0] - y[1];
            dy[1] = y[0] + a * y[1];
        }
        Ok(())
    }
}

fn adaptive(method: Method, tol: f64, controller: Controller) -> SolverConfig {
    SolverConfig::adaptive_with(
        method,
        AdaptiveOptions {
            rtol: tol,
            atol: tol,
            controller,
            ..AdaptiveOptions::default()
        },
    )
}

#[test]
fn both_controllers_meet_the_tolerance() {
    const T: f64 = 2.0;
    let y0 = array![[1.0, 0.0], [0.5, -2.0], [0.0, 0.1]];
    let interval = Interval::Common { start: 0.0, end: T };
    let decay = (-T.sin()).exp();
    let (s, c) = T.sin_cos();
    let exact = Array2::from_shape_fn(y0.raw_dim(), |(i, j)| {
        let (a, b) = (y0[[i, 0]], y0[[i, 1]]);
        decay * if j == 0 { c * a - s * b } else { s * a + c * b }
    });
    for method in ADAPTIVE {
        for controller in Controller::ALL {
            let mut previous = f64::INFINITY;
            for tol in [1e-4, 1e-6, 1e-8, 1e-10] {
                let config = adaptive(method, tol, controller);
                let sol = solve(&mut Wobble, y0.view(), &config, &interval, &[]).unwrap();
                let err = (&sol.y - &exact).iter().fold(0.0f64, |m, v| m.max(v.abs()));
                println!(
                    "{method} {controller} tol {tol:e}: error {err:.3e}, {:?}",
                    sol.stats
                );
                assert!(
                    err <= 10.0 * tol,
                    "{method} {controller} at tol {tol:e}: error {err:e}"
                );
                assert!(err < previous, "{method} {controller}: tighter must help");
                previous = err;
            }
        }
    }
}

/// y' = −500·(y − cos t): after a fast transient the step of an explicit
/// method is limited by stability, not accuracy.
struct Relaxation;

impl OdeSystem for Relaxation {
    fn rhs(
        &mut self,
        t: &[f64],
        y: ArrayView2<'_, f64>,
        mut dy: ArrayViewMut2<'_, f64>,
    ) -> Result<()> {
        for ((&t, y), mut dy) in t.iter().zip(y.rows()).zip(dy.rows_mut()) {
            dy[0] = -500.0 * (y[0] - t.cos());
        }
        Ok(())
    }
}

#[test]
fn the_pi_controller_damps_rejections_where_stability_limits_the_step() {
    let interval = Interval::Common {
        start: 0.0,
        end: 2.0,
    };
    let y0 = Array2::zeros((1, 1));
    let l: f64 = 500.0;
    let exact = (l * l * 2f64.cos() + l * 2f64.sin()) / (l * l + 1.0)
        - l * l / (l * l + 1.0) * (-2.0 * l).exp();
    for method in [Method::Dopri5, Method::Tsit5] {
        let run = |controller| -> Solution {
            let config = adaptive(method, 1e-3, controller);
            solve(&mut Relaxation, y0.view(), &config, &interval, &[]).unwrap()
        };
        let (i, pi) = (run(Controller::I), run(Controller::PI));
        println!("{method}: I {:?}, PI {:?}", i.stats, pi.stats);
        // The I controller alternates between growing past the stability
        // limit and being rejected; PI remembers the last error and settles.
        assert!(i.stats.rejected >= 20, "{method}: I {:?}", i.stats);
        assert!(
            pi.stats.rejected * 10 <= i.stats.rejected,
            "{method}: PI {:?} vs I {:?}",
            pi.stats,
            i.stats
        );
        assert!(pi.stats.nfe < i.stats.nfe, "{method}");
        for sol in [&i, &pi] {
            let err = (sol.y[[0, 0]] - exact).abs();
            assert!(err < 1e-2, "{method}: error {err:e}");
        }
    }
}

/// `d` columns at rest beside one oscillating column y' = 20·cos(20·t),
/// y(t) = sin(20·t); optionally with the error norm split before the last
/// column.
struct Padded {
    d: usize,
    groups: Vec<usize>,
}

impl OdeSystem for Padded {
    fn rhs(
        &mut self,
        t: &[f64],
        _y: ArrayView2<'_, f64>,
        mut dy: ArrayViewMut2<'_, f64>,
    ) -> Result<()> {
        for (&t, mut dy) in t.iter().zip(dy.rows_mut()) {
            dy.fill(0.0);
            dy[self.d] = 20.0 * (20.0 * t).cos();
        }
        Ok(())
    }

    fn norm_groups(&self) -> &[usize] {
        &self.groups
    }
}

/// Column groups give a small group its own tolerance: split off, the
/// oscillating column meets its tolerance beside 255 columns at rest in
/// every error-norm mode; as one of 256 in one RMS its error grows by about
/// the dilution √256 = 16 raised to the method's order over its order + 1.
#[test]
fn column_groups_keep_a_small_group_within_its_own_tolerance() {
    use fmrt::solver::ErrorNorm;
    let d = 255;
    let y0 = Array2::<f64>::zeros((2, d + 1));
    let exact = 20.0f64.sin();
    for norm in ErrorNorm::ALL {
        let config = SolverConfig::adaptive_with(
            Method::Dopri5,
            AdaptiveOptions {
                rtol: 1e-6,
                atol: 1e-6,
                norm,
                ..AdaptiveOptions::default()
            },
        );
        let run = |groups: Vec<usize>| {
            let mut system = Padded { d, groups };
            let solution = solve(
                &mut system,
                y0.view(),
                &config,
                &Interval::Common {
                    start: 0.0,
                    end: 1.0,
                },
                &[],
            )
            .expect("solves");
            let error = (solution.y[[0, d]] - exact).abs();
            (error, solution.stats.nfe)
        };
        let (split, split_nfe) = run(vec![d]);
        let (whole, whole_nfe) = run(Vec::new());
        println!(
            "{norm}: error with groups {split:.2e} ({split_nfe} NFE), one RMS {whole:.2e} \
             ({whole_nfe} NFE)"
        );
        assert!(split < 2e-5, "{norm}: {split:e}");
        assert!(split * 5.0 < whole, "{norm}: {split:e} vs {whole:e}");
        assert!(split_nfe > whole_nfe);
    }
    // Invalid splits are refused by name.
    for groups in [vec![0], vec![d + 1], vec![3, 3]] {
        let mut system = Padded { d, groups };
        let config = SolverConfig::adaptive(Method::Dopri5, 1e-6, 1e-6);
        let interval = Interval::Common {
            start: 0.0,
            end: 1.0,
        };
        let err = solve(&mut system, y0.view(), &config, &interval, &[]).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains("column groups")),
            "{err}"
        );
    }
    // Fixed steps ignore them.
    let mut system = Padded { d, groups: vec![0] };
    let fixed = SolverConfig::fixed(Method::Rk4, fmrt::solver::Steps::Count(4));
    let interval = Interval::Common {
        start: 0.0,
        end: 1.0,
    };
    assert!(solve(&mut system, y0.view(), &fixed, &interval, &[]).is_ok());
}
