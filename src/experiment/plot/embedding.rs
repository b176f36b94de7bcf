//! The t-SNE picture of `deep-coral embed`: one panel per run, side by side (a lambda = 0 run
//! beside its lambda > 0 twin), every image a point coloured by its domain (source blue, target
//! orange) and marked by its class (ten markers: filled and hollow circles, triangles, squares
//! and diamonds, a cross and a plus).

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::canvas::{font, perr, Figure};
use crate::infer::embed::Embedding;

const SOURCE: RGBColor = RGBColor(31, 119, 180);
const TARGET: RGBColor = RGBColor(255, 127, 14);

/// Panels of `Embedding`s.
pub struct EmbeddingFigure<'a> {
    pub panels: &'a [Embedding],
}

/// Draws class `k`'s points `at` in `color` with its marker (`k % 5` the shape, `k < 5`
/// filled, the rest hollow, and the fifth shape a cross for `k = 4`, a plus for `k = 9`);
/// `draw` is the chart's `draw_series` or a drawing area's `draw` for the key. Triangles and
/// diamonds are polygons, which plotters always fills, so their hollow forms are closed
/// outlines (`PathElement`) instead.
macro_rules! draw_marked {
    ($draw:expr, $k:expr, $points:expr, $color:expr) => {{
        let (k, color) = ($k, $color);
        let filled = k < 5;
        let style = if filled { color.filled() } else { color.stroke_width(1) };
        let r = 3;
        let triangle = vec![(0, -r - 1), (r + 1, r), (-r - 1, r)];
        let diamond = vec![(0, -r - 1), (r + 1, 0), (0, r + 1), (-r - 1, 0)];
        let outline = |mut v: Vec<(i32, i32)>| {
            v.push(v[0]);
            PathElement::new(v, style)
        };
        match (k % 5, filled) {
            (0, _) => $draw($points.map(|p| EmptyElement::at(p) + Circle::new((0, 0), r, style))),
            (1, true) => $draw($points.map(|p| EmptyElement::at(p) + Polygon::new(triangle.clone(), style))),
            (1, false) => $draw($points.map(|p| EmptyElement::at(p) + outline(triangle.clone()))),
            (2, _) => $draw($points.map(|p| EmptyElement::at(p) + Rectangle::new([(-r, -r), (r, r)], style))),
            (3, true) => $draw($points.map(|p| EmptyElement::at(p) + Polygon::new(diamond.clone(), style))),
            (3, false) => $draw($points.map(|p| EmptyElement::at(p) + outline(diamond.clone()))),
            (_, true) => $draw($points.map(|p| EmptyElement::at(p) + Cross::new((0, 0), r, color.stroke_width(2)))),
            (_, false) => $draw($points.map(|p| {
                let line = |a, b| PathElement::new(vec![a, b], color.stroke_width(2));
                EmptyElement::at(p) + line((-r - 1, 0), (r + 1, 0)) + line((0, -r - 1), (0, r + 1))
            })),
        }
    }};
}

impl Figure for EmbeddingFigure<'_> {
    fn size(&self) -> (u32, u32) {
        (620 * self.panels.len().max(1) as u32, 680)
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<()> {
        root.fill(&WHITE).map_err(perr)?;
        let areas = root.split_evenly((1, self.panels.len().max(1)));
        for (area, e) in areas.iter().zip(self.panels) {
            let (xs, ys): (Vec<f64>, Vec<f64>) = e.points.iter().copied().unzip();
            let span = |v: &[f64]| {
                let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
                let pad = 0.05 * (hi - lo).max(1e-9);
                (lo - pad)..(hi + pad)
            };
            let mut chart = ChartBuilder::on(area)
                .caption(&e.title, font(16))
                .margin(10)
                .x_label_area_size(20)
                .y_label_area_size(20)
                .build_cartesian_2d(span(&xs), span(&ys))
                .map_err(perr)?;
            chart.configure_mesh().disable_mesh().x_labels(0).y_labels(0).draw().map_err(perr)?;
            for target in [false, true] {
                let color = if target { TARGET } else { SOURCE };
                for k in 0..e.classes.len() {
                    let points: Vec<(f64, f64)> = (0..e.points.len())
                        .filter(|&i| e.is_target[i] == target && e.labels[i] == k)
                        .map(|i| e.points[i])
                        .collect();
                    draw_marked!(|s| chart.draw_series(s).map(|_| ()), k, points.into_iter(), color).map_err(perr)?;
                }
            }
            // The key: domains by colour, classes by marker.
            let key_y = 60;
            for (i, (name, color)) in [(&e.source, SOURCE), (&e.target, TARGET)].into_iter().enumerate() {
                let x = 20 + 150 * i as i32;
                area.draw(&Circle::new((x, key_y), 5, color.filled())).map_err(perr)?;
                area.draw(&Text::new(format!("{name} (colour)"), (x + 10, key_y - 8), font(13))).map_err(perr)?;
            }
            for (k, class) in e.classes.iter().enumerate() {
                let (col, row) = ((k % 5) as i32, (k / 5) as i32);
                let (x, y) = (20 + 118 * col, 600 + 22 * row);
                let grey = RGBColor(60, 60, 60);
                draw_marked!(
                    |mut s: std::iter::Map<_, _>| area.draw(&s.next().expect("one")),
                    k,
                    std::iter::once((x, y)),
                    grey
                )
                .map_err(perr)?;
                area.draw(&Text::new(class.clone(), (x + 9, y - 7), font(12))).map_err(perr)?;
            }
        }
        Ok(())
    }
}
