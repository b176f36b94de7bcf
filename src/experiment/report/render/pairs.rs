//! The report's text of each method against lambda = 0 (the CNN), from the paired statistics:
//! the paired table of `table.md`, with its verdicts and the rule's ratios, and `headline.md`.

use super::*;

/// `+1.5 [+0.6, +2.4]`: a mean difference in points and its 95% interval (just the mean for one
/// seed).
pub fn fmt_effect(e: &Effect) -> String {
    match e.ci95 {
        Some((lo, hi)) => format!("{} [{}, {}]", fmt_diff(e.diff.mean), fmt_diff(lo), fmt_diff(hi)),
        None => fmt_diff(e.diff.mean),
    }
}

/// A p-value with two significant digits (`0.25`, `0.062`).
pub(super) fn fmt_p(p: f64) -> String {
    let decimals = if p > 0.0 { (1 - p.log10().floor() as i64).max(2) as usize } else { 2 };
    format!("{p:.decimals$}")
}

/// The rule's ratio at the end, marked `✓` within the factor 2 and `✗` outside.
pub(super) fn fmt_rule(p: &Paired) -> String {
    match (p.rule_ratio, p.rule_held()) {
        (Some(r), Some(true)) => format!("{} ✓", fmt_sig3(r)),
        (Some(r), _) => format!("{} ✗", fmt_sig3(r)),
        _ => DASH.into(),
    }
}

/// `12.5×`, or the dash.
pub(super) fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or(DASH.to_string(), |r| format!("{}×", fmt_sig3(r)))
}

/// How the paired rows of each method come out, `CORAL against λ = 0: better on 2, ...; DDC
/// against λ = 0: ...`.
pub(super) fn verdicts_by_method(paired: &[Paired]) -> String {
    Method::ALL
        .iter()
        .filter_map(|&m| {
            let rows: Vec<Paired> = paired.iter().filter(|p| p.method == m).cloned().collect();
            (!rows.is_empty()).then(|| format!("{} against λ = 0: {}", method_title(m), verdict_counts(&rows)))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `CORAL`, `DDC`, `DAN`, `shallow CORAL`, `the SVM on the CNN's features`.
pub(super) fn method_title(m: Method) -> &'static str {
    match m {
        Method::Coral => "CORAL",
        Method::Ddc => "DDC",
        Method::Dan => "DAN",
        Method::ShallowCoral => "shallow CORAL",
        Method::Svm => "the SVM on the CNN's features",
    }
}

/// How the paired rows come out: `better on 2, worse on 0, no difference shown on 4 of 6
/// transfers`.
pub(super) fn verdict_counts(paired: &[Paired]) -> String {
    let count = |v: Verdict| paired.iter().filter(|p| p.effect.verdict() == v).count();
    format!(
        "better on {}, worse on {}, no difference shown on {} of {} transfers",
        count(Verdict::Better),
        count(Verdict::Worse),
        count(Verdict::NoDifferenceShown),
        paired.len()
    )
}

/// The transfers at whose end the rule did not hold, e.g. `D->W (3.10)`.
pub(super) fn rule_misses(paired: &[Paired]) -> Vec<String> {
    paired
        .iter()
        .filter(|p| p.rule_held() == Some(false))
        .map(|p| {
            let method = if p.method == Method::Coral { String::new() } else { format!(" {}", p.method.name()) };
            format!("{}{method} ({})", p.transfer.label(), fmt_sig3(p.rule_ratio.unwrap_or(f64::NAN)))
        })
        .collect()
}

/// What the statistics mean, said once for the table and for the headline.
const PAIRED_NOTE: &str = "Per seed, final target accuracy of the method minus λ = 0, the CNN (the runs of a seed \
share their initial fc8, batches, crops, mirrors and dropout masks and differ by the method alone; shallow CORAL and \
its SVM are classifiers on the λ = 0 run's own features); mean [95% confidence interval, \
Student's t over the seeds]; the verdict is read from the interval alone: \"better\" or \"worse\" when it excludes \
0, else \"no difference shown\". p: exact two-sided sign-flip permutation test over the seeds (at least 2/2^n: \
0.0625 for 5 seeds). Rule: λ × l_CORAL / l_class at the end (means over the last 20% of the steps, pooled over the \
seeds), ✓ within a factor 2 of 1 (the paper's rule), ✗ outside. CORAL loss: l_CORAL (Eq. 2) over the same steps, \
mean over seeds (a run without steps.csv is read from its metrics.csv rows inside the window); its λ = 0 / λ > 0 ratio is the paper's Fig. 3(c) comparison (there: at least 100×).";

/// The paired comparison: how the transfers come out per method, one row per transfer, method
/// and lambda, each method's average over transfers, and the transfers where the rule did not
/// hold.
pub(super) fn paired_table(paired: &[Paired], averages: &[Average]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "**{}.** {PAIRED_NOTE}\n", verdicts_by_method(paired));
    let header = [
        "transfer",
        "method",
        "λ",
        "seeds",
        "final λ = 0",
        "final λ > 0",
        "λ > 0 − λ = 0 [95% CI]",
        "p",
        "verdict",
        "seeds better",
        "rule",
        "CORAL loss λ = 0",
        "CORAL loss λ > 0",
        "ratio",
    ]
    .map(String::from);
    let fmt_loss = |d: &Option<Stat>| match d {
        Some(Stat { mean, sd: Some(sd), .. }) => format!("{} ± {}", fmt_sig3(*mean), fmt_sig3(*sd)),
        Some(Stat { mean, .. }) => fmt_sig3(*mean),
        None => DASH.into(),
    };
    let mut rows: Vec<Vec<String>> = paired
        .iter()
        .map(|p| {
            vec![
                p.transfer.label(),
                p.method.name().to_string(),
                p.lambda.to_string(),
                p.seeds.len().to_string(),
                fmt_mean_sd(&p.baseline_acc),
                fmt_mean_sd(&p.adapted_acc),
                fmt_effect(&p.effect),
                fmt_p(p.effect.p_sign_flip),
                p.effect.verdict().name().to_string(),
                format!("{} of {}", p.improved, p.seeds.len()),
                fmt_rule(p),
                fmt_loss(&p.coral_baseline),
                fmt_loss(&p.coral_adapted),
                fmt_ratio(p.coral_ratio()),
            ]
        })
        .collect();
    for a in averages {
        rows.push(vec![
            "avg".into(),
            a.method.name().to_string(),
            String::new(),
            a.seeds.len().to_string(),
            format!("{:.1}", a.baseline_acc),
            format!("{:.1}", a.adapted_acc),
            fmt_effect(&a.effect),
            fmt_p(a.effect.p_sign_flip),
            a.effect.verdict().name().to_string(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }
    md.push_str(&markdown_table(&header, &rows));
    let misses = rule_misses(paired);
    if !misses.is_empty() {
        let _ = writeln!(md, "\nThe rule did not hold at the end (ratio outside [0.5, 2]) on: {}.", misses.join(", "));
    }
    md
}

/// `headline.md`: the paired comparison as one compact table with the transfers as columns
/// (the README's headline is a verbatim copy), and the sentence that reads it.
pub fn headline(paired: &[Paired], average: Option<&Average>, title: &str) -> String {
    let mut header = vec![String::new()];
    let twice = |t: &DomainShift| paired.iter().filter(|p| &p.transfer == t).count() > 1;
    header.extend(paired.iter().map(|p| match twice(&p.transfer) {
        true => format!("{} (λ = {})", p.transfer.label(), p.lambda),
        false => p.transfer.label(),
    }));
    let with_avg = average.is_some();
    if with_avg {
        header.push("avg".into());
    }
    let row = |label: &str, cells: Vec<String>, avg: String| {
        let mut r = vec![label.to_string()];
        r.extend(cells);
        if with_avg {
            r.push(avg);
        }
        r
    };
    let avg = |f: &dyn Fn(&Average) -> String| average.map_or(String::new(), f);
    let seeds: BTreeSet<usize> = paired.iter().map(|p| p.seeds.len()).collect();
    let n = match seeds.first() {
        Some(1) if seeds.len() == 1 => "1 seed".to_string(),
        Some(k) if seeds.len() == 1 => format!("{k} seeds"),
        _ => "n seeds".into(),
    };
    let rows = vec![
        row("λ", paired.iter().map(|p| p.lambda.to_string()).collect(), String::new()),
        row(
            &format!("λ = 0, mean ± sd over {n}"),
            paired.iter().map(|p| fmt_mean_sd(&p.baseline_acc)).collect(),
            avg(&|a| format!("{:.1}", a.baseline_acc)),
        ),
        row(
            &format!("λ > 0, mean ± sd over {n}"),
            paired.iter().map(|p| fmt_mean_sd(&p.adapted_acc)).collect(),
            avg(&|a| format!("{:.1}", a.adapted_acc)),
        ),
        row(
            "λ > 0 − λ = 0, per seed [95% CI]",
            paired.iter().map(|p| fmt_effect(&p.effect)).collect(),
            avg(&|a| fmt_effect(&a.effect)),
        ),
        row(
            "verdict",
            paired.iter().map(|p| p.effect.verdict().name().to_string()).collect(),
            avg(&|a| a.effect.verdict().name().to_string()),
        ),
        row(
            "p (sign flip, exact)",
            paired.iter().map(|p| fmt_p(p.effect.p_sign_flip)).collect(),
            avg(&|a| fmt_p(a.effect.p_sign_flip)),
        ),
        row("rule at the end: λ × l_CORAL / l_class", paired.iter().map(fmt_rule).collect(), String::new()),
        row(
            "CORAL loss at the end, λ = 0 / λ > 0",
            paired.iter().map(|p| fmt_ratio(p.coral_ratio())).collect(),
            String::new(),
        ),
    ];
    let mut md = format!("Final target accuracy %, {title}.\n\n");
    md.push_str(&markdown_table(&header, &rows));
    let _ = write!(md, "\n**CORAL against λ = 0: {}**", verdict_counts(paired));
    if let Some(a) = average {
        let _ = write!(
            md,
            "; averaged over the {} transfers, {:.1} → {:.1}, a difference of {} ({})",
            a.transfers,
            a.baseline_acc,
            a.adapted_acc,
            fmt_effect(&a.effect),
            a.effect.verdict().name()
        );
    }
    md.push('.');
    let misses = rule_misses(paired);
    if !misses.is_empty() {
        let _ = write!(md, " The paper's rule did not hold at the end on {}.", misses.join(", "));
    }
    let _ = writeln!(md, "\n\n{PAIRED_NOTE}");
    md
}
