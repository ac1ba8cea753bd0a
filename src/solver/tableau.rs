//! Explicit Runge–Kutta methods as data: Butcher tableaus with named
//! constructors, each citing its source, validated when built.

use crate::{Error, Result};

/// Tolerance of the consistency checks made by [`ButcherTableau::new`]
/// (coefficients published to ~16 digits sum correctly to about 1e-15).
const CONSISTENCY_TOL: f64 = 1e-12;

/// The Butcher tableau of an explicit Runge–Kutta method.
///
/// One step of size `h` from `y` computes the stages
/// `k_i = f(s + c_i·h, y + h·Σ_{j<i} a_ij·k_j)` and the new state
/// `y + h·Σ b_i·k_i`. An embedded pair adds weights `b̂` of a lower order whose
/// difference from `b` estimates the local error. Dense output, when present,
/// replaces `b_i` by polynomials `b_i(θ)` for the state at `s + θ·h`.
#[derive(Clone, Debug, PartialEq)]
pub struct ButcherTableau {
    name: &'static str,
    /// Row `i` holds `a_i0 … a_i(i−1)` (strictly lower triangular).
    a: Vec<Vec<f64>>,
    b: Vec<f64>,
    c: Vec<f64>,
    order: usize,
    /// `b − b̂` and the order of `b̂`.
    error: Option<(Vec<f64>, usize)>,
    /// `dense[i][m]` is the coefficient of `θ^(m+1)` in `b_i(θ)`.
    dense: Option<Vec<Vec<f64>>>,
    fsal: bool,
}

impl ButcherTableau {
    /// Builds and validates a tableau.
    ///
    /// `a` is given row by row, row `i` holding its `i` entries left of the
    /// diagonal. `embedded` is `(b̂, order of b̂)`. `dense[i]` holds the
    /// coefficients of `θ, θ², …` in the dense-output weight `b_i(θ)`.
    ///
    /// Checks: matching lengths, finite coefficients, `c_0 = 0`, each row sum of
    /// `A` equal to `c_i`, `Σ b = Σ b̂ = 1`, `b_i(1) = b_i`, and
    /// `0 < order(b̂) < order`. Whether the method is "first same as last" (its
    /// last stage is evaluated at the new state, so it serves as the next
    /// step's first stage) is detected from the coefficients.
    pub fn new(
        name: &'static str,
        a: Vec<Vec<f64>>,
        b: Vec<f64>,
        c: Vec<f64>,
        order: usize,
        embedded: Option<(Vec<f64>, usize)>,
        dense: Option<Vec<Vec<f64>>>,
    ) -> Result<Self> {
        let bad = |msg: String| Error::InvalidArgument(format!("tableau {name}: {msg}"));
        let s = b.len();
        if s == 0 {
            return Err(bad("no stages".into()));
        }
        if a.len() != s || c.len() != s {
            return Err(bad(format!(
                "{s} weights but {} rows of A and {} nodes",
                a.len(),
                c.len()
            )));
        }
        if order == 0 {
            return Err(bad("order must be at least 1".into()));
        }
        let all_finite = a
            .iter()
            .flatten()
            .chain(&b)
            .chain(&c)
            .all(|v| v.is_finite());
        if !all_finite {
            return Err(bad("non-finite coefficient".into()));
        }
        if c[0] != 0.0 {
            return Err(bad(format!(
                "c_0 = {} but an explicit method needs 0",
                c[0]
            )));
        }
        for (i, row) in a.iter().enumerate() {
            if row.len() != i {
                return Err(bad(format!(
                    "row {i} of A has {} entries, expected {i}",
                    row.len()
                )));
            }
            let sum: f64 = row.iter().sum();
            if (sum - c[i]).abs() > CONSISTENCY_TOL {
                return Err(bad(format!(
                    "row {i} of A sums to {sum}, but c_{i} = {}",
                    c[i]
                )));
            }
        }
        let sum_b: f64 = b.iter().sum();
        if (sum_b - 1.0).abs() > CONSISTENCY_TOL {
            return Err(bad(format!("weights b sum to {sum_b}, not 1")));
        }
        let error = match embedded {
            None => None,
            Some((b_hat, hat_order)) => {
                if b_hat.len() != s {
                    return Err(bad(format!(
                        "{} embedded weights for {s} stages",
                        b_hat.len()
                    )));
                }
                if !b_hat.iter().all(|v| v.is_finite()) {
                    return Err(bad("non-finite embedded weight".into()));
                }
                let sum_hat: f64 = b_hat.iter().sum();
                if (sum_hat - 1.0).abs() > CONSISTENCY_TOL {
                    return Err(bad(format!("embedded weights sum to {sum_hat}, not 1")));
                }
                if hat_order == 0 || hat_order >= order {
                    return Err(bad(format!(
                        "embedded order {hat_order} must lie in 1..{order}"
                    )));
                }
                let e = b.iter().zip(&b_hat).map(|(x, y)| x - y).collect();
                Some((e, hat_order))
            }
        };
        if let Some(dense) = &dense {
            if dense.len() != s {
                return Err(bad(format!(
                    "{} dense polynomials for {s} stages",
                    dense.len()
                )));
            }
            for (i, poly) in dense.iter().enumerate() {
                if !poly.iter().all(|v| v.is_finite()) {
                    return Err(bad("non-finite dense-output coefficient".into()));
                }
                let at_one: f64 = poly.iter().sum();
                if (at_one - b[i]).abs() > CONSISTENCY_TOL {
                    return Err(bad(format!("dense weight b_{i}(1) = {at_one} ≠ b_{i}")));
                }
            }
        }
        let last = s - 1;
        let fsal = s > 1 && c[last] == 1.0 && b[last] == 0.0 && a[last][..] == b[..last];
        Ok(Self {
            name,
            a,
            b,
            c,
            order,
            error,
            dense,
            fsal,
        })
    }

    /// Forward Euler: one stage, order 1.
    pub fn euler() -> Self {
        Self::builtin("euler", vec![vec![]], vec![1.0], vec![0.0], 1, None, None)
    }

    /// The explicit midpoint rule, order 2 (Runge 1895; Hairer, Nørsett &
    /// Wanner, *Solving ODEs I*, §II.1).
    pub fn midpoint() -> Self {
        Self::builtin(
            "midpoint",
            vec![vec![], vec![0.5]],
            vec![0.0, 1.0],
            vec![0.0, 0.5],
            2,
            None,
            None,
        )
    }

    /// Heun's method (explicit trapezoidal rule), order 2 (Heun 1900; Hairer,
    /// Nørsett & Wanner, *Solving ODEs I*, §II.1).
    pub fn heun() -> Self {
        Self::builtin(
            "heun",
            vec![vec![], vec![1.0]],
            vec![0.5, 0.5],
            vec![0.0, 1.0],
            2,
            None,
            None,
        )
    }

    /// The classic fourth-order method (Kutta 1901).
    pub fn rk4() -> Self {
        Self::builtin(
            "rk4",
            vec![vec![], vec![0.5], vec![0.0, 0.5], vec![0.0, 0.0, 1.0]],
            vec![1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0],
            vec![0.0, 0.5, 0.5, 1.0],
            4,
            None,
            None,
        )
    }

    /// Bogacki–Shampine 3(2), first same as last. P. Bogacki and
    /// L. F. Shampine, "A 3(2) pair of Runge–Kutta formulas", *Appl. Math.
    /// Lett.* 2(4), 321–325, 1989.
    pub fn bosh3() -> Self {
        Self::builtin(
            "bosh3",
            vec![
                vec![],
                vec![0.5],
                vec![0.0, 0.75],
                vec![2.0 / 9.0, 1.0 / 3.0, 4.0 / 9.0],
            ],
            vec![2.0 / 9.0, 1.0 / 3.0, 4.0 / 9.0, 0.0],
            vec![0.0, 0.5, 0.75, 1.0],
            3,
            Some((vec![7.0 / 24.0, 0.25, 1.0 / 3.0, 0.125], 2)),
            None,
        )
    }

    /// Dormand–Prince 5(4), first same as last, with its fourth-order
    /// continuous extension. J. R. Dormand and P. J. Prince, "A family of
    /// embedded Runge–Kutta formulae", *J. Comput. Appl. Math.* 6(1), 19–26,
    /// 1980; dense output from Hairer, Nørsett & Wanner, *Solving ODEs I*
    /// (2nd ed.), §II.6 (the `d_i` coefficients of their DOPRI5 code, after
    /// Shampine 1986).
    pub fn dopri5() -> Self {
        let b = [
            35.0 / 384.0,
            0.0,
            500.0 / 1113.0,
            125.0 / 192.0,
            -2187.0 / 6784.0,
            11.0 / 84.0,
            0.0,
        ];
        let b_hat = vec![
            5179.0 / 57600.0,
            0.0,
            7571.0 / 16695.0,
            393.0 / 640.0,
            -92097.0 / 339200.0,
            187.0 / 2100.0,
            1.0 / 40.0,
        ];
        let d = [
            -12715105075.0 / 11282082432.0,
            0.0,
            87487479700.0 / 32700410799.0,
            -10690763975.0 / 1880347072.0,
            701980252875.0 / 199316789632.0,
            -1453857185.0 / 822651844.0,
            69997945.0 / 29380423.0,
        ];
        // Hairer's form y(θ) = y0 + θ(Δ + (1−θ)(hk1 − Δ + θ(2Δ − hk1 − hk7 + (1−θ)·h·Σd_i k_i)))
        // with Δ = h·Σ b_i k_i, expanded into one quartic per stage.
        let dense = (0..7)
            .map(|i| {
                let e1 = if i == 0 { 1.0 } else { 0.0 };
                let e7 = if i == 6 { 1.0 } else { 0.0 };
                vec![
                    e1,
                    3.0 * b[i] - 2.0 * e1 - e7 + d[i],
                    -2.0 * b[i] + e1 + e7 - 2.0 * d[i],
                    d[i],
                ]
            })
            .collect();
        Self::builtin(
            "dopri5",
            vec![
                vec![],
                vec![0.2],
                vec![3.0 / 40.0, 9.0 / 40.0],
                vec![44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0],
                vec![
                    19372.0 / 6561.0,
                    -25360.0 / 2187.0,
                    64448.0 / 6561.0,
                    -212.0 / 729.0,
                ],
                vec![
                    9017.0 / 3168.0,
                    -355.0 / 33.0,
                    46732.0 / 5247.0,
                    49.0 / 176.0,
                    -5103.0 / 18656.0,
                ],
                b[..6].to_vec(),
            ],
            b.to_vec(),
            vec![0.0, 0.2, 0.3, 0.8, 8.0 / 9.0, 1.0, 1.0],
            5,
            Some((b_hat, 4)),
            Some(dense),
        )
    }

    /// Tsitouras 5(4), first same as last. Ch. Tsitouras, "Runge–Kutta pairs
    /// of order 5(4) satisfying only the first column simplifying
    /// assumption", *Comput. Math. Appl.* 62(2), 770–775, 2011 (coefficients
    /// to double precision as tabulated there). Its own interpolant is not
    /// included: dense output uses cubic Hermite interpolation.
    pub fn tsit5() -> Self {
        let b = vec![
            0.09646076681806523,
            0.01,
            0.4798896504144996,
            1.379008574103742,
            -3.290069515436081,
            2.324710524099774,
            0.0,
        ];
        // The paper tabulates the error weights b − b̂.
        let e = [
            -0.001_780_011_052_225_777,
            -0.0008164344596567469,
            0.007880878010261995,
            -0.1447110071732629,
            0.5823571654525552,
            -0.45808210592918697,
            1.0 / 66.0,
        ];
        let b_hat = b.iter().zip(e).map(|(b, e)| b - e).collect();
        Self::builtin(
            "tsit5",
            vec![
                vec![],
                vec![0.161],
                vec![-0.008480655492356989, 0.335480655492357],
                vec![2.8971530571054935, -6.359448489975075, 4.3622954328695815],
                vec![
                    5.325864828439257,
                    -11.748883564062828,
                    7.4955393428898365,
                    -0.09249506636175525,
                ],
                vec![
                    5.86145544294642,
                    -12.92096931784711,
                    8.159367898576159,
                    -0.071584973281401,
                    -0.028269050394068383,
                ],
                b[..6].to_vec(),
            ],
            b,
            vec![0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0],
            5,
            Some((b_hat, 4)),
            None,
        )
    }

    /// Builds one of the tableaus above; their coefficients are constants
    /// checked by this module's unit tests, so validation cannot fail.
    fn builtin(
        name: &'static str,
        a: Vec<Vec<f64>>,
        b: Vec<f64>,
        c: Vec<f64>,
        order: usize,
        embedded: Option<(Vec<f64>, usize)>,
        dense: Option<Vec<Vec<f64>>>,
    ) -> Self {
        Self::new(name, a, b, c, order, embedded, dense)
            .unwrap_or_else(|e| unreachable!("built-in {e}"))
    }

    /// The method's short name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The number of stages.
    pub fn stages(&self) -> usize {
        self.b.len()
    }

    /// The order of the main weights `b`.
    pub fn order(&self) -> usize {
        self.order
    }

    /// The order of the embedded weights `b̂`, if any.
    pub fn embedded_order(&self) -> Option<usize> {
        self.error.as_ref().map(|(_, p)| *p)
    }

    /// Row `i` of `A` (its `i` entries left of the diagonal; empty past the
    /// last stage).
    pub fn a(&self, i: usize) -> &[f64] {
        self.a.get(i).map_or(&[], Vec::as_slice)
    }

    /// The weights `b`.
    pub fn b(&self) -> &[f64] {
        &self.b
    }

    /// The nodes `c`.
    pub fn c(&self) -> &[f64] {
        &self.c
    }

    /// The error weights `b − b̂`, if the method has an embedded pair.
    pub fn error_weights(&self) -> Option<&[f64]> {
        self.error.as_ref().map(|(e, _)| e.as_slice())
    }

    /// Whether the last stage is `f` at the new state (first same as last).
    pub fn is_fsal(&self) -> bool {
        self.fsal
    }

    /// Whether the method carries its own dense-output polynomials.
    pub fn has_dense_output(&self) -> bool {
        self.dense.is_some()
    }

    /// Writes the dense-output weights `b_i(θ)` into `out` (one per stage);
    /// returns `false` (leaving `out` alone) when the method has none.
    pub fn dense_weights(&self, theta: f64, out: &mut [f64]) -> bool {
        let Some(dense) = &self.dense else {
            return false;
        };
        for (w, poly) in out.iter_mut().zip(dense) {
            // Horner on θ·(p0 + θ·(p1 + …)).
            *w = theta * poly.iter().rev().fold(0.0, |acc, p| acc * theta + p);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<ButcherTableau> {
        vec![
            ButcherTableau::euler(),
            ButcherTableau::midpoint(),
            ButcherTableau::heun(),
            ButcherTableau::rk4(),
            ButcherTableau::bosh3(),
            ButcherTableau::dopri5(),
            ButcherTableau::tsit5(),
        ]
    }

    /// Residuals of the order conditions up to order `p ≤ 4` for weights `w`.
    fn order_residuals(t: &ButcherTableau, w: &[f64], p: usize) -> Vec<f64> {
        let s = t.stages();
        let c = t.c();
        let mat = |v: &[f64]| -> Vec<f64> {
            (0..s)
                .map(|i| t.a(i).iter().zip(v).map(|(a, x)| a * x).sum())
                .collect()
        };
        let dot = |u: &[f64]| -> f64 { w.iter().zip(u).map(|(a, b)| a * b).sum() };
        let ones = vec![1.0; s];
        let c2: Vec<f64> = c.iter().map(|x| x * x).collect();
        let c3: Vec<f64> = c.iter().map(|x| x * x * x).collect();
        let ac = mat(c);
        let cac: Vec<f64> = c.iter().zip(&ac).map(|(x, y)| x * y).collect();
        let mut r = vec![dot(&ones) - 1.0];
        if p >= 2 {
            r.push(dot(c) - 0.5);
        }
        if p >= 3 {
            r.push(dot(&c2) - 1.0 / 3.0);
            r.push(dot(&ac) - 1.0 / 6.0);
        }
        if p >= 4 {
            r.push(dot(&c3) - 0.25);
            r.push(dot(&cac) - 0.125);
            r.push(dot(&mat(&c2)) - 1.0 / 12.0);
            r.push(dot(&mat(&ac)) - 1.0 / 24.0);
        }
        r
    }

    #[test]
    fn every_tableau_satisfies_its_order_conditions() {
        for t in all() {
            let r = order_residuals(&t, t.b(), t.order().min(4));
            assert!(r.iter().all(|x| x.abs() < 1e-12), "{}: {r:?}", t.name());
            if let Some(e) = t.error_weights() {
                let b_hat: Vec<f64> = t.b().iter().zip(e).map(|(b, e)| b - e).collect();
                let p = t.embedded_order().unwrap();
                let r = order_residuals(&t, &b_hat, p);
                assert!(r.iter().all(|x| x.abs() < 1e-12), "{} b̂: {r:?}", t.name());
                // The embedded weights must not satisfy the next order's
                // conditions, or the error estimate would be useless (checked
                // where those conditions are implemented here).
                if p < 4 {
                    let r = order_residuals(&t, &b_hat, p + 1);
                    assert!(
                        r.iter().any(|x| x.abs() > 1e-6),
                        "{} b̂ too accurate",
                        t.name()
                    );
                }
            }
        }
    }

    #[test]
    fn fsal_and_dense_flags() {
        let flags: Vec<(bool, bool)> = all()
            .iter()
            .map(|t| (t.is_fsal(), t.has_dense_output()))
            .collect();
        let expected = [
            (false, false),
            (false, false),
            (false, false),
            (false, false),
            (true, false),
            (true, true),
            (true, false),
        ];
        assert_eq!(flags, expected);
    }

    #[test]
    fn dopri5_dense_output_interpolates_the_step() {
        let t = ButcherTableau::dopri5();
        let mut w = vec![0.0; 7];
        assert!(t.dense_weights(1.0, &mut w));
        for (x, b) in w.iter().zip(t.b()) {
            assert!((x - b).abs() < 1e-14);
        }
        assert!(t.dense_weights(0.0, &mut w));
        assert!(w.iter().all(|x| *x == 0.0));
        // The dense weights satisfy the quadrature conditions Σ b_i(θ) c_i^k = θ^(k+1)/(k+1)
        // up to order 4.
        for theta in [0.1, 0.37, 0.5, 0.9] {
            t.dense_weights(theta, &mut w);
            for k in 0..4 {
                let lhs: f64 = w.iter().zip(t.c()).map(|(w, c)| w * c.powi(k)).sum();
                let rhs = theta.powi(k + 1) / f64::from(k + 1);
                assert!((lhs - rhs).abs() < 1e-12, "θ={theta} k={k}: {lhs} vs {rhs}");
            }
        }
    }

    #[test]
    fn invalid_tableaus_are_rejected() {
        let bad_row = ButcherTableau::new(
            "x",
            vec![vec![], vec![0.4]],
            vec![0.5, 0.5],
            vec![0.0, 0.5],
            2,
            None,
            None,
        );
        assert!(matches!(bad_row, Err(Error::InvalidArgument(m)) if m.contains("row 1")));
        let bad_b = ButcherTableau::new(
            "x",
            vec![vec![], vec![0.5]],
            vec![0.5, 0.6],
            vec![0.0, 0.5],
            2,
            None,
            None,
        );
        assert!(matches!(bad_b, Err(Error::InvalidArgument(m)) if m.contains("sum to")));
        let bad_shape =
            ButcherTableau::new("x", vec![vec![]], vec![0.5, 0.5], vec![0.0], 1, None, None);
        assert!(bad_shape.is_err());
        let bad_order = ButcherTableau::new(
            "x",
            vec![vec![]],
            vec![1.0],
            vec![0.0],
            1,
            Some((vec![1.0], 1)),
            None,
        );
        assert!(bad_order.is_err());
    }
}
