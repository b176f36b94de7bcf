//! `report` and `plot` on a fixture experiment written to a temporary folder: 2 transfers x 2
//! lambdas x 2 seeds (done), one running run, and a copy with a corrupt run.json.
//!
//! Final / best target accuracy per run (fractions), from which the expected numbers below are
//! computed by hand:
//!
//! | run                        | final | best |
//! |----------------------------|-------|------|
//! | A->W lambda 0,      seed 1 | 0.60  | 0.62 |
//! | A->W lambda 0,      seed 2 | 0.62  | 0.63 |
//! | A->W lambda 0.8,    seed 1 | 0.66  | 0.67 |
//! | A->W lambda 0.8,    seed 2 | 0.68  | 0.70 |
//! | W->D lambda 0,      seed 1 | 0.98  | 0.99 |
//! | W->D lambda 0,      seed 2 | 0.96  | 0.98 |
//! | W->D lambda 0.0001, seed 1 | 0.99  | 1.00 |
//! | W->D lambda 0.0001, seed 2 | 0.97  | 0.99 |
//!
//! Two values a and b have mean (a+b)/2 and sample sd |a-b|/sqrt(2): a gap of 2 points gives
//! sd 1.4142, of 1 point 0.7071, of 3 points 2.1213.

mod common;

use std::path::{Path, PathBuf};

use deep_coral::experiment::report::{self, DomainShift};

const HEADER: &str = "iteration,epoch,lr,class_loss,coral_loss,weighted_coral_loss,coral_distance,source_acc,target_acc,target_loss,elapsed_s";

fn paper_table() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/paper-table1.json")
}

fn paper_curves() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/authors-caffe-target-acc.csv")
}

/// Writes one run folder. `accs` are the target accuracies at iterations 0, 50, 100.
fn write_run(
    exp: &Path,
    (source, target): (&str, &str),
    lambda: f64,
    seed: u64,
    status: &str,
    accs: [f64; 3],
    final_in_json: bool,
) {
    let dir = exp.join(format!("{source}_{target}/lambda_{lambda}/seed_{seed}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut csv = format!("{HEADER}\n");
    // CORAL distance grows without the CORAL term and stays small with it.
    let dist = if lambda == 0.0 { [5e-4, 2e-2, 8e-2] } else { [5e-4, 1e-3, 1.2e-3] };
    let class_loss = [f64::NAN, 2.0 - 0.1 * seed as f64, 0.8];
    let coral_loss = [f64::NAN, 1e-3, 2e-3];
    for (k, acc) in accs.iter().enumerate() {
        let it = 50 * k;
        let cl = class_loss[k];
        let co = coral_loss[k];
        csv.push_str(&format!(
            "{it},{},0.001,{cl},{co},{},{},{},{acc},1.5,{}\n",
            it as f64 / 20.0,
            lambda * co,
            dist[k] * (1.0 + 0.2 * seed as f64),
            0.3 + 0.3 * k as f64,
            10 * k
        ));
    }
    std::fs::write(dir.join("metrics.csv"), csv).unwrap();
    let final_acc = if final_in_json && status == "done" { format!("{}", accs[2]) } else { "null".into() };
    let done = if status == "done" { 100 } else { 50 };
    let json = format!(
        r#"{{"config": {{"source": "{source}", "target": "{target}", "lambda": {lambda}, "seed": {seed},
            "backbone": "squeezenet1_1", "iterations": 100, "batch_size": 16}},
            "status": "{status}", "final_target_acc": {final_acc}, "iterations_done": {done},
            "versions": {{"tch": "0.24"}}}}"#
    );
    std::fs::write(dir.join("run.json"), json).unwrap();
}

fn write_fixture(exp: &Path) {
    write_run(exp, ("amazon", "webcam"), 0.0, 1, "done", [0.05, 0.62, 0.60], true);
    write_run(exp, ("amazon", "webcam"), 0.0, 2, "done", [0.04, 0.63, 0.62], true);
    write_run(exp, ("amazon", "webcam"), 0.8, 1, "done", [0.05, 0.67, 0.66], true);
    // final_target_acc null in run.json: the last row of metrics.csv is used.
    write_run(exp, ("amazon", "webcam"), 0.8, 2, "done", [0.04, 0.70, 0.68], false);
    write_run(exp, ("amazon", "webcam"), 0.8, 3, "running", [0.04, 0.99, 0.99], true);
    write_run(exp, ("webcam", "dslr"), 0.0, 1, "done", [0.10, 0.99, 0.98], true);
    write_run(exp, ("webcam", "dslr"), 0.0, 2, "done", [0.10, 0.98, 0.96], true);
    write_run(exp, ("webcam", "dslr"), 0.0001, 1, "done", [0.10, 1.00, 0.99], true);
    write_run(exp, ("webcam", "dslr"), 0.0001, 2, "done", [0.10, 0.99, 0.97], true);
    let spec = format!(
        r#"{{"name": "fixture", "paper_table": {:?}, "paper_curves": {:?}, "seeds": [1, 2, 3]}}"#,
        paper_table().display().to_string(),
        paper_curves().display().to_string()
    );
    std::fs::write(exp.join("spec.json"), spec).unwrap();
}

#[test]
fn summary_csv_has_the_hand_computed_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = tmp.path().join("fixture");
    write_fixture(&exp);
    let rep = report::report(&exp, None).unwrap();

    let csv = std::fs::read_to_string(exp.join("summary.csv")).unwrap();
    assert_eq!(csv, rep.csv);
    let expected = "\
source,target,transfer,method,lambda,n_seeds,seeds,final_acc_pct_mean,final_acc_pct_sd,best_acc_pct_mean,best_acc_pct_sd,n_incomplete,paper_method,paper_lambda,paper_acc_pct,paper_acc_pm,final_minus_paper
amazon,webcam,A->W,coral,0,2,1;2,61.0000,1.4142,62.5000,0.7071,0,CNN,0.8,61.6000,0.5000,-0.6000
amazon,webcam,A->W,coral,0.8,2,1;2,67.0000,1.4142,68.5000,2.1213,1,D-CORAL,0.8,66.4000,0.4000,0.6000
webcam,dslr,W->D,coral,0,2,1;2,97.0000,1.4142,98.5000,0.7071,0,CNN,0.0001,99.0000,0.2000,-2.0000
webcam,dslr,W->D,coral,0.0001,2,1;2,98.0000,1.4142,99.5000,0.7071,0,D-CORAL,0.0001,99.2000,0.1000,-1.2000
";
    assert_eq!(csv, expected);

    // Column order is the paper's (A->W before W->D), the running run is listed, and seed 3
    // is missing from the three cells that lack it.
    assert_eq!(rep.columns, vec![DomainShift::new("amazon", "webcam"), DomainShift::new("webcam", "dslr")]);
    assert_eq!(rep.incomplete.len(), 1);
    assert_eq!(rep.incomplete[0].status, "running");
    assert_eq!(rep.missing.len(), 3);
    assert!(rep.missing.iter().all(|m| m.seed == 3));
}

#[test]
fn table_md_compares_with_the_paper_and_lists_what_is_left_out() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = tmp.path().join("fixture");
    write_fixture(&exp);
    // The override wins over spec.json; here both name the same file.
    let rep = report::report(&exp, Some(&paper_table())).unwrap();
    let md = std::fs::read_to_string(exp.join("table.md")).unwrap();
    assert_eq!(md, rep.markdown);
    // Every number below is the hand computation of the module comment (paper avg over the
    // two columns shown: CNN (61.6 + 99.0) / 2, D-CORAL (66.4 + 99.2) / 2).
    let expected_table = "\
|                                                                     | A->W       | W->D       | avg  |
|---------------------------------------------------------------------|------------|------------|------|
| λ, paper (D-CORAL)                                                  | 0.8        | 0.0001     |      |
| λ, ours (adapted)                                                   | 0.8        | 0.0001     |      |
| paper CNN                                                           | 61.6 ± 0.5 | 99.0 ± 0.2 | 80.3 |
| ours λ = 0: final, mean ± sd over 2 seeds                           | 61.0 ± 1.4 | 97.0 ± 1.4 | 79.0 |
| ours λ = 0 - paper CNN                                              | -0.6       | -2.0       | -1.3 |
| paper D-CORAL                                                       | 66.4 ± 0.4 | 99.2 ± 0.1 | 82.8 |
| ours λ > 0: final, mean ± sd over 2 seeds                           | 67.0 ± 1.4 | 98.0 ± 1.4 | 82.5 |
| ours λ > 0 - paper D-CORAL                                          | +0.6       | -1.2       | -0.3 |
| ours λ = 0: best (not the paper's protocol), mean ± sd over 2 seeds | 62.5 ± 0.7 | 98.5 ± 0.7 | 80.5 |
| ours λ > 0: best (not the paper's protocol), mean ± sd over 2 seeds | 68.5 ± 2.1 | 99.5 ± 0.7 | 84.0 |
";
    assert!(md.contains(expected_table), "table.md lacks the table\n{expected_table}\n---\n{md}");
    for line in [
        "| W->D     | coral  | 0      | 2 (1, 2)     | 97.0 ± 1.4       | 98.5 ± 0.7                                 | 0          | CNN 99.0 ± 0.2     | -2.0          |",
        "| A->W     | coral  | 0.8    | 2 (1, 2)     | 67.0 ± 1.4       | 68.5 ± 2.1                                 | 1          | D-CORAL 66.4 ± 0.4 | +0.6          |",
        "Incomplete (status other than done; left out of the tables): 1",
        "- `amazon_webcam/lambda_0.8/seed_3`: running, 50 of 100 iterations",
        "Missing (a seed other cells have, with no run folder here): 3",
        "- A->W λ = 0: seed 3",
        "- W->D λ = 0: seed 3",
        "- W->D λ = 0.0001: seed 3",
    ] {
        assert!(md.contains(line), "table.md lacks\n{line}\n---\n{md}");
    }
}

/// DDC runs (in their method folder) and shallow CORAL's results on the lambda = 0 runs: each
/// method's rows beside its paper row, and its paired comparison with the CNN.
#[test]
fn every_method_stands_beside_its_paper_row() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = tmp.path().join("fixture");
    write_fixture(&exp);
    for (seed, acc) in [(1, 0.64), (2, 0.62)] {
        write_run(&exp, ("amazon", "webcam"), 0.25, seed, "done", [0.05, 0.6, acc], true);
        let flat = exp.join(format!("amazon_webcam/lambda_0.25/seed_{seed}"));
        let dir = exp.join(format!("amazon_webcam/ddc/lambda_0.25/seed_{seed}"));
        std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
        std::fs::rename(&flat, &dir).unwrap();
        let record = std::fs::read_to_string(dir.join("run.json")).unwrap();
        std::fs::write(
            dir.join("run.json"),
            record.replacen("\"lambda\": 0.25", "\"method\": \"ddc\", \"lambda\": 0.25", 1),
        )
        .unwrap();
        let shallow = serde_json::json!({ "features": "fc7", "dim": 512, "source_images": 958, "target_images": 295,
            "svm_c": 1.0, "svm_cv_accuracy": 0.9, "svm_target_acc": 0.55 + 0.01 * seed as f64, "coral_c": 1.0,
            "coral_cv_accuracy": 0.9, "coral_target_acc": 0.65 + 0.01 * seed as f64, "network_target_acc": 0.6,
            "model": "x", "versions": {} });
        let cnn = exp.join(format!("amazon_webcam/lambda_0/seed_{seed}"));
        std::fs::write(cnn.join("shallow_coral.json"), shallow.to_string()).unwrap();
    }
    std::fs::remove_dir_all(exp.join("amazon_webcam/lambda_0.25")).unwrap();
    let rep = report::report(&exp, None).unwrap();
    let md = &rep.markdown;
    let first_cell = |label: &str| -> String {
        let row =
            md.lines().find(|l| l.starts_with(&format!("| {label}"))).unwrap_or_else(|| panic!("no {label}\n{md}"));
        row.split('|').nth(2).unwrap().trim().to_string()
    };
    assert_eq!(first_cell("paper DDC"), "61.8 ± 0.4");
    assert_eq!(first_cell("ours ddc λ = 0.25: final, mean ± sd over 2 seeds"), "63.0 ± 1.4");
    assert_eq!(first_cell("ours ddc λ = 0.25 - paper DDC"), "+1.2");
    assert_eq!(first_cell("paper CORAL"), "64.3");
    assert_eq!(first_cell("ours shallow-coral: final, mean ± sd over 2 seeds"), "66.5 ± 0.7");
    assert_eq!(first_cell("ours svm: final, mean ± sd over 2 seeds"), "56.5 ± 0.7");
    // DDC: +4 and 0 against the CNN; shallow CORAL: +6 and +5 (2 seeds: no difference shown).
    for line in [
        "DDC against λ = 0: better on 0, worse on 0, no difference shown on 1 of 1 transfers",
        "shallow CORAL against λ = 0: better on 0, worse on 0, no difference shown on 1 of 1 transfers",
    ] {
        assert!(md.contains(line), "table.md lacks\n{line}\n---\n{md}");
    }
    let shallow = md.lines().find(|l| l.starts_with("| A->W     | shallow-coral")).unwrap();
    assert!(shallow.contains("| +5.5 [-0.9, +11.9] "), "{shallow}");
    // The headline stays Deep CORAL's.
    assert!(!rep.headline.unwrap().contains("ddc"));
}

#[test]
fn report_without_a_paper_table_has_no_paper_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = tmp.path().join("fixture");
    write_fixture(&exp);
    std::fs::remove_file(exp.join("spec.json")).unwrap();
    let rep = report::report(&exp, None).unwrap();
    assert!(!rep.markdown.contains("paper CNN"));
    assert!(rep.markdown.contains("| ours λ = 0: final, mean ± sd over 2 seeds"));
    assert!(rep.csv.lines().nth(1).unwrap().ends_with(",0,,,,,"), "{}", rep.csv);
}

#[test]
fn a_corrupt_run_json_is_listed_and_the_rest_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = tmp.path().join("fixture");
    write_fixture(&exp);
    let bad = exp.join("webcam_dslr/lambda_0/seed_2/run.json");
    std::fs::write(&bad, "{\"config\": {\"source\": \"webcam\",").unwrap();
    let rep = report::report(&exp, None).unwrap();
    assert!(rep.markdown.contains("`webcam_dslr/lambda_0/seed_2`: run.json is damaged"), "{}", rep.markdown);
    assert!(rep.markdown.contains("| A->W"), "the other runs are still reported");
    deep_coral::experiment::plot::plot(&exp, None).unwrap();
}

#[test]
fn a_corrupt_metrics_csv_is_listed_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = tmp.path().join("fixture");
    write_fixture(&exp);
    let bad = exp.join("amazon_webcam/lambda_0/seed_1/metrics.csv");
    std::fs::write(&bad, format!("{HEADER}\n0,0,0.001,NaN,NaN,NaN,1e-3,0.1,zero,1,0\n")).unwrap();
    let rep = report::report(&exp, None).unwrap();
    let line = rep.markdown.lines().find(|l| l.contains("`amazon_webcam/lambda_0/seed_1`")).unwrap_or_default();
    assert!(
        line.contains("not counted") && line.contains(&bad.display().to_string()) && line.contains("target_acc"),
        "{}",
        rep.markdown
    );
    // A truncated file (a torn last row) is listed the same way.
    std::fs::write(&bad, format!("{HEADER}\n0,0,0.001,NaN,NaN,NaN,1e-3,0.1,0.5,1,0\n50,0.5,0.0")).unwrap();
    let rep = report::report(&exp, None).unwrap();
    assert!(rep.markdown.contains("`amazon_webcam/lambda_0/seed_1`: done, but not counted"), "{}", rep.markdown);
    deep_coral::experiment::plot::plot(&exp, None).unwrap();
}

#[test]
fn report_on_a_folder_without_runs_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = report::report(tmp.path(), None).unwrap_err().to_string();
    assert!(err.contains("no run found"), "{err}");
    assert!(!tmp.path().join("table.md").exists());
}

#[test]
fn plot_writes_png_and_svg_per_transfer() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = tmp.path().join("fixture");
    write_fixture(&exp);
    let written = deep_coral::experiment::plot::plot(&exp, None).unwrap();
    let names: Vec<String> = written.iter().map(|p| p.strip_prefix(&exp).unwrap().display().to_string()).collect();
    assert_eq!(
        names,
        ["plots/amazon_webcam.png", "plots/amazon_webcam.svg", "plots/webcam_dslr.png", "plots/webcam_dslr.svg"]
    );
    for path in &written {
        let size = std::fs::metadata(path).unwrap().len();
        assert!(size > 20_000, "{} is only {size} bytes", path.display());
    }
    for png in written.iter().filter(|p| p.extension().unwrap() == "png") {
        let img = image::open(png).unwrap();
        assert_eq!((img.width(), img.height()), (1800, 500));
        // Not a blank canvas: plenty of non-white pixels.
        let rgb = img.to_rgb8();
        let inked = rgb.pixels().filter(|p| p.0 != [255, 255, 255]).count();
        assert!(inked > 20_000, "{} has only {inked} non-white pixels", png.display());
    }
    let svg = std::fs::read_to_string(exp.join("plots/amazon_webcam.svg")).unwrap();
    for text in
        ["(a) accuracy", "(b) training losses", "(c) CORAL distance", "authors&apos; Caffe D-CORAL", "iteration"]
    {
        assert!(svg.contains(text) || svg.contains(&text.replace("&apos;", "'")), "SVG lacks {text}");
    }
    // No temporary files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(exp.join("plots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Keep one figure for a look when asked: DEEP_CORAL_PLOT_DIR=/tmp cargo test.
    if let Ok(dir) = std::env::var("DEEP_CORAL_PLOT_DIR") {
        for path in &written {
            std::fs::copy(path, Path::new(&dir).join(path.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn table_md_pairs_each_lambda_with_lambda_zero_by_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = tmp.path().join("fixture");
    write_fixture(&exp);
    let r = report::report(&exp, None).unwrap();
    // A->W: 0.66 - 0.60 and 0.68 - 0.62 (seed 3 of lambda 0.8 is running); W->D: +1 twice.
    // The rows (every 50 of 100 iterations) do not lie inside the last 20 steps: no rule, no
    // final CORAL loss.
    let md = &r.markdown;
    assert!(
        md.contains("**CORAL against λ = 0: better on 2, worse on 0, no difference shown on 0 of 2 transfers.**"),
        "{md}"
    );
    let cells = |label: &str| -> Vec<String> {
        let row = md.lines().find(|l| l.starts_with(&format!("| {label} "))).unwrap();
        row.split('|').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect()
    };
    // +6 on both seeds: an interval of width 0 above 0; p = 2 of 4 sign patterns.
    assert_eq!(
        cells("A->W"),
        [
            "A->W",
            "coral",
            "0.8",
            "2",
            "61.0 ± 1.4",
            "67.0 ± 1.4",
            "+6.0 [+6.0, +6.0]",
            "0.50",
            "better",
            "2 of 2",
            "—",
            "—",
            "—",
            "—"
        ]
    );
    assert_eq!(cells("W->D")[6..9], ["+1.0 [+1.0, +1.0]".to_string(), "0.50".to_string(), "better".to_string()]);
    // The average over both transfers: (+6 + 1) / 2 on each seed.
    assert_eq!(cells("avg")[..7], ["avg", "coral", "2", "79.0", "82.5", "+3.5 [+3.5, +3.5]", "0.50"]);
    // headline.md holds the same comparison, transfers as columns.
    let headline = std::fs::read_to_string(exp.join("headline.md")).unwrap();
    assert_eq!(Some(&headline), r.headline.as_ref());
    assert!(headline.contains("| verdict "), "{headline}");
    assert!(
        headline.contains("averaged over the 2 transfers, 79.0 → 82.5, a difference of +3.5 [+3.5, +3.5] (better)"),
        "{headline}"
    );
}

/// Writes the steps.csv of the run's 100 iterations, these class losses first and 1.0 after,
/// and records `log_steps` in its run.json.
fn write_steps(run: &Path, class_losses: [f64; 3]) {
    let mut csv = "iteration,lr,class_loss,coral_loss,coral_distance,correct\n".to_string();
    for i in 0..100 {
        let c = class_losses.get(i).copied().unwrap_or(1.0);
        csv.push_str(&format!("{i},0.001,{c},0.01,0.5,1\n"));
    }
    std::fs::write(run.join("steps.csv"), csv).unwrap();
    let path = run.join("run.json");
    let mut record: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    record["config"]["log_steps"] = true.into();
    std::fs::write(&path, record.to_string()).unwrap();
}

#[test]
fn compare_pairs_two_experiments_run_for_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    write_fixture(&a);
    write_fixture(&b);
    // B's A->W lambda 0.8 ends at 0.70 and 0.69 instead of 0.66 and 0.68: +4 and +1 points.
    write_run(&b, ("amazon", "webcam"), 0.8, 1, "done", [0.05, 0.67, 0.70], true);
    write_run(&b, ("amazon", "webcam"), 0.8, 2, "done", [0.04, 0.70, 0.69], true);
    // W->D lambda 0 has steps.csv in both: the class loss differs by 0.25 at iteration 1.
    for (exp, losses) in [(&a, [2.0, 1.5, 1.0]), (&b, [2.0, 1.75, 1.0])] {
        for seed in [1, 2] {
            write_steps(&exp.join(format!("webcam_dslr/lambda_0/seed_{seed}")), losses);
        }
    }
    let out = tmp.path().join("comparison.md");
    let run = common::run_ok(common::bin().arg("compare").arg(&a).arg(&b).arg("--out").arg(&out));
    let md = String::from_utf8_lossy(&run.stdout).to_string();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), md);
    assert!(md.contains("Config changes A -> B: none."), "{md}");
    let row = |label: &str| md.lines().find(|l| l.starts_with(&format!("| {label} "))).unwrap().to_string();
    let aw = row("A->W     | 0.8");
    // +4 and +1: mean +2.5, sd 2.12, t(0.975, 1) = 12.706: -+19.1.
    for cell in [
        "| 2     |",
        "| 67.0 ± 1.4 ",
        "| 69.5 ± 0.7 ",
        "| +2.5 [-16.6, +21.6] ",
        "| no difference shown ",
        "| 0.0000 (per row)",
    ] {
        assert!(aw.contains(cell), "{cell} not in {aw}");
    }
    assert!(row("W->D     | 0     ").contains("| 0.2500 (per iteration) | 0.00e0 "), "{md}");
    // Nothing in common: an error naming both folders.
    let empty = tmp.path().join("c");
    write_run(&empty, ("dslr", "amazon"), 0.0, 1, "done", [0.1, 0.2, 0.3], true);
    let err = common::run_fails(common::bin().arg("compare").arg(&a).arg(&empty), 1);
    assert!(err.contains("no done run in common") && err.contains(&empty.display().to_string()), "{err}");
}
