//! [`Fit`]: how a list of named tensor shapes differs from what a backbone needs. The one
//! name-and-shape check of `weights import-caffe --arch` and `weights inspect`.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use crate::model::backbone::Backbone;

/// How a set of named tensors differs from what a backbone needs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fit {
    /// Parameters of the backbone the file lacks, with the shape the backbone wants.
    pub missing: Vec<(String, Vec<i64>)>,
    /// Tensors of the file the backbone has no parameter for.
    pub unexpected: Vec<(String, Vec<i64>)>,
    /// `(name, shape in the file, shape the backbone wants)`.
    pub wrong_shape: Vec<(String, Vec<i64>, Vec<i64>)>,
}

impl Fit {
    /// Compares `have` with `backbone`'s parameters. With `num_classes`, the last layer must
    /// have that many outputs; with `None` it may have any number (its other axes must match).
    pub fn check(have: &[(String, Vec<i64>)], backbone: Backbone, num_classes: Option<i64>) -> Fit {
        let want = backbone.parameter_shapes(num_classes.unwrap_or(1000));
        let have_map: BTreeMap<&str, &Vec<i64>> = have.iter().map(|(n, s)| (n.as_str(), s)).collect();
        let want_map: BTreeMap<&str, &Vec<i64>> = want.iter().map(|(n, s)| (n.as_str(), s)).collect();
        let mut fit = Fit::default();
        for (name, want_shape) in &want {
            match have_map.get(name.as_str()) {
                None => fit.missing.push((name.clone(), want_shape.clone())),
                Some(&shape) => {
                    let same = if num_classes.is_none() && backbone.is_last_layer(name) {
                        shape.len() == want_shape.len() && shape.get(1..) == want_shape.get(1..)
                    } else {
                        shape == want_shape
                    };
                    if !same {
                        fit.wrong_shape.push((name.clone(), shape.clone(), want_shape.clone()));
                    }
                }
            }
        }
        for (name, shape) in have {
            if !want_map.contains_key(name.as_str()) {
                fit.unexpected.push((name.clone(), shape.clone()));
            }
        }
        fit
    }

    pub fn fits(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.wrong_shape.is_empty()
    }

    /// Like `Display`, but at most `max` entries per list (`... and N more`).
    pub fn summary(&self, max: usize) -> String {
        let mut out = String::new();
        self.write(&mut out, max).expect("writing to a String");
        out
    }

    fn write(&self, f: &mut impl fmt::Write, max: usize) -> fmt::Result {
        if self.fits() {
            return f.write_str("fits");
        }
        let mut parts = Vec::new();
        let list = |items: Vec<String>| {
            let more = items.len().saturating_sub(max);
            let mut s = items.into_iter().take(max).collect::<Vec<_>>().join(", ");
            if more > 0 {
                let _ = write!(s, ", ... and {more} more");
            }
            s
        };
        if !self.missing.is_empty() {
            let items = self.missing.iter().map(|(n, s)| format!("{n} {s:?}")).collect();
            parts.push(format!("missing {}: {}", self.missing.len(), list(items)));
        }
        if !self.wrong_shape.is_empty() {
            let items =
                self.wrong_shape.iter().map(|(n, have, want)| format!("{n} is {have:?}, expected {want:?}")).collect();
            parts.push(format!("wrong shape {}: {}", self.wrong_shape.len(), list(items)));
        }
        if !self.unexpected.is_empty() {
            let items = self.unexpected.iter().map(|(n, s)| format!("{n} {s:?}")).collect();
            parts.push(format!("unexpected {}: {}", self.unexpected.len(), list(items)));
        }
        f.write_str(&parts.join("; "))
    }
}

/// Every entry of every list.
impl fmt::Display for Fit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, usize::MAX)
    }
}
