//! A text histogram of 2-D points, shared by the examples.

use ndarray::ArrayView2;

/// The region a plot shows: x from `x.0` to `x.1`, y from `y.0` to `y.1`.
pub struct Window {
    /// Horizontal range.
    pub x: (f64, f64),
    /// Vertical range.
    pub y: (f64, f64),
}

/// Draws `points` (shape `[N, 2]`) inside `window` as `width` × `height`
/// characters, darker where more points fall (square-root scale).
pub fn density_plot(
    points: ArrayView2<'_, f32>,
    window: &Window,
    width: usize,
    height: usize,
) -> String {
    let mut counts = vec![0usize; width * height];
    for p in points.rows() {
        let col =
            ((f64::from(p[0]) - window.x.0) / (window.x.1 - window.x.0) * width as f64).floor();
        let row =
            ((window.y.1 - f64::from(p[1])) / (window.y.1 - window.y.0) * height as f64).floor();
        if (0.0..width as f64).contains(&col) && (0.0..height as f64).contains(&row) {
            counts[row as usize * width + col as usize] += 1;
        }
    }
    let max = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let shades = [' ', '.', ':', '-', '=', '+', '*', '#', '%', '@'];
    let mut text = String::new();
    for row in 0..height {
        for col in 0..width {
            let c = counts[row * width + col];
            let level = if c == 0 {
                0
            } else {
                1 + ((c as f64 / max).sqrt() * (shades.len() - 2) as f64) as usize
            };
            text.push(shades[level.min(shades.len() - 1)]);
        }
        text.push('\n');
    }
    text
}
