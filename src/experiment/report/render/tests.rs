//! The report's markdown, row by row, from hand-made runs.

use super::super::paper::tests::paper;
use super::super::read::RunResult;
use super::super::stats::summarize;
use super::*;

fn run(source: &str, target: &str, lambda: f64, seed: u64, final_acc: f64, best_acc: f64) -> RunResult {
    RunResult {
        transfer: DomainShift::new(source, target),
        method: Method::Coral,
        lambda,
        seed,
        final_acc,
        best_acc,
        final_distance: 1.0,
        window: None,
    }
}

#[test]
fn mean_sd_formatting() {
    assert_eq!(fmt_mean_sd(&Stat { n: 5, mean: 66.8, sd: Some(0.6) }), "66.8 ± 0.6");
    assert_eq!(fmt_mean_sd(&Stat::of(&[60.0, 62.0]).unwrap()), "61.0 ± 1.4");
    assert_eq!(fmt_mean_sd(&Stat::of(&[61.04]).unwrap()), "61.0");
    assert_eq!(fmt_cell(&Stat::of(&[61.04]).unwrap(), Some(2)), "61.0 (n=1)");
    assert_eq!(fmt_paper(&PaperCell { mean: 65.7, pm: None }), "65.7");
    assert_eq!(fmt_diff(0.6), "+0.6");
    assert_eq!(
        (fmt_sig3(283.83), fmt_sig3(8.674), fmt_sig3(0.1234), fmt_sig3(0.00156)),
        ("284".into(), "8.67".into(), "0.123".into(), "1.56e-3".into())
    );
    assert_eq!(fmt_diff(-2.0), "-2.0");
    assert_eq!(fmt_diff(-0.04), "0.0");
}

#[test]
fn markdown_table_pads_by_characters() {
    let header = vec!["".to_string(), "A->W".to_string()];
    let rows = vec![vec!["ours".to_string(), "61.0 ± 1.4".to_string()]];
    assert_eq!(markdown_table(&header, &rows), "|      | A->W       |\n|------|------------|\n| ours | 61.0 ± 1.4 |\n");
}

#[test]
fn small_table_without_paper() {
    let results = vec![
        run("amazon", "webcam", 0.0, 1, 0.60, 0.62),
        run("amazon", "webcam", 0.0, 2, 0.62, 0.63),
        run("amazon", "webcam", 0.8, 1, 0.66, 0.67),
    ];
    let (groups, columns, missing) = summarize(&results, &[], None);
    assert_eq!(
        missing,
        vec![MissingRun {
            transfer: DomainShift::new("amazon", "webcam"),
            method: Method::Coral,
            lambda: 0.8,
            seed: 2
        }]
    );
    let parts = ReportParts {
        groups: &groups,
        columns: &columns,
        incomplete: &[],
        missing: &missing,
        paper: None,
        paired: &[],
        averages: &[],
    };
    let md = table_markdown(&parts, "tiny");
    let expected = "\
# Target accuracy (%): tiny

- **final**: target accuracy at the last iteration (the paper's protocol), mean ± sd over the n seeds; sd is the sample standard deviation (n - 1).
- **best**: the highest target accuracy among a run's evaluations, then mean ± sd over seeds. **Not the paper's protocol**: it chooses the iteration by the target labels.
- avg: mean over the transfers shown; — where a transfer has no value. Cells marked (n=k) have a different number of seeds than the rest of their row.

|                                                                     | A->W       | avg  |
|---------------------------------------------------------------------|------------|------|
| λ, ours (adapted)                                                   | 0.8        |      |
| ours λ = 0: final, mean ± sd over 2 seeds                           | 61.0 ± 1.4 | 61.0 |
| ours λ = 0.8: final, 1 seed, no sd                                  | 66.0       | 66.0 |
| ours λ = 0: best (not the paper's protocol), mean ± sd over 2 seeds | 62.5 ± 0.7 | 62.5 |
| ours λ = 0.8: best (not the paper's protocol), 1 seed, no sd        | 67.0       | 67.0 |

## Per transfer and λ

| transfer | method | λ   | seeds (done) | final, mean ± sd | best, mean ± sd (not the paper's protocol) | incomplete | paper | final - paper |
|----------|--------|-----|--------------|------------------|--------------------------------------------|------------|-------|---------------|
| A->W     | coral  | 0   | 2 (1, 2)     | 61.0 ± 1.4       | 62.5 ± 0.7                                 | 0          | —     | —             |
| A->W     | coral  | 0.8 | 1 (1)        | 66.0             | 67.0                                       | 0          | —     | —             |

## Runs not counted

Missing (a seed other cells have, with no run folder here): 1

- A->W λ = 0.8: seed 2
";
    assert_eq!(md, expected);
}

#[test]
fn several_adapted_lambdas_get_a_row_each_and_gaps_show_a_dash() {
    let results = vec![
        run("amazon", "webcam", 0.0, 1, 0.60, 0.62),
        run("amazon", "webcam", 0.1, 1, 0.64, 0.65),
        run("amazon", "webcam", 1.0, 1, 0.66, 0.67),
        run("webcam", "dslr", 0.1, 1, 0.98, 0.99),
    ];
    let (groups, columns, missing) = summarize(&results, &[], Some(&paper()));
    assert!(missing.is_empty());
    let p = paper();
    let paired = super::super::paired::pair(&results, &columns);
    let parts = ReportParts {
        groups: &groups,
        columns: &columns,
        incomplete: &[],
        missing: &[],
        paper: Some(&p),
        paired: &paired,
        averages: &[],
    };
    let md = table_markdown(&parts, "sweep");
    // Both adapted lambdas of A->W beat its lambda = 0 on seed 1, but one seed shows no
    // difference (no interval); W->D has no lambda = 0.
    assert!(
        md.contains("**CORAL against λ = 0: better on 0, worse on 0, no difference shown on 2 of 2 transfers.**"),
        "{md}"
    );
    let row = md.lines().find(|l| l.starts_with("| A->W     | coral  | 0.1 ")).unwrap();
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(cells[4..12], ["1", "60.0", "64.0", "+4.0", "1.00", "no difference shown", "1 of 1", "—"], "{row}");
    assert!(!md.contains("λ, ours (adapted)"), "{md}");
    assert!(md.contains("| ours λ = 0.1: final, 1 seed, no sd "), "{md}");
    assert!(md.contains("| ours λ = 1 - paper D-CORAL "), "{md}");
    // λ = 1 has no W->D run: dash in the cell and in the average.
    let row = md.lines().find(|l| l.starts_with("| ours λ = 1: final")).unwrap();
    assert!(row.ends_with("| 66.0       | —          | —    |"), "{row}");
    assert!(md.contains("No done λ = 0 run: W->D"), "{md}");
}

#[test]
fn a_method_with_a_lambda_per_transfer_gets_its_own_lambda_row() {
    let ddc = |source, target, lambda| RunResult { method: Method::Ddc, ..run(source, target, lambda, 1, 0.7, 0.7) };
    let results = vec![
        run("amazon", "webcam", 0.0, 1, 0.60, 0.62),
        run("amazon", "webcam", 0.8, 1, 0.66, 0.67),
        run("webcam", "dslr", 0.0, 1, 0.90, 0.90),
        run("webcam", "dslr", 0.001, 1, 0.91, 0.91),
        ddc("amazon", "webcam", 0.02),
        ddc("webcam", "dslr", 0.0003),
    ];
    let (groups, columns, _) = summarize(&results, &[], None);
    let parts = ReportParts {
        groups: &groups,
        columns: &columns,
        incomplete: &[],
        missing: &[],
        paper: None,
        paired: &[],
        averages: &[],
    };
    let md = table_markdown(&parts, "rows");
    let row =
        |label: &str| md.lines().find(|l| l.starts_with(&format!("| {label} "))).unwrap_or_else(|| panic!("{md}"));
    assert!(row("λ, ours (adapted)").contains("| 0.8 "), "{md}");
    assert!(row("λ, ours ddc (adapted)").contains("| 0.02 "), "{md}");
    assert!(row("λ, ours ddc (adapted)").contains("| 0.0003 "), "{md}");
    assert!(row("ours ddc λ > 0: final, 1 seed, no sd").contains("| 70.0 "), "{md}");
    // A folder of DDC runs alone has no λ = 0 row.
    let (groups, columns, _) = summarize(&results[4..], &[], None);
    let md = table_markdown(&ReportParts { groups: &groups, columns: &columns, ..parts }, "ddc");
    assert!(!md.contains("ours λ = 0"), "{md}");
    assert!(md.contains("| ours ddc λ > 0: final, 1 seed, no sd "), "{md}");
}
