//! Training curves like the paper's Fig. 3, one figure per transfer, from the run records
//! (`metrics.csv` of every done run): `plots/<source>_<target>.png` and `.svg`, 1800x500,
//! three panels:
//!
//! - (a) source (train) and target (test) accuracy against iteration, lambda = 0 vs lambda > 0,
//!   mean over seeds with a min-max band, plus the authors' released D-CORAL target-accuracy
//!   curve (mean of their Caffe runs) as a dashed line where it exists for the shift;
//! - (b) classification loss and weighted CORAL loss (lambda * l_CORAL) for lambda > 0;
//! - (c) CORAL distance (l_CORAL measured on the fc8 outputs) for lambda = 0 vs lambda > 0, log
//!   scale: without the CORAL term it keeps growing.
//!
//! NaN values (losses before the first step) are skipped.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::canvas::{font, perr, Figure, GREY};
use crate::config::Method;
use crate::experiment::report::{self, DomainShift, Lambda};
use crate::train::metrics::MetricsRow;

/// Figure size in pixels (three 600x500 panels).
pub const SIZE: (u32, u32) = (1800, 500);

/// Mean, min and max over seeds at one iteration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BandPoint {
    pub iteration: f64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

/// Per iteration, the mean, min and max of `value` over `runs`, skipping non-finite values
/// (and, with `positive_only`, values <= 0, for log axes).
pub fn band(runs: &[Vec<MetricsRow>], value: fn(&MetricsRow) -> f64, positive_only: bool) -> Vec<BandPoint> {
    let mut at: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for run in runs {
        for row in run {
            let v = value(row);
            if v.is_finite() && (!positive_only || v > 0.0) {
                at.entry(row.iteration as u64).or_default().push(v);
            }
        }
    }
    at.into_iter()
        .map(|(it, vs)| BandPoint {
            iteration: it as f64,
            mean: vs.iter().sum::<f64>() / vs.len() as f64,
            min: vs.iter().copied().fold(f64::INFINITY, f64::min),
            max: vs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
        .collect()
}

/// The authors' released curves: per shift (`a_w`, ...), the mean target accuracy per
/// iteration over their runs, their lambda and the number of runs.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthorsCurve {
    pub lambda: f64,
    pub runs: usize,
    /// (iteration, mean target accuracy as a fraction)
    pub points: Vec<(f64, f64)>,
}

/// The rows of one shift while reading the authors' curves.
#[derive(Default)]
struct ShiftRows {
    lambda: f64,
    runs: std::collections::BTreeSet<String>,
    /// iteration -> target accuracies over runs
    at: BTreeMap<u64, Vec<f64>>,
}

/// Reads `shift,lambda,run,iter,target_acc` rows into one mean curve per shift.
pub fn read_authors_curves(path: &Path) -> Result<BTreeMap<String, AuthorsCurve>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let headers = reader.headers().with_context(|| format!("reading the header of {}", path.display()))?.clone();
    let col = |name: &str| {
        headers.iter().position(|h| h.trim() == name).with_context(|| {
            format!("{}: no column `{name}` (expected shift,lambda,run,iter,target_acc)", path.display())
        })
    };
    let (c_shift, c_lambda, c_run, c_iter, c_acc) =
        (col("shift")?, col("lambda")?, col("run")?, col("iter")?, col("target_acc")?);
    let mut acc: BTreeMap<String, ShiftRows> = BTreeMap::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.with_context(|| format!("{}: line {line}", path.display()))?;
        let get = |c: usize| record.get(c).unwrap_or("").trim().to_string();
        let num = |c: usize| -> Result<f64> {
            let t = get(c);
            t.parse::<f64>().with_context(|| format!("{}: line {line}: `{t}` is not a number", path.display()))
        };
        let iter = get(c_iter);
        let iter: u64 =
            iter.parse().with_context(|| format!("{}: line {line}: `{iter}` is not an iteration", path.display()))?;
        let entry = acc.entry(get(c_shift)).or_default();
        entry.lambda = num(c_lambda)?;
        entry.runs.insert(get(c_run));
        let a = num(c_acc)?;
        if a.is_finite() {
            entry.at.entry(iter).or_default().push(a);
        }
    }
    Ok(acc
        .into_iter()
        .map(|(shift, ShiftRows { lambda, runs, at })| {
            let points = at.into_iter().map(|(it, v)| (it as f64, v.iter().sum::<f64>() / v.len() as f64)).collect();
            (shift, AuthorsCurve { lambda, runs: runs.len(), points })
        })
        .collect())
}

/// The authors' shift name for a transfer: amazon -> a, dslr -> d, webcam -> w, e.g. `a_w`;
/// `None` for other domains.
pub fn authors_shift(t: &DomainShift) -> Option<String> {
    let short = |d: &str| match d {
        "amazon" => Some("a"),
        "dslr" => Some("d"),
        "webcam" => Some("w"),
        _ => None,
    };
    Some(format!("{}_{}", short(&t.source)?, short(&t.target)?))
}

/// One lambda's curves for a transfer.
#[derive(Debug, Clone)]
pub struct LambdaCurves {
    pub lambda: f64,
    pub seeds: usize,
    pub source_acc: Vec<BandPoint>,
    pub target_acc: Vec<BandPoint>,
    pub class_loss: Vec<BandPoint>,
    pub weighted_coral_loss: Vec<BandPoint>,
    pub coral_distance: Vec<BandPoint>,
}

impl LambdaCurves {
    pub fn from_runs(lambda: f64, runs: &[Vec<MetricsRow>]) -> Self {
        Self {
            lambda,
            seeds: runs.len(),
            source_acc: band(runs, |r| 100.0 * r.source_acc, false),
            target_acc: band(runs, |r| 100.0 * r.target_acc, false),
            class_loss: band(runs, |r| r.class_loss, false),
            weighted_coral_loss: band(runs, |r| r.weighted_coral_loss, false),
            coral_distance: band(runs, |r| r.coral_distance, true),
        }
    }
}

/// Everything one figure shows.
#[derive(Debug, Clone)]
pub struct TransferFigure {
    pub transfer: DomainShift,
    /// Ascending lambda; lambda = 0 first when present.
    pub curves: Vec<LambdaCurves>,
    pub authors: Option<AuthorsCurve>,
}

pub(super) const ZERO_COLOR: RGBColor = RGBColor(214, 39, 40);
pub(super) const ADAPTED_COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

fn lambda_color(curves: &[LambdaCurves], lambda: f64) -> RGBColor {
    if lambda == 0.0 {
        return ZERO_COLOR;
    }
    let k = curves.iter().filter(|c| c.lambda > 0.0).position(|c| Lambda(c.lambda) == Lambda(lambda)).unwrap_or(0);
    ADAPTED_COLORS[k % ADAPTED_COLORS.len()]
}

/// `c` moved a fraction `f` of the way to white.
fn lighten(c: RGBColor, f: f64) -> RGBColor {
    let mix = |v: u8| (v as f64 + (255.0 - v as f64) * f).round() as u8;
    RGBColor(mix(c.0), mix(c.1), mix(c.2))
}

/// Draws one series: the min-max band (when more than one seed) and the mean line, solid or
/// dashed; labels it for the legend.
pub(super) fn draw_band<'a, DB: DrawingBackend + 'a, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    points: &[BandPoint],
    color: RGBColor,
    dashed: bool,
    show_band: bool,
    label: &str,
) -> Result<()>
where
    Y: Ranged<ValueType = f64>,
{
    if points.is_empty() {
        return Ok(());
    }
    if show_band && points.len() > 1 {
        let mut poly: Vec<(f64, f64)> = points.iter().map(|p| (p.iteration, p.max)).collect();
        poly.extend(points.iter().rev().map(|p| (p.iteration, p.min)));
        chart.draw_series(std::iter::once(Polygon::new(poly, color.mix(0.18).filled()))).map_err(perr)?;
    }
    let line: Vec<(f64, f64)> = points.iter().map(|p| (p.iteration, p.mean)).collect();
    let style = color.stroke_width(2);
    if dashed {
        chart.draw_series(DashedLineSeries::new(line, 7, 5, style)).map_err(perr)?.label(label).legend(
            move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (7, 0)], style)
                    + PathElement::new(vec![(12, 0), (19, 0)], style)
            },
        );
    } else {
        chart
            .draw_series(LineSeries::new(line, style))
            .map_err(perr)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 19, y)], style));
    }
    Ok(())
}

fn no_data<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, caption: &str, text: &str) -> Result<()> {
    let area = area.titled(caption, font(20)).map_err(perr)?;
    let (w, h) = area.dim_in_pixel();
    area.draw(&Text::new(text.to_string(), (w as i32 / 2 - 120, h as i32 / 2), font(18).color(&GREY))).map_err(perr)?;
    Ok(())
}

fn lambda_label(lambda: f64) -> String {
    format!("λ = {lambda}")
}

/// Iteration range shared by the panels.
fn x_range(fig: &TransferFigure) -> (f64, f64) {
    let max = fig
        .curves
        .iter()
        .flat_map(|c| [&c.source_acc, &c.target_acc, &c.class_loss, &c.coral_distance])
        .flat_map(|b| b.iter().map(|p| p.iteration))
        .fold(0.0, f64::max);
    (0.0, if max > 0.0 { max } else { 1.0 })
}

fn draw_figure<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, fig: &TransferFigure) -> Result<()> {
    root.fill(&WHITE).map_err(perr)?;
    let root = root.margin(8, 4, 6, 10);
    let t = &fig.transfer;
    let seeds: Vec<String> = fig
        .curves
        .iter()
        .map(|c| format!("{} ({} seed{})", lambda_label(c.lambda), c.seeds, if c.seeds == 1 { "" } else { "s" }))
        .collect();
    let title = format!(
        "{} -> {} ({}): mean over seeds, band = min-max over seeds; {}",
        t.source,
        t.target,
        t.label(),
        seeds.join(", ")
    );
    let root = root.titled(&title, font(22)).map_err(perr)?;
    let panels = root.split_evenly((1, 3));
    let (x0, x1) = x_range(fig);

    // (a) accuracies
    {
        let mut lo = 100.0f64;
        for c in &fig.curves {
            for p in c.source_acc.iter().chain(&c.target_acc) {
                lo = lo.min(p.min);
            }
        }
        if let Some(a) = &fig.authors {
            for (x, y) in &a.points {
                if *x <= x1 {
                    lo = lo.min(100.0 * y);
                }
            }
        }
        let lo = ((lo / 10.0).floor() * 10.0).clamp(0.0, 90.0);
        let mut chart = ChartBuilder::on(&panels[0])
            .caption("(a) accuracy: source (train) and target (test)", font(20))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(58)
            .build_cartesian_2d(x0..x1, lo..100.0)
            .map_err(perr)?;
        draw_mesh(&mut chart, "accuracy (%)", Some(&|v| format!("{v:.0}")))?;
        for c in &fig.curves {
            let color = lambda_color(&fig.curves, c.lambda);
            let l = lambda_label(c.lambda);
            draw_band(&mut chart, &c.target_acc, color, false, true, &format!("target, {l}"))?;
            draw_band(&mut chart, &c.source_acc, lighten(color, 0.5), false, true, &format!("source, {l}"))?;
        }
        if let Some(a) = &fig.authors {
            let pts: Vec<BandPoint> = a
                .points
                .iter()
                .filter(|(x, _)| *x <= x1)
                .map(|&(x, y)| BandPoint { iteration: x, mean: 100.0 * y, min: 100.0 * y, max: 100.0 * y })
                .collect();
            let label = format!("target, authors' Caffe D-CORAL, λ = {} (mean of {})", a.lambda, a.runs);
            draw_band(&mut chart, &pts, BLACK, true, false, &label)?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    }

    // (b) losses with the CORAL term
    let adapted: Vec<&LambdaCurves> = fig.curves.iter().filter(|c| c.lambda > 0.0).collect();
    let has_loss = adapted.iter().any(|c| !c.class_loss.is_empty() || !c.weighted_coral_loss.is_empty());
    if has_loss {
        let hi = adapted
            .iter()
            .flat_map(|c| c.class_loss.iter().chain(&c.weighted_coral_loss))
            .map(|p| p.max)
            .fold(0.0f64, f64::max);
        let hi = if hi > 0.0 { hi * 1.05 } else { 1.0 };
        let mut chart = ChartBuilder::on(&panels[1])
            .caption("(b) training losses with CORAL (λ > 0)", font(20))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(58)
            .build_cartesian_2d(x0..x1, 0.0..hi)
            .map_err(perr)?;
        draw_mesh(&mut chart, "loss", None)?;
        for c in &adapted {
            let color = lambda_color(&fig.curves, c.lambda);
            let l = lambda_label(c.lambda);
            draw_band(&mut chart, &c.class_loss, color, false, true, &format!("classification loss, {l}"))?;
            draw_band(&mut chart, &c.weighted_coral_loss, color, true, true, &format!("λ · CORAL loss, {l}"))?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    } else {
        no_data(&panels[1], "(b) training losses with CORAL (λ > 0)", "no λ > 0 run with losses")?;
    }

    // (c) CORAL distance, log scale
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for c in &fig.curves {
        for p in &c.coral_distance {
            lo = lo.min(p.min);
            hi = hi.max(p.max);
        }
    }
    if hi > 0.0 && lo.is_finite() {
        let lo = 10f64.powf(lo.log10().floor());
        let hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
        let mut chart = ChartBuilder::on(&panels[2])
            .caption("(c) CORAL distance ‖C_S − C_T‖_F (fc8), λ = 0 vs λ > 0", font(20))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, (lo..hi).log_scale())
            .map_err(perr)?;
        draw_mesh(&mut chart, "CORAL distance (log)", Some(&|v| format!("{v:.0e}")))?;
        for c in &fig.curves {
            let color = lambda_color(&fig.curves, c.lambda);
            let what = if c.lambda == 0.0 { "without CORAL loss" } else { "with CORAL loss" };
            draw_band(
                &mut chart,
                &c.coral_distance,
                color,
                false,
                true,
                &format!("{what}, {}", lambda_label(c.lambda)),
            )?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    } else {
        no_data(&panels[2], "(c) CORAL distance (fc8), λ = 0 vs λ > 0", "no positive CORAL distance")?;
    }
    root.present().map_err(perr)?;
    Ok(())
}

/// The legend box every panel shares, at `position`.
pub(super) fn draw_legend<'a, DB: DrawingBackend + 'a, Y: Ranged>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    position: SeriesLabelPosition,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .label_font(font(14))
        .draw()
        .map_err(perr)
}

/// Writes one tick label.
type TickFormat<T> = dyn Fn(&T) -> String;

/// The grid and axes every panel shares: iterations on x, `y_desc` on y, and the y tick labels
/// written by `y_format` (plotters' default where `None`).
pub(super) fn draw_mesh<DB, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    y_desc: &str,
    y_format: Option<&TickFormat<Y::ValueType>>,
) -> Result<()>
where
    DB: DrawingBackend,
    Y: Ranged + plotters::coord::ranged1d::ValueFormatter<Y::ValueType>,
    Y::ValueType: std::fmt::Debug,
{
    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(RGBColor(246, 246, 246))
        .x_labels(6)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .x_desc("iteration")
        .y_desc(y_desc)
        .label_style(font(15))
        .axis_desc_style(font(17));
    if let Some(f) = y_format {
        mesh.y_label_formatter(f);
    }
    mesh.draw().map_err(perr)
}

impl Figure for TransferFigure {
    fn size(&self) -> (u32, u32) {
        SIZE
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<()> {
        draw_figure(root, self)
    }
}

/// Builds the Fig. 3 figures of an experiment's Deep CORAL runs: one per transfer with done
/// runs, in the report's column order, with the authors' curves of `paper_curves` (a path
/// relative to the current directory), if given.
pub fn figures(exp: &report::read::Experiment, paper_curves: Option<&Path>) -> Result<Vec<TransferFigure>> {
    let authors = match paper_curves {
        Some(p) => read_authors_curves(p).with_context(|| {
            format!(
                "loading the authors' curves for {} (paths in spec.json are relative to the current directory)",
                exp.dir.display()
            )
        })?,
        None => BTreeMap::new(),
    };
    let mut by_transfer: BTreeMap<DomainShift, BTreeMap<Lambda, Vec<Vec<MetricsRow>>>> = BTreeMap::new();
    for run in exp.done.iter().filter(|r| r.found.method() == Method::Coral) {
        let (transfer, lambda) = (run.found.transfer(), Lambda(run.found.lambda()));
        by_transfer.entry(transfer).or_default().entry(lambda).or_default().push(run.logs.rows.clone());
    }
    let order = report::paper::column_order(&by_transfer.keys().cloned().collect(), None);
    Ok(order
        .into_iter()
        .map(|t| {
            let lambdas = &by_transfer[&t];
            let curves = lambdas.iter().map(|(l, runs)| LambdaCurves::from_runs(l.0, runs)).collect();
            let authors = authors_shift(&t).and_then(|s| authors.get(&s).cloned());
            TransferFigure { transfer: t, curves, authors }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(iteration: usize, target_acc: f64, coral_distance: f64) -> MetricsRow {
        MetricsRow {
            iteration,
            epoch: 0.0,
            lr: 1e-3,
            class_loss: f64::NAN,
            coral_loss: f64::NAN,
            weighted_coral_loss: f64::NAN,
            coral_distance,
            source_acc: 0.5,
            target_acc,
            target_loss: 1.0,
            elapsed_s: 0.0,
            align_loss: f64::NAN,
        }
    }

    #[test]
    fn band_is_mean_min_max_per_iteration_and_skips_nan() {
        let runs = vec![vec![row(0, 0.1, 0.0), row(50, 0.5, 2e-3)], vec![row(0, f64::NAN, 1e-3), row(50, 0.7, 4e-3)]];
        let acc = band(&runs, |r| r.target_acc, false);
        assert_eq!(acc.len(), 2);
        assert_eq!((acc[0].iteration, acc[0].mean, acc[0].min, acc[0].max), (0.0, 0.1, 0.1, 0.1));
        assert!((acc[1].mean - 0.6).abs() < 1e-12);
        assert_eq!((acc[1].min, acc[1].max), (0.5, 0.7));
        // Log axis: the zero distance is left out.
        let dist = band(&runs, |r| r.coral_distance, true);
        assert_eq!((dist[0].mean, dist[0].min), (1e-3, 1e-3));
        // No values at all: no points.
        assert!(band(&runs, |r| r.class_loss, false).is_empty());
    }

    #[test]
    fn authors_shift_names() {
        assert_eq!(authors_shift(&DomainShift::new("amazon", "webcam")).as_deref(), Some("a_w"));
        assert_eq!(authors_shift(&DomainShift::new("webcam", "dslr")).as_deref(), Some("w_d"));
        assert_eq!(authors_shift(&DomainShift::new("caltech10", "dslr")), None);
    }

    #[test]
    fn authors_curves_match_paper_md() {
        // PAPER.md: mean at iteration 2000 A->W 0.664, D->W 0.957, over 5 runs.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/authors-caffe-target-acc.csv");
        let curves = read_authors_curves(&path).unwrap();
        assert_eq!(curves.len(), 6);
        let aw = &curves["a_w"];
        assert_eq!((aw.lambda, aw.runs), (0.8, 5));
        let (it, acc) = *aw.points.last().unwrap();
        assert_eq!(it, 2000.0);
        assert!((acc - 0.664).abs() < 5e-4, "{acc}");
        assert!((curves["d_w"].points.last().unwrap().1 - 0.957).abs() < 5e-4);
    }
}
