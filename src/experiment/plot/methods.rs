//! Every method of an experiment on one transfer, on one figure: the target accuracy against
//! iteration of each (method, lambda) cell, mean over seeds with a min-max band
//! (`plots/<source>_<target>-methods.png` and `.svg`, drawn where the experiment holds runs of
//! more than one trained method).

use std::collections::BTreeMap;

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::canvas::{font, perr, Figure};
use super::curves::{band, draw_band, draw_legend, draw_mesh, BandPoint, ADAPTED_COLORS, ZERO_COLOR};
use crate::config::Method;
use crate::experiment::report::read::Experiment;
use crate::experiment::report::{self, DomainShift, Lambda};
use crate::train::metrics::MetricsRow;

/// One transfer's target-accuracy curves, one per (method, lambda).
pub struct MethodsFigure {
    pub transfer: DomainShift,
    /// Label, seeds, and the mean/min/max per iteration, in method order.
    pub series: Vec<(String, usize, Vec<BandPoint>)>,
}

/// `CNN (λ = 0)`, `D-CORAL λ = 0.8`, `DDC λ = 0.25`, `DAN λ = 1`.
fn label(method: Method, lambda: f64) -> String {
    match (method, lambda == 0.0) {
        (Method::Coral, true) => "CNN (λ = 0)".into(),
        _ => format!("{} λ = {lambda}", method.paper_row().unwrap_or(method.name())),
    }
}

/// The figures, one per transfer, when `exp` holds done runs of more than one trained method.
pub fn figures(exp: &Experiment) -> Vec<MethodsFigure> {
    let methods: std::collections::BTreeSet<Method> = exp.done.iter().map(|d| d.found.method()).collect();
    if methods.len() < 2 {
        return Vec::new();
    }
    let mut cells: BTreeMap<DomainShift, BTreeMap<(Method, Lambda), Vec<Vec<MetricsRow>>>> = BTreeMap::new();
    for d in &exp.done {
        let key = (d.found.method(), Lambda(d.found.lambda()));
        cells.entry(d.found.transfer()).or_default().entry(key).or_default().push(d.logs.rows.clone());
    }
    let order = report::paper::column_order(&cells.keys().cloned().collect(), None);
    order
        .into_iter()
        .map(|t| {
            let series = cells[&t]
                .iter()
                .map(|((m, l), runs)| (label(*m, l.0), runs.len(), band(runs, |r| 100.0 * r.target_acc, false)))
                .collect();
            MethodsFigure { transfer: t, series }
        })
        .collect()
}

impl Figure for MethodsFigure {
    fn size(&self) -> (u32, u32) {
        (900, 560)
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<()> {
        root.fill(&WHITE).map_err(perr)?;
        let root = root.margin(8, 8, 8, 12);
        let t = &self.transfer;
        let title = format!(
            "{} -> {} ({}): target accuracy per method, mean over seeds, band = min-max",
            t.source,
            t.target,
            t.label()
        );
        let root = root.titled(&title, font(19)).map_err(perr)?;
        let x1 = self.series.iter().flat_map(|(_, _, b)| b.iter().map(|p| p.iteration)).fold(1.0, f64::max);
        let lo = self.series.iter().flat_map(|(_, _, b)| b.iter().map(|p| p.min)).fold(100.0, f64::min);
        let mut chart = ChartBuilder::on(&root)
            .margin(6)
            .x_label_area_size(42)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x1, (lo - 2.0).max(0.0)..100.0)
            .map_err(perr)?;
        draw_mesh(&mut chart, "target accuracy (%)", None)?;
        for (k, (label, seeds, points)) in self.series.iter().enumerate() {
            let color = if k == 0 { ZERO_COLOR } else { ADAPTED_COLORS[(k - 1) % ADAPTED_COLORS.len()] };
            let text = format!("{label} ({seeds} seed{})", if *seeds == 1 { "" } else { "s" });
            draw_band(&mut chart, points, color, false, *seeds > 1, &text)?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::LowerRight)
    }
}
