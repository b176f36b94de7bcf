//! The paper's Table 1 (`experiments/paper-table1.json`) as data, with the per-shift lambda
//! of the authors' logs; the paper's shifts, which method our lambdas compare with, and the
//! column order of the tables.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::DomainShift;
use crate::config::Method;

/// The paper's transfers in Table 1's column order (A->D, A->W, D->A, D->W, W->A, W->D).
pub const PAPER_SHIFTS: [(&str, &str); 6] = [
    ("amazon", "dslr"),
    ("amazon", "webcam"),
    ("dslr", "amazon"),
    ("dslr", "webcam"),
    ("webcam", "amazon"),
    ("webcam", "dslr"),
];

/// Table 1 of the paper as data, with the per-shift lambda of the authors' logs.
#[derive(Debug, Clone, Deserialize)]
pub struct PaperTable {
    pub title: String,
    pub shifts: Vec<PaperShift>,
    pub methods: Vec<PaperMethod>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PaperShift {
    pub source: String,
    pub target: String,
    pub label: String,
    /// The authors' lambda for D-CORAL on this shift.
    #[serde(default)]
    pub lambda: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PaperMethod {
    pub name: String,
    /// Target accuracy %, one per shift (in `shifts` order).
    pub mean: Vec<f64>,
    /// The spread printed after ± in the paper, one per shift; `None` where none is printed.
    pub pm: Vec<Option<f64>>,
    /// The average printed in the paper.
    #[serde(default)]
    pub avg: Option<f64>,
}

/// One number of the paper's table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaperCell {
    pub mean: f64,
    pub pm: Option<f64>,
}

impl PaperTable {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let table: PaperTable =
            serde_json::from_str(&text).with_context(|| format!("{} is not a valid paper table", path.display()))?;
        for m in &table.methods {
            if m.mean.len() != table.shifts.len() || m.pm.len() != table.shifts.len() {
                bail!(
                    "{}: method {} has {} means and {} spreads for {} shifts",
                    path.display(),
                    m.name,
                    m.mean.len(),
                    m.pm.len(),
                    table.shifts.len()
                );
            }
        }
        Ok(table)
    }

    fn shift_index(&self, t: &DomainShift) -> Option<usize> {
        self.shifts.iter().position(|s| s.source == t.source && s.target == t.target)
    }

    /// The paper's number for `method` on transfer `t`, if the paper has one.
    pub fn cell(&self, method: &str, t: &DomainShift) -> Option<PaperCell> {
        let m = self.methods.iter().find(|m| m.name == method)?;
        let i = self.shift_index(t)?;
        Some(PaperCell { mean: m.mean[i], pm: m.pm[i] })
    }

    /// The authors' lambda on transfer `t`.
    pub fn lambda(&self, t: &DomainShift) -> Option<f64> {
        self.shift_index(t).and_then(|i| self.shifts[i].lambda)
    }

    /// The paper's average over `columns`: the printed one when `columns` are exactly the
    /// paper's shifts, else the mean over `columns` (`None` if the paper lacks one of them).
    pub fn avg(&self, method: &str, columns: &[DomainShift]) -> Option<f64> {
        let m = self.methods.iter().find(|m| m.name == method)?;
        let same = columns.len() == self.shifts.len()
            && columns.iter().zip(&self.shifts).all(|(c, s)| c.source == s.source && c.target == s.target);
        if same && m.avg.is_some() {
            return m.avg;
        }
        let values: Option<Vec<f64>> = columns.iter().map(|c| self.shift_index(c).map(|i| m.mean[i])).collect();
        values.filter(|v| !v.is_empty()).map(|v| v.iter().sum::<f64>() / v.len() as f64)
    }
}

/// The paper's row our runs of `method` at `lambda` stand beside: coral at lambda = 0 is the
/// paper's CNN (no adaptation); otherwise the method's own row (D-CORAL, DDC, DAN).
pub fn paper_method_for(method: Method, lambda: f64) -> Option<&'static str> {
    if lambda == 0.0 && method == Method::Coral {
        Some("CNN")
    } else {
        method.paper_row()
    }
}

/// The transfers in column order: the paper's order (its table's, or [`PAPER_SHIFTS`]) for
/// those it has, then the others sorted by source and target.
pub fn column_order(transfers: &BTreeSet<DomainShift>, paper: Option<&PaperTable>) -> Vec<DomainShift> {
    let paper_order: Vec<DomainShift> = match paper {
        Some(p) => p.shifts.iter().map(|s| DomainShift::new(&s.source, &s.target)).collect(),
        None => PAPER_SHIFTS.iter().map(|(s, t)| DomainShift::new(s, t)).collect(),
    };
    let mut out: Vec<DomainShift> = paper_order.iter().filter(|t| transfers.contains(t)).cloned().collect();
    out.extend(transfers.iter().filter(|t| !paper_order.contains(t)).cloned());
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The repository's `experiments/paper-table1.json`.
    pub(in crate::experiment::report) fn paper() -> PaperTable {
        serde_json::from_str(include_str!("../../../experiments/paper-table1.json")).unwrap()
    }

    #[test]
    fn short_names_and_column_order() {
        assert_eq!(DomainShift::new("amazon", "webcam").label(), "A->W");
        assert_eq!(DomainShift::new("caltech10", "dslr").label(), "C->D");
        assert_eq!(DomainShift::new("clipart", "amazon").label(), "clipart->A");
        let set: BTreeSet<DomainShift> =
            [("webcam", "dslr"), ("caltech10", "amazon"), ("amazon", "dslr"), ("amazon", "caltech10")]
                .iter()
                .map(|(s, t)| DomainShift::new(s, t))
                .collect();
        let labels: Vec<String> = column_order(&set, None).iter().map(DomainShift::label).collect();
        assert_eq!(labels, ["A->D", "W->D", "A->C", "C->A"]);
    }

    #[test]
    fn paper_table_cells_and_averages() {
        let p = paper();
        let aw = DomainShift::new("amazon", "webcam");
        assert_eq!(p.cell("D-CORAL", &aw), Some(PaperCell { mean: 66.4, pm: Some(0.4) }));
        assert_eq!(p.cell("CORAL", &aw), Some(PaperCell { mean: 64.3, pm: None }));
        assert_eq!(p.lambda(&DomainShift::new("dslr", "webcam")), Some(0.0001));
        assert_eq!(p.cell("CNN", &DomainShift::new("amazon", "caltech10")), None);
        // All six columns: the printed average (DDC prints 70.6; its six means give 70.67).
        let all: Vec<DomainShift> = PAPER_SHIFTS.iter().map(|(s, t)| DomainShift::new(s, t)).collect();
        assert_eq!(p.avg("DDC", &all), Some(70.6));
        // A subset: the mean over it.
        assert!((p.avg("CNN", &all[..2]).unwrap() - 62.7).abs() < 1e-9);
        assert_eq!(p.avg("CNN", &[DomainShift::new("amazon", "caltech10")]), None);
    }
}
