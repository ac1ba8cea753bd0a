//! `fmrt plot`: samples, 2-D histograms, trajectories, time grids and scheduler
//! coefficients as PNG images, drawn with plotters and an embedded font
//! (DejaVu Sans), so no system fonts are needed.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Once;

use fmrt::grid::TimeGrid;
use fmrt::scheduler::{Schedule, Scheduler};
use ndarray::{ArrayD, Axis};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::args::{PlotArgs, PlotKind};
use crate::failure::{fail, Failure};
use crate::npy;

/// The font family name the embedded font is registered under.
const FONT: &str = "sans-serif";

/// Largest |value| drawn on a scheduler plot; beyond it curves are clipped.
const CLIP: f64 = 4.0;

/// Most trajectories drawn (more would be an unreadable tangle).
const MAX_PATHS: usize = 300;

/// Runs `fmrt plot`.
pub fn run(args: &PlotArgs) -> Result<ExitCode, Failure> {
    check_png(&args.output)?;
    if !(200..=8000).contains(&args.size) {
        return Err(fail!(
            "--size {} is out of range; use 200 to 8000 pixels",
            args.size
        ));
    }
    if !args.params.is_empty() && args.scheduler.is_none() && args.grid.is_none() {
        return Err(fail!("--param needs --scheduler or --grid"));
    }
    if let Some(spec) = &args.grid {
        let grid = TimeGrid::open(spec, &args.params)?;
        let title = args
            .title
            .clone()
            .unwrap_or_else(|| format!("time grid {spec}, {} steps", args.steps));
        grid_png(&grid, args.steps, &title, &args.output, args.size)?;
    } else if let Some(spec) = &args.scheduler {
        let scheduler = Scheduler::open(spec, &args.params)?;
        let title = args
            .title
            .clone()
            .unwrap_or_else(|| format!("scheduler {spec}"));
        scheduler_png(&scheduler, &title, &args.output, args.size)?;
    } else {
        let Some(input) = &args.input else {
            return Err(fail!("fmrt plot needs an input file or --scheduler"));
        };
        let data = npy::read_f32(input)?;
        let kind = args.kind.unwrap_or(if data.ndim() == 3 {
            PlotKind::Trajectory
        } else {
            PlotKind::Scatter
        });
        let title = args.title.clone().unwrap_or_else(|| {
            input
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        });
        data_png(&data, input, kind, &title, &args.output, args.size)?;
    }
    eprintln!("wrote {}", args.output.display());
    Ok(ExitCode::SUCCESS)
}

/// Refuses an output name that does not end in `.png`.
pub fn check_png(path: &Path) -> Result<(), Failure> {
    let ok = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if ok {
        Ok(())
    } else {
        Err(fail!(
            "{}: fmrt plot writes PNG images; use a file name ending in .png",
            path.display()
        ))
    }
}

/// Registers the embedded font once per process.
fn fonts() -> Result<(), Failure> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| "internal error: the embedded font does not load".to_string());
    });
    Ok(result?)
}

/// Draws `data` ([N, D...] samples or [T, N, D...] trajectories) as `kind`.
pub fn data_png(
    data: &ArrayD<f32>,
    input: &Path,
    kind: PlotKind,
    title: &str,
    output: &Path,
    size: u32,
) -> Result<(), Failure> {
    let (paths, dims) = match kind {
        PlotKind::Trajectory => {
            if data.ndim() != 3 {
                return Err(fail!(
                    "{}: holds an array of shape {:?}, expected [T, N, D] trajectories (from fmrt sample --times) for --kind trajectory",
                    input.display(),
                    data.shape()
                ));
            }
            let dims = data.shape()[2];
            let paths: Vec<Vec<(f64, f64)>> = (0..data.shape()[1])
                .map(|i| {
                    data.index_axis(Axis(1), i)
                        .rows()
                        .into_iter()
                        .map(|r| (f64::from(r[0]), f64::from(r.get(1).copied().unwrap_or(0.0))))
                        .collect()
                })
                .collect();
            (paths, dims)
        }
        PlotKind::Scatter | PlotKind::Density => {
            if data.ndim() < 2 {
                return Err(fail!(
                    "{}: holds an array of shape {:?}, expected [N, D] samples with D ≥ 2",
                    input.display(),
                    data.shape()
                ));
            }
            let n = data.shape()[0];
            let dims = data.len() / n.max(1);
            let flat = data
                .to_shape((n, dims))
                .map_err(|e| format!("internal error: {e}"))?;
            let points = flat
                .rows()
                .into_iter()
                .map(|r| vec![(f64::from(r[0]), f64::from(r[1]))])
                .collect();
            (points, dims)
        }
    };
    if dims < 2 {
        return Err(fail!(
            "{}: holds an array of shape {:?}, expected at least 2 values per sample to plot",
            input.display(),
            data.shape()
        ));
    }
    if dims > 2 {
        eprintln!(
            "note: {} has {dims} dimensions per sample; plotting the first two axes (a projection)",
            input.display()
        );
    }
    let finite: Vec<(f64, f64)> = paths
        .iter()
        .flatten()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if finite.is_empty() {
        return Err(fail!("{}: holds no finite points to plot", input.display()));
    }
    let (xr, yr) = bounds(&finite);
    fonts()?;
    let mut buffer = vec![0u8; (size as usize) * (size as usize) * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (size, size)).into_drawing_area();
        let draw = |e: &dyn std::fmt::Display| format!("internal error: drawing failed: {e}");
        root.fill(&WHITE).map_err(|e| draw(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 24))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)
            .map_err(|e| draw(&e))?;
        chart
            .configure_mesh()
            .x_desc("x[0]")
            .y_desc("x[1]")
            .label_style((FONT, 14))
            .draw()
            .map_err(|e| draw(&e))?;
        match kind {
            PlotKind::Scatter => {
                let color = RGBColor(31, 119, 180).mix(0.6).filled();
                chart
                    .draw_series(finite.iter().map(|&p| Circle::new(p, 2, color)))
                    .map_err(|e| draw(&e))?;
            }
            PlotKind::Density => {
                let bins = 60usize;
                let mut counts = vec![0u32; bins * bins];
                let cell = |v: f64, (lo, hi): (f64, f64)| {
                    (((v - lo) / (hi - lo) * bins as f64) as usize).min(bins - 1)
                };
                for &(x, y) in &finite {
                    counts[cell(y, yr) * bins + cell(x, xr)] += 1;
                }
                let max = f64::from(counts.iter().copied().max().unwrap_or(1).max(1));
                let (dx, dy) = ((xr.1 - xr.0) / bins as f64, (yr.1 - yr.0) / bins as f64);
                chart
                    .draw_series(counts.iter().enumerate().filter(|(_, c)| **c > 0).map(
                        |(k, &c)| {
                            let (i, j) = ((k % bins) as f64, (k / bins) as f64);
                            let level = (f64::from(c).ln_1p() / max.ln_1p()).clamp(0.0, 1.0);
                            Rectangle::new(
                                [
                                    (xr.0 + i * dx, yr.0 + j * dy),
                                    (xr.0 + (i + 1.0) * dx, yr.0 + (j + 1.0) * dy),
                                ],
                                ramp(level).filled(),
                            )
                        },
                    ))
                    .map_err(|e| draw(&e))?;
            }
            PlotKind::Trajectory => {
                if paths.len() > MAX_PATHS {
                    eprintln!(
                        "note: drawing the first {MAX_PATHS} of {} trajectories",
                        paths.len()
                    );
                }
                let shown = &paths[..paths.len().min(MAX_PATHS)];
                let line = RGBColor(120, 120, 120).mix(0.35);
                for path in shown {
                    chart
                        .draw_series(LineSeries::new(path.iter().copied(), line))
                        .map_err(|e| draw(&e))?;
                }
                let start = RGBColor(150, 150, 150).filled();
                let end = RGBColor(214, 39, 40).filled();
                chart
                    .draw_series(
                        shown
                            .iter()
                            .filter_map(|p| p.first())
                            .map(|&p| Circle::new(p, 2, start)),
                    )
                    .map_err(|e| draw(&e))?
                    .label("start (t = first time)")
                    .legend(move |(x, y)| Circle::new((x, y), 3, start));
                chart
                    .draw_series(
                        shown
                            .iter()
                            .filter_map(|p| p.last())
                            .map(|&p| Circle::new(p, 2, end)),
                    )
                    .map_err(|e| draw(&e))?
                    .label("end (t = last time)")
                    .legend(move |(x, y)| Circle::new((x, y), 3, end));
                chart
                    .configure_series_labels()
                    .label_font((FONT, 14))
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .draw()
                    .map_err(|e| draw(&e))?;
            }
        }
        root.present().map_err(|e| draw(&e))?;
    }
    write_png(output, &buffer, size, size)
}

/// The size of a work-precision plot: two panels side by side.
const WORK_PRECISION_SIZE: (u32, u32) = (1600, 720);

/// Twelve distinguishable colours (matplotlib's tab10, then black and
/// dark olive), one per method, cycled.
const PALETTE: [RGBColor; 12] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(85, 107, 47),
];

/// Draws the work-precision plot of `table` (`fmrt tune --plot`): the
/// median error of every candidate as a faint dot, and for each method a
/// line through its best grid at each budget, against the calls (left) and
/// against the seconds (right), both axes logarithmic.
pub fn work_precision_png(table: &fmrt::tune::TuneTable, output: &Path) -> Result<(), Failure> {
    check_png(output)?;
    let rows: Vec<_> = table
        .rows
        .iter()
        .filter(|r| r.median.is_finite() && r.median > 0.0)
        .collect();
    if rows.is_empty() {
        return Err(fail!(
            "{}: no candidate has a positive finite error to plot",
            output.display()
        ));
    }
    // For each method (in Method::ALL order), its best row per budget.
    let mut lines: Vec<(fmrt::solver::Method, Vec<&fmrt::tune::TuneRow>)> = Vec::new();
    for method in fmrt::solver::Method::ALL {
        let best: Vec<_> = table
            .budgets
            .iter()
            .filter_map(|&b| {
                rows.iter()
                    .copied()
                    .filter(|r| r.method == method && r.budget == b)
                    .min_by(|x, y| x.median.total_cmp(&y.median))
            })
            .collect();
        if !best.is_empty() {
            lines.push((method, best));
        }
    }
    let span = |values: &mut dyn Iterator<Item = f64>| {
        let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        let (lo, hi) = (lo.max(1e-300), hi.max(1e-300));
        (lo / 1.5, hi * 1.5)
    };
    let errors = span(&mut rows.iter().map(|r| r.median));
    let calls = span(&mut rows.iter().map(|r| r.calls as f64));
    let seconds = span(&mut rows.iter().map(|r| r.seconds.max(1e-7)));
    fonts()?;
    let (width, height) = WORK_PRECISION_SIZE;
    let mut buffer = vec![0u8; (width as usize) * (height as usize) * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        let draw = |e: &dyn std::fmt::Display| format!("internal error: drawing failed: {e}");
        root.fill(&WHITE).map_err(|e| draw(&e))?;
        let root = root
            .titled(
                &format!(
                    "work-precision: median per-sample RMS error against the reference, {} samples",
                    table.samples
                ),
                (FONT, 22),
            )
            .map_err(|e| draw(&e))?;
        let panels = root.split_evenly((1, 2));
        type Pick = fn(&fmrt::tune::TuneRow) -> f64;
        let axes: [(&str, (f64, f64), Pick); 2] = [
            ("network calls", calls, |r| r.calls as f64),
            ("seconds", seconds, |r| r.seconds.max(1e-7)),
        ];
        for (panel, (x_desc, x_range, pick)) in panels.iter().zip(axes) {
            let mut chart = ChartBuilder::on(panel)
                .margin(16)
                .x_label_area_size(44)
                .y_label_area_size(72)
                .build_cartesian_2d(
                    (x_range.0..x_range.1).log_scale(),
                    (errors.0..errors.1).log_scale(),
                )
                .map_err(|e| draw(&e))?;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc("median error")
                // Few labels: a log axis over a decade or two otherwise
                // labels every 1..9 and the labels run into each other.
                .x_labels(6)
                .y_label_formatter(&|v| format!("{v:.0e}"))
                .x_label_formatter(&|v| {
                    if *v >= 1.0 {
                        format!("{v:.0}")
                    } else {
                        format!("{v:.0e}")
                    }
                })
                .label_style((FONT, 14))
                .draw()
                .map_err(|e| draw(&e))?;
            let faint = RGBColor(160, 160, 160).mix(0.5).filled();
            chart
                .draw_series(
                    rows.iter()
                        .map(|r| Circle::new((pick(r), r.median), 2, faint)),
                )
                .map_err(|e| draw(&e))?;
            for (k, (method, best)) in lines.iter().enumerate() {
                let color = PALETTE[k % PALETTE.len()];
                let points: Vec<(f64, f64)> = best.iter().map(|r| (pick(r), r.median)).collect();
                chart
                    .draw_series(LineSeries::new(
                        points.iter().copied(),
                        color.stroke_width(2),
                    ))
                    .map_err(|e| draw(&e))?
                    .label(method.name())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(|e| draw(&e))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font((FONT, 13))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|e| draw(&e))?;
        }
        root.present().map_err(|e| draw(&e))?;
    }
    write_png(output, &buffer, width, height)
}

/// White → dark blue, for histogram levels in [0, 1].
fn ramp(level: f64) -> RGBColor {
    let mix = |a: f64, b: f64| (a + (b - a) * level).round() as u8;
    RGBColor(mix(222.0, 8.0), mix(235.0, 48.0), mix(247.0, 107.0))
}

/// x and y ranges of `points`, padded by 5 % (and never empty).
fn bounds(points: &[(f64, f64)]) -> ((f64, f64), (f64, f64)) {
    let range = |values: &mut dyn Iterator<Item = f64>| {
        let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        let pad = ((hi - lo) * 0.05).max(1e-3);
        (lo - pad, hi + pad)
    };
    (
        range(&mut points.iter().map(|p| p.0)),
        range(&mut points.iter().map(|p| p.1)),
    )
}

/// Draws α, σ, α', σ' of `scheduler` over [0, 1]. Infinite values (endpoint
/// singularities) and values beyond ±[`CLIP`] are clipped to the plot's edge,
/// and the curve's legend entry says so.
pub fn scheduler_png(
    scheduler: &Scheduler,
    title: &str,
    output: &Path,
    size: u32,
) -> Result<(), Failure> {
    let samples = 501;
    let ts: Vec<f64> = (0..samples)
        .map(|i| i as f64 / (samples - 1) as f64)
        .collect();
    let coefficients: Vec<_> = ts.iter().map(|&t| scheduler.coefficients(t)).collect();
    type Pick = fn(&fmrt::scheduler::Coefficients) -> f64;
    let curves: [(&str, Pick, RGBColor); 4] = [
        ("α", |c| c.alpha, RGBColor(31, 119, 180)),
        ("σ", |c| c.sigma, RGBColor(214, 39, 40)),
        ("α'", |c| c.d_alpha, RGBColor(44, 160, 44)),
        ("σ'", |c| c.d_sigma, RGBColor(148, 103, 189)),
    ];
    let mut lo = 0.0f64;
    let mut hi = 1.0f64;
    for (_, pick, _) in &curves {
        for c in &coefficients {
            let v = pick(c);
            if v.is_finite() {
                lo = lo.min(v.max(-CLIP));
                hi = hi.max(v.min(CLIP));
            }
        }
    }
    let pad = (hi - lo) * 0.05;
    let (lo, hi) = (lo - pad, hi + pad);
    fonts()?;
    let mut buffer = vec![0u8; (size as usize) * (size as usize) * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (size, size)).into_drawing_area();
        let draw = |e: &dyn std::fmt::Display| format!("internal error: drawing failed: {e}");
        root.fill(&WHITE).map_err(|e| draw(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 24))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..1.0, lo..hi)
            .map_err(|e| draw(&e))?;
        chart
            .configure_mesh()
            .x_desc("t")
            .label_style((FONT, 14))
            .draw()
            .map_err(|e| draw(&e))?;
        for (name, pick, color) in curves {
            let mut notes = Vec::new();
            let infinite: Vec<f64> = ts
                .iter()
                .zip(&coefficients)
                .filter(|(_, c)| !pick(c).is_finite())
                .map(|(t, _)| *t)
                .collect();
            if let Some(t) = infinite.first() {
                notes.push(format!("infinite at t = {t}"));
            }
            if coefficients
                .iter()
                .any(|c| pick(c).is_finite() && pick(c).abs() > CLIP)
            {
                notes.push(format!("beyond ±{CLIP}"));
            }
            let label = if notes.is_empty() {
                name.to_string()
            } else {
                format!("{name} ({}: clipped)", notes.join(", "))
            };
            // Clip into the drawn range: ±∞ go to the edge, NaN is left out.
            let points: Vec<(f64, f64)> = ts
                .iter()
                .zip(&coefficients)
                .filter(|(_, c)| !pick(c).is_nan())
                .map(|(&t, c)| (t, pick(c).clamp(lo, hi)))
                .collect();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| draw(&e))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| draw(&e))?;
        root.present().map_err(|e| draw(&e))?;
    }
    write_png(output, &buffer, size, size)
}

/// Draws the time grid t(u) over [0, 1], the diagonal t = u for reference,
/// and the points (i/steps, t(i/steps)) where the steps end.
pub fn grid_png(
    grid: &TimeGrid,
    steps: usize,
    title: &str,
    output: &Path,
    size: u32,
) -> Result<(), Failure> {
    let points = grid.points(steps)?;
    let samples = 501;
    let curve: Vec<(f64, f64)> = (0..samples)
        .map(|i| {
            let u = i as f64 / (samples - 1) as f64;
            (u, grid.time(u))
        })
        .collect();
    fonts()?;
    let mut buffer = vec![0u8; (size as usize) * (size as usize) * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (size, size)).into_drawing_area();
        let draw = |e: &dyn std::fmt::Display| format!("internal error: drawing failed: {e}");
        root.fill(&WHITE).map_err(|e| draw(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 24))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..1.0, 0.0..1.0)
            .map_err(|e| draw(&e))?;
        chart
            .configure_mesh()
            .x_desc("u = i / N")
            .y_desc("t")
            .label_style((FONT, 14))
            .draw()
            .map_err(|e| draw(&e))?;
        let grey = RGBColor(170, 170, 170);
        chart
            .draw_series(LineSeries::new(vec![(0.0, 0.0), (1.0, 1.0)], grey))
            .map_err(|e| draw(&e))?
            .label("uniform")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
        let blue = RGBColor(31, 119, 180);
        chart
            .draw_series(LineSeries::new(curve, blue.stroke_width(2)))
            .map_err(|e| draw(&e))?
            .label("t(u)")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(2))
            });
        let red = RGBColor(214, 39, 40);
        chart
            .draw_series(
                points
                    .iter()
                    .enumerate()
                    .map(|(i, &t)| Circle::new((i as f64 / steps as f64, t), 3, red.filled())),
            )
            .map_err(|e| draw(&e))?
            .label(format!("{steps} steps"))
            .legend(move |(x, y)| Circle::new((x + 10, y), 3, red.filled()));
        chart
            .configure_series_labels()
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| draw(&e))?;
        root.present().map_err(|e| draw(&e))?;
    }
    write_png(output, &buffer, size, size)
}

/// Encodes an RGB buffer as PNG through a temporary file renamed into place.
fn write_png(path: &Path, rgb: &[u8], width: u32, height: u32) -> Result<(), Failure> {
    let fail = |e: &dyn std::fmt::Display| format!("{}: cannot write: {e}", path.display());
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".partial");
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let file = std::fs::File::create(&tmp).map_err(|e| fail(&e))?;
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| fail(&e))?;
        writer.write_image_data(rgb).map_err(|e| fail(&e))?;
        writer.finish().map_err(|e| fail(&e))?;
        std::fs::rename(&tmp, path).map_err(|e| fail(&e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(result?)
}
