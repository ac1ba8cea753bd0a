//! Two-sample statistics shared by the statistical tests.

use ndarray::ArrayView2;

/// Sliced 1-Wasserstein distance between two equally sized point sets: the mean
/// over `directions` of the W1 distance of the 1-D projections (computed
/// exactly by sorting).
///
/// W1 rather than W2: with well separated components, W2 is dominated by the
/// binomial noise of the occupancies (a little mass carried across the ring),
/// which hides errors in the shape of each component; W1 weighs both alike.
///
/// The directions are a fixed, evenly spread set in 2-D (angles k·π/n) and
/// deterministic pseudo-random unit vectors in higher dimensions, so the
/// statistic itself involves no randomness.
pub fn sliced_wasserstein(
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    directions: usize,
) -> f64 {
    assert_eq!(a.nrows(), b.nrows(), "sliced Wasserstein needs equal sizes");
    assert_eq!(a.ncols(), b.ncols());
    let dim = a.ncols();
    let mut total = 0.0;
    for k in 0..directions {
        let dir = direction(k, directions, dim);
        let mut pa = project(a, &dir);
        let mut pb = project(b, &dir);
        pa.sort_by(f64::total_cmp);
        pb.sort_by(f64::total_cmp);
        let w1: f64 = pa.iter().zip(&pb).map(|(x, y)| (x - y).abs()).sum::<f64>() / pa.len() as f64;
        total += w1;
    }
    total / directions as f64
}

fn project(points: ArrayView2<'_, f32>, dir: &[f64]) -> Vec<f64> {
    points
        .rows()
        .into_iter()
        .map(|row| row.iter().zip(dir).map(|(&x, d)| f64::from(x) * d).sum())
        .collect()
}

fn direction(k: usize, n: usize, dim: usize) -> Vec<f64> {
    if dim == 2 {
        let angle = std::f64::consts::PI * k as f64 / n as f64;
        return vec![angle.cos(), angle.sin()];
    }
    // A fixed low-discrepancy-ish sequence: components from a simple hash.
    let mut v: Vec<f64> = (0..dim)
        .map(|i| {
            let h = ((k * 7919 + i * 104_729 + 1) as f64 * 0.618_033_988_749_895).fract();
            2.0 * h - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// The energy distance 2·E|X−Y| − E|X−X'| − E|Y−Y'| between two point sets
/// (V-statistic; O(n·m) pairs, so keep the sets to a few thousand points).
pub fn energy_distance(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) -> f64 {
    let mean_distance = |p: ArrayView2<'_, f32>, q: ArrayView2<'_, f32>| {
        let mut total = 0.0;
        for u in p.rows() {
            for v in q.rows() {
                total += u
                    .iter()
                    .zip(v.iter())
                    .map(|(x, y)| f64::from(x - y).powi(2))
                    .sum::<f64>()
                    .sqrt();
            }
        }
        total / (p.nrows() * q.nrows()) as f64
    };
    2.0 * mean_distance(a, b) - mean_distance(a, a) - mean_distance(b, b)
}

/// Fresh two-moons data with the generator of `examples/train/two_moons.py`:
/// moon m ~ Bernoulli(½), θ ~ U(0, π), e ~ N(0, I); m = 0 gives
/// p = (cos θ, sin θ) + 0.07·e, m = 1 gives p = (1 − cos θ, 0.5 − sin θ) + 0.07·e;
/// then x = ((p₁ − 0.5)/0.87, (p₂ − 0.25)/0.5).
pub fn two_moons(n: usize, seed: u64) -> ndarray::Array2<f32> {
    let mut rng = fmrt::random::SeededRng::new(seed);
    let mut x = ndarray::Array2::<f32>::zeros((n, 2));
    for mut row in x.rows_mut() {
        let upper = rng.uniform() < 0.5;
        let theta = std::f64::consts::PI * rng.uniform();
        let (e1, e2) = (rng.normal(), rng.normal());
        let (p1, p2) = if upper {
            (theta.cos() + 0.07 * e1, theta.sin() + 0.07 * e2)
        } else {
            (1.0 - theta.cos() + 0.07 * e1, 0.5 - theta.sin() + 0.07 * e2)
        };
        row[0] = ((p1 - 0.5) / 0.87) as f32;
        row[1] = ((p2 - 0.25) / 0.5) as f32;
    }
    x
}
