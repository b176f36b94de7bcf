//! A confusion matrix as a heat map (`deep-coral evaluate`): rows the true class, columns the
//! predicted one, each cell shaded by the fraction of its row and labelled with its count;
//! class names on both axes, the accuracy per class beside each row.

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::canvas::{font, perr, Figure};
use crate::infer::evaluate::Evaluation;

/// The heat map of one evaluation, titled with what was evaluated.
pub struct ConfusionFigure<'a> {
    pub evaluation: &'a Evaluation,
    pub title: String,
}

impl Figure for ConfusionFigure<'_> {
    fn size(&self) -> (u32, u32) {
        let k = self.evaluation.classes.len() as u32;
        (360 + 52 * k, 200 + 52 * k)
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<()> {
        let ev = self.evaluation;
        let k = ev.classes.len() as i32;
        root.fill(&WHITE).map_err(perr)?;
        let root = root.titled(&self.title, font(18)).map_err(perr)?;
        let (left, top, cell) = (150i32, 40i32, 52i32);
        for (i, row) in ev.confusion.iter().enumerate() {
            let total: usize = row.iter().sum();
            let y = top + i as i32 * cell;
            root.draw(&Text::new(ev.classes[i].clone(), (8, y + cell / 2 - 8), font(14))).map_err(perr)?;
            for (j, &count) in row.iter().enumerate() {
                let share = if total == 0 { 0.0 } else { count as f64 / total as f64 };
                let x = left + j as i32 * cell;
                let shade = (255.0 * (1.0 - 0.85 * share)) as u8;
                let fill = RGBColor(shade, shade, 255);
                root.draw(&Rectangle::new([(x, y), (x + cell - 2, y + cell - 2)], fill.filled())).map_err(perr)?;
                let ink = if share > 0.55 { WHITE } else { BLACK };
                let text = Text::new(count.to_string(), (x + cell / 2 - 9, y + cell / 2 - 8), font(14).color(&ink));
                root.draw(&text).map_err(perr)?;
            }
            let (_, acc) = ev.per_class(i);
            let text = format!("{:.1}%", 100.0 * acc);
            root.draw(&Text::new(text, (left + k * cell + 8, y + cell / 2 - 8), font(14))).map_err(perr)?;
        }
        let y = top + k * cell + 6;
        for (j, class) in ev.classes.iter().enumerate() {
            let x = left + j as i32 * cell + 4;
            let style = font(13).transform(FontTransform::Rotate90);
            root.draw(&Text::new(class.clone(), (x + 18, y), style)).map_err(perr)?;
        }
        let note = format!("rows: true class; columns: predicted; accuracy {:.1}%", 100.0 * ev.accuracy);
        root.draw(&Text::new(note, (8, top + k * cell + 100), font(14))).map_err(perr)?;
        Ok(())
    }
}
