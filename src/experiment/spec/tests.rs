//! Specs from text: the grids they expand to and the errors that name their place.

use super::*;
use crate::model::backbone::Backbone;

fn experiments(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments").join(file)
}

fn parse_err(text: &str) -> String {
    format!("{:#}", parse(text, Path::new("exp/test.json")).unwrap_err())
}

const MINIMAL: &str = r#"{"name": "t", "transfers": [{"source": "amazon", "target": "dslr", "lambdas": [0, 0.05]}],
"seeds": [1, 2]}"#;

#[test]
fn office31_has_60_runs_with_the_papers_lambdas() {
    let spec = load(&experiments("office31.json")).unwrap();
    let runs = spec.runs(Path::new("results"));
    assert_eq!(runs.len(), 60);
    for (s, t, l) in crate::config::PAPER_LAMBDAS {
        let tr = spec.transfers.iter().find(|x| x.source == s && x.target == t).unwrap();
        assert_eq!(tr.lambdas, vec![0.0, l], "{s}->{t}");
    }
    assert_eq!(spec.seeds, vec![1, 2, 3, 4, 5]);
    let c = &runs[0].config;
    assert_eq!(c.backbone, Backbone::Caffenet);
    assert_eq!((c.iterations, c.batch_size, c.eval_every, c.lr_step, c.lr), (2000, 128, 50, 500, 1e-3));
    assert_eq!(c.data_root, PathBuf::from("data/office31/domain_adaptation_images"));
    assert!(runs.iter().all(|r| r.config.validate().is_ok()));
}

/// Table 1 in one grid: the office31 runs, DDC and DAN on every transfer and seed, and
/// shallow CORAL asked for.
#[test]
fn table1_methods_runs_every_row_of_table_1() {
    let spec = load(&experiments("table1-methods.json")).unwrap();
    let office31 = load(&experiments("office31.json")).unwrap();
    let runs = spec.runs(Path::new("results"));
    assert_eq!(runs.len(), 120);
    assert!(spec.shallow_coral);
    assert_eq!(
        (spec.train.clone(), spec.transfers.clone(), spec.seeds.clone()),
        (office31.train, office31.transfers, office31.seeds)
    );
    let of = |m: Method| runs.iter().filter(|r| r.config.method == m).map(|r| r.config.lambda).collect::<Vec<_>>();
    assert_eq!((of(Method::Ddc).len(), of(Method::Dan).len()), (30, 30));
    assert!(of(Method::Ddc).iter().all(|&l| l == 0.25) && of(Method::Dan).iter().all(|&l| l == 1.0));
}

#[test]
fn office_caltech10_has_24_runs() {
    let spec = load(&experiments("office-caltech10.json")).unwrap();
    let runs = spec.runs(Path::new("results"));
    assert_eq!(runs.len(), 24);
    assert_eq!(spec.transfers.len(), 12);
    assert_eq!(spec.train.backbone, Backbone::Squeezenet1_1);
    assert_eq!(spec.train.data_root, PathBuf::from("../shared/data/office-caltech10"));
    let dirs: BTreeSet<_> = runs.iter().map(|r| r.dir.clone()).collect();
    assert_eq!(dirs.len(), 24);
}

#[test]
fn run_dirs_and_grid_order() {
    let spec = parse(MINIMAL, Path::new("t.json")).unwrap();
    let runs = spec.runs(Path::new("res"));
    let dirs: Vec<_> = runs.iter().map(|r| r.dir.to_str().unwrap().to_string()).collect();
    assert_eq!(
        dirs,
        [
            "res/t/amazon_dslr/lambda_0/seed_1",
            "res/t/amazon_dslr/lambda_0.05/seed_1",
            "res/t/amazon_dslr/lambda_0/seed_2",
            "res/t/amazon_dslr/lambda_0.05/seed_2",
        ]
    );
    assert_eq!((runs[1].config.source.as_str(), runs[1].config.target.as_str()), ("amazon", "dslr"));
    assert_eq!((runs[1].config.lambda, runs[1].config.seed), (0.05, 1));
    assert_eq!((runs[2].config.lambda, runs[2].config.seed), (0.0, 2));
    assert_eq!(lambda_dir(0.0001), "lambda_0.0001");
    assert_eq!(lambda_dir(0.8), "lambda_0.8");
    assert_eq!(lambda_dir(-0.0), "lambda_0");
    assert_eq!(lambda_dir(1.0), "lambda_1");
}

#[test]
fn unknown_keys_are_named_with_their_place() {
    let e = parse_err(&MINIMAL.replace(r#""seeds""#, r#""train": {"lamda": 1}, "seeds""#));
    assert!(e.contains("exp/test.json") && e.contains("`train.lamda`"), "{e}");
    let e = parse_err(&MINIMAL.replace(r#""seeds""#, r#""seed": 3, "seeds""#));
    assert!(e.contains("exp/test.json") && e.contains("`seed`"), "{e}");
    let e = parse_err(&MINIMAL.replace(r#""lambdas""#, r#""lambda": 1, "lambdas""#));
    assert!(e.contains("`transfers[0].lambda`"), "{e}");
}

#[test]
fn wrong_types_are_named_with_their_place() {
    let e = parse_err(&MINIMAL.replace(r#""seeds""#, r#""train": {"iterations": "many"}, "seeds""#));
    assert!(e.contains("exp/test.json") && e.contains("`train.iterations`") && e.contains("invalid type"), "{e}");
    let e = parse_err(&MINIMAL.replace("[0, 0.05]", r#"[0, "0.05"]"#));
    assert!(e.contains("`transfers[0].lambdas[1]`"), "{e}");
    let e = parse_err(&MINIMAL.replace("[1, 2]", r#"[1, -2]"#));
    assert!(e.contains("`seeds[1]`"), "{e}");
    let e = parse_err(&MINIMAL.replace(r#""seeds""#, r#""train": {"backbone": "vgg"}, "seeds""#));
    assert!(e.contains("`train.backbone`") && e.contains("vgg"), "{e}");
    let e = parse_err(r#"{"name": "t", "transfers": [{"source": "amazon", "lambdas": [0]}], "seeds": [1]}"#);
    assert!(e.contains("transfers[0]") && e.contains("target"), "{e}");
    let e = parse_err("{\"name\": \"t\",\n \"seeds\": [1,]}");
    assert!(e.contains("exp/test.json") && e.contains("line 2"), "{e}");
}

#[test]
fn a_slurm_block_is_read_and_its_bad_keys_named() {
    let text = MINIMAL.replace(
        r#""seeds""#,
        r#""slurm": {"partition": "gpu", "gpus_per_run": 1, "time": "01:00:00", "sbatch_args": ["--exclusive"]},
       "seeds""#,
    );
    let spec = parse(&text, Path::new("exp/test.json")).unwrap();
    let slurm = spec.slurm.clone().unwrap();
    assert_eq!(
        (slurm.partition.as_deref(), slurm.gpus_per_run, slurm.time.as_deref()),
        (Some("gpu"), Some(1), Some("01:00:00"))
    );
    assert_eq!(slurm.sbatch_args, vec!["--exclusive".to_string()]);
    assert_eq!(parse(&spec.to_json(), &spec.path).unwrap(), spec);
    assert!(!parse(MINIMAL, Path::new("t.json")).unwrap().to_json().contains("slurm"));
    let e = parse_err(&MINIMAL.replace(r#""seeds""#, r#""slurm": {"partiton": "gpu"}, "seeds""#));
    assert!(e.contains("exp/test.json") && e.contains("`slurm.partiton`") && e.contains("unknown field"), "{e}");
    let e = parse_err(&MINIMAL.replace(r#""seeds""#, r#""slurm": {"gpus_per_run": "one"}, "seeds""#));
    assert!(e.contains("`slurm.gpus_per_run`") && e.contains("invalid type"), "{e}");
    let e = parse_err(&MINIMAL.replace(r#""seeds""#, r#""slurm": ["gpu"], "seeds""#));
    assert!(e.contains("`slurm`") && e.contains("expected an object"), "{e}");
}

#[test]
fn to_json_reads_back_as_the_same_spec() {
    let spec = load(&experiments("office-caltech10.json")).unwrap();
    let text = spec.to_json();
    assert!(text.contains("\"momentum\": 0.9") && !text.contains("\"seed\":"), "{text}");
    let back = parse(&text, &spec.path).unwrap();
    assert_eq!(back, spec);
}

#[test]
fn per_run_keys_are_refused_in_train() {
    let e = parse_err(&MINIMAL.replace(r#""seeds""#, r#""train": {"lambda": 1}, "seeds""#));
    assert!(e.contains("`train.lambda`") && e.contains("transfers[].lambdas"), "{e}");
}

#[test]
fn a_bad_lambda_is_rejected_with_its_transfer() {
    let text = r#"{"name": "t", "seeds": [1], "transfers": [
    {"source": "amazon", "target": "dslr", "lambdas": [0]},
    {"source": "webcam", "target": "dslr", "lambdas": [0, -0.5]}]}"#;
    let e = parse_err(text);
    assert!(e.contains("exp/test.json") && e.contains("webcam->dslr") && e.contains("-0.5"), "{e}");
    assert!(e.contains("lambda must be"), "{e}");
    let e = parse_err(&MINIMAL.replace(r#""seeds""#, r#""train": {"batch_size": 1}, "seeds""#));
    assert!(e.contains("amazon->dslr") && e.contains("batch size"), "{e}");
    let e = parse_err(&MINIMAL.replace("\"dslr\"", "\"amazon\""));
    assert!(e.contains("amazon->amazon") && e.contains("same domain"), "{e}");
}

#[test]
fn duplicates_and_empty_lists_are_rejected() {
    assert!(parse_err(&MINIMAL.replace("[0, 0.05]", "[0.05, 0.05]")).contains("twice"));
    assert!(parse_err(&MINIMAL.replace("[1, 2]", "[2, 2]")).contains("seed 2"));
    assert!(parse_err(&MINIMAL.replace("[1, 2]", "[]")).contains("`seeds` is empty"));
    assert!(parse_err(&MINIMAL.replace("[0, 0.05]", "[]")).contains("no lambdas"));
    assert!(parse_err(&MINIMAL.replace("\"t\"", "\"../t\"")).contains("plain folder name"));
    assert!(parse_err(&MINIMAL.replace("\"dslr\"", "\"x/dslr\"")).contains("plain folder name"));
}

#[test]
fn methods_run_beside_the_transfers_lambdas_in_folders_of_their_own() {
    let text = MINIMAL.replace(
        r#""seeds""#,
        r#""methods": [{"method": "ddc", "lambdas": [0.25]}, {"method": "dan", "lambdas": [1]}], "seeds""#,
    );
    let spec = parse(&text, Path::new("t.json")).unwrap();
    let runs = spec.runs(Path::new("res"));
    let dirs: Vec<_> = runs.iter().take(4).map(|r| r.dir.to_str().unwrap().to_string()).collect();
    assert_eq!(
        dirs,
        [
            "res/t/amazon_dslr/lambda_0/seed_1",
            "res/t/amazon_dslr/lambda_0.05/seed_1",
            "res/t/amazon_dslr/ddc/lambda_0.25/seed_1",
            "res/t/amazon_dslr/dan/lambda_1/seed_1",
        ]
    );
    assert_eq!(runs.len(), 8);
    assert_eq!((runs[2].config.method, runs[2].config.lambda), (Method::Ddc, 0.25));
    assert_eq!(parse(&spec.to_json(), &spec.path).unwrap(), spec);
    let e = parse_err(&MINIMAL.replace(r#""seeds""#, r#""methods": [{"method": "dann", "lambdas": [1]}], "seeds""#));
    assert!(e.contains("`methods[0].method`") && e.contains("dann"), "{e}");
    let e = parse_err(&MINIMAL.replace(r#""seeds""#, r#""methods": [{"method": "coral", "lambdas": [1]}], "seeds""#));
    assert!(e.contains("methods[0] is coral"), "{e}");
}

#[test]
fn a_method_can_run_a_lambda_per_transfer() {
    let text = MINIMAL
        .replace(r#""seeds""#, r#""methods": [{"method": "ddc", "by_transfer": {"amazon->dslr": [0.02]}}], "seeds""#);
    let spec = parse(&text, Path::new("t.json")).unwrap();
    let ddc: Vec<_> = spec.runs(Path::new("res")).into_iter().filter(|r| r.config.method == Method::Ddc).collect();
    assert_eq!(ddc.len(), 2);
    assert_eq!(ddc[0].dir, Path::new("res/t/amazon_dslr/ddc/lambda_0.02/seed_1"));
    assert_eq!(parse(&spec.to_json(), &spec.path).unwrap(), spec);
    let e = parse_err(&text.replace("amazon->dslr", "amazon->webcam"));
    assert!(e.contains("methods[0].by_transfer names amazon->webcam") && e.contains("amazon->dslr"), "{e}");
    let e = parse_err(&text.replace("[0.02]", "[]"));
    assert!(e.contains("methods[0] (ddc) has no lambdas for transfer amazon->dslr"), "{e}");
}

#[test]
fn two_runs_never_share_a_folder() {
    let text = r#"{"name": "t", "seeds": [1], "transfers": [
    {"source": "a_b", "target": "c", "lambdas": [0]},
    {"source": "a", "target": "b_c", "lambdas": [0]}]}"#;
    let e = parse_err(text);
    assert!(e.contains("a_b->c") && e.contains("a->b_c") && e.contains("a_b_c/lambda_0"), "{e}");
    // A lambda whose folder name no file system takes (Rust writes 1e-300 in full).
    let e = parse_err(&MINIMAL.replace("[0, 0.05]", "[0, 1e-300]"));
    assert!(e.contains("longer than the 255") && e.contains("lambda 1e-300"), "{e}");
}

#[test]
fn missing_domains_are_listed_together() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("amazon")).unwrap();
    let text = r#"{"name": "t", "seeds": [1], "transfers": [
    {"source": "amazon", "target": "dslr", "lambdas": [0]},
    {"source": "webcam", "target": "amazon", "lambdas": [0]},
    {"source": "dslr", "target": "webcam", "lambdas": [0]}]}"#;
    let mut spec = parse(text, Path::new("exp/t.json")).unwrap();
    spec.set_data_root(root.path().to_path_buf());
    let e = format!("{:#}", spec.check_domains().unwrap_err());
    let dslr = root.path().join("dslr").display().to_string();
    let webcam = root.path().join("webcam").display().to_string();
    assert!(e.contains("exp/t.json") && e.contains("2 of 3") && e.contains(&dslr) && e.contains(&webcam), "{e}");
    assert!(!e.contains(&root.path().join("amazon").display().to_string()), "{e}");
    std::fs::create_dir(root.path().join("dslr")).unwrap();
    std::fs::create_dir(root.path().join("webcam")).unwrap();
    spec.check_domains().unwrap();
}

#[test]
fn office_caltech10_domains_exist_in_shared() {
    let spec = load(&experiments("office-caltech10.json")).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut spec = spec;
    spec.set_data_root(root.join(&spec.train.data_root));
    if !spec.train.data_root.is_dir() {
        panic!("{} is missing: ../shared must sit beside the repository", spec.train.data_root.display());
    }
    spec.check_domains().unwrap();
}
