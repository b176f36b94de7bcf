//! deep-coral's training step against an independent PyTorch implementation of the same step
//! (`tests/data/step_parity.py`, written from PAPER.md's formulas and Caffe's SGD rule, not
//! from this crate): `K` = 6 iterations of SqueezeNet 1.1 (its real ImageNet weights) and of
//! AlexNet (its real ImageNet convolutions, a seeded fc6/fc7), each with lambda = 0 and
//! lambda = 1, on real Office-Caltech10 images (amazon -> webcam, one image per class and
//! domain), batch 4 + 4, with one learning-rate step inside (`lr_step` 3: iterations 3-5 run at
//! a tenth of the rate). Per iteration the class and CORAL losses, and after the last iteration
//! every parameter, must agree to 1e-4 relative.
//!
//! # Same inputs, production path unchanged
//! The Rust side drives the public API a run uses (`Model::new`, `Streams::fresh`,
//! `next_batch`, `update`, with a small `TrainConfig`, `channels_last` as by default) and
//! writes for Python the weights before iteration 0 and, per iteration, the tensors of the
//! batch (`Batch::source`, `labels`, `target`: crops, mirrors and normalisation already
//! applied) and the dropout masks.
//!
//! # Same dropout masks: replayed, and the replay checked
//! `update` reseeds libtorch's generator with `runtime::seed_torch_for_iteration(seed,
//! iteration)`; the forward then draws every mask from it, the source branch's dropouts in
//! network order, then the target's (nothing else in between draws random numbers). The test
//! reseeds the same way and calls `Tensor::dropout(0.5, true)` in the same order on tensors of
//! ones of exactly the shape, dtype and memory layout of the activations the forward drops
//! out, taken from the model's own trunk (`Network::trunk`, the code the forward runs): for
//! SqueezeNet the `[n, 512, 14, 14]` last Fire output, channels-last in memory; for AlexNet
//! the flattened pool5 `[n, 9216]` and fc6's `[n, 4096]`. The layout matters: with torch 2.11
//! a channels-last tensor of ones draws another mask than a contiguous one from the same seed.
//! `ones * mask = mask`, values 0 or 2. Before Python sees them, every iteration's masks are
//! checked on the Rust side: the production forward in training mode (`head(.., train =
//! true)` after the same reseed) must equal, for both branches, the forward from the trunk's
//! features with the replayed masks multiplied in by hand and the layers after them written
//! out with the model's variables. The losses' parity checks them once more.
//!
//! # Measures
//! A parameter tensor is compared by max |rust - ref| / max |ref| (relative to its largest
//! magnitude, not elementwise: an element of a bias can sit arbitrarily near 0), to 1e-4. Six
//! small steps move a pretrained layer by as little as 1e-5 of its size (column `moved`), so
//! that alone would not see a wrong update of such a layer; the update `w_K - w_0` is compared
//! too, by the same measure, to `TOL_UPDATE` (float32's rounding of `w` bounds it from below).
//!
//! # Controls: the comparison can fail
//! - The reference also trains with `torch.optim.SGD` (lr applied after the momentum, the
//!   multipliers as param groups): its losses must equal Caffe's rule's up to the lr step,
//!   and afterwards the checks above must fail against it for every parameter, so a swap of
//!   the two rules in deep-coral would be caught.
//! - lambda = 1 must move the weights away from the lambda = 0 run by far more than the
//!   tolerance, so the CORAL gradient is part of what is compared.
//!
//! # Learning rates
//! Lower than the paper's 1e-3: with batches of 4, SqueezeNet at 1e-3 (measured with
//! torchvision's ReLU head) jumps to a class loss of 5.7 and its outputs collapse towards 0
//! within 6 iterations, and AlexNet's random
//! fc6/fc7 diverge within 3 (as in tests/finetune.rs), regimes where float32 rounding is
//! amplified chaotically. SqueezeNet runs at 3e-4, AlexNet at 1e-5.
//!
//! Needs `../shared` and the project's Python with torch (`make setup`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use deep_coral::config::{DeviceChoice, Method, Precision, TrainConfig};
use deep_coral::data::transfer::{load_images, scan};
use deep_coral::model::backbone::{Backbone, Finetune};
use deep_coral::train::align::coral;
use deep_coral::train::checkpoint::Streams;
use deep_coral::train::model::Model;
use deep_coral::train::runtime;
use deep_coral::train::step::{fc8_outputs, next_batch, update, Batch};
use tch::{nn, Device, Kind, Tensor};

/// Iterations, the lr step inside them, images per domain per iteration.
const K: usize = 6;
const LR_STEP: usize = 3;
const BATCH: usize = 4;
/// Relative tolerance on losses and parameters.
const TOL: f64 = 1e-4;
/// On the update `w_K - w_0` relative to its largest element: float32 rounds `w - v` to
/// 6e-8 of `w`, which for a pretrained layer moved by 1e-5 of its size is already 1e-2 of
/// the update (measured at most 8e-3). Catches an update wrong by far less than a factor 2
/// (a multiplier, a decay) in a layer that moves too little for the 1e-4 on the parameter.
const TOL_UPDATE: f64 = 5e-2;
const SEED: u64 = 7;
/// Images per class taken from each domain (10 classes).
const PER_CLASS: usize = 1;

/// libtorch's CPU generator is one per process, and cargo runs tests on parallel threads:
/// whatever seeds or draws from it (building a model, a training step, the replay) holds this.
static LIBTORCH_RNG: Mutex<()> = Mutex::new(());

/// `<dir>/{amazon,webcam}/<class>/`, links to the first `PER_CLASS` images of each class of
/// ../shared/data/office-caltech10.
fn small_transfer(dir: &Path) -> PathBuf {
    let shared = common::shared().join("data/office-caltech10");
    let root = dir.join("data");
    for domain in ["amazon", "webcam"] {
        let mut classes: Vec<_> = std::fs::read_dir(shared.join(domain)).unwrap().map(|e| e.unwrap().path()).collect();
        classes.sort();
        for class in classes {
            let mut files: Vec<_> = std::fs::read_dir(&class).unwrap().map(|e| e.unwrap().path()).collect();
            files.sort();
            let out = root.join(domain).join(class.file_name().unwrap());
            std::fs::create_dir_all(&out).unwrap();
            for f in files.iter().take(PER_CLASS) {
                std::os::unix::fs::symlink(f, out.join(f.file_name().unwrap())).unwrap();
            }
        }
    }
    root
}

/// AlexNet's real ImageNet convolutions with a seeded fc6/fc7/fc8 (`common::alexnet_weights`).
fn alexnet_weights(dir: &Path) -> PathBuf {
    common::alexnet_weights(dir)
}

/// The activations the forward of `backbone` drops out, for input `x`, except the ones computed
/// from an earlier mask: the model's own trunk at the first dropout, in the forward's layout.
fn at_first_dropout(model: &Model, backbone: Backbone, x: &Tensor) -> Tensor {
    tch::no_grad(|| match backbone {
        // the last Fire module's output, before the 1x1 conv classifier.1
        Backbone::Squeezenet1_1 => model.net.trunk(x, Finetune::Last),
        // the flattened pool5, fc6's input
        Backbone::Alexnet => model.net.trunk(x, Finetune::Fc),
        Backbone::Caffenet => unreachable!("not tested here"),
    })
}

/// Ones shaped, typed and laid out like each activation the forward drops out, in the order it
/// does, given the activation at the first dropout.
fn dropout_templates(backbone: Backbone, first: &Tensor) -> Vec<Tensor> {
    match backbone {
        Backbone::Squeezenet1_1 => vec![first.ones_like()],
        // then fc6's output after its ReLU, [n, 4096] (a matmul's output, contiguous)
        Backbone::Alexnet => {
            vec![first.ones_like(), Tensor::ones([first.size()[0], 4096], (first.kind(), first.device()))]
        }
        Backbone::Caffenet => unreachable!("not tested here"),
    }
}

/// The forward of `head(.., train = true)` from the activation at the first dropout, with the
/// masks multiplied in by hand and the last layers written out with the model's variables
/// (DDC's adaptation layer `fc_adapt` where the model has one).
fn head_with_masks(model: &Model, backbone: Backbone, first: &Tensor, masks: &[Tensor]) -> Tensor {
    let v = model.vs.variables();
    let adapt = |h: &Tensor| match v.get("fc_adapt.weight") {
        Some(w) => h.linear(w, Some(&v["fc_adapt.bias"])),
        None => h.shallow_clone(),
    };
    tch::no_grad(|| match backbone {
        Backbone::Squeezenet1_1 => {
            let (w, b) = (&v["classifier.1.weight"], &v["classifier.1.bias"]);
            let dropped = first * &masks[0];
            if v.contains_key("fc_adapt.weight") {
                let pooled = dropped.mean_dim(&[2i64, 3][..], false, Kind::Float);
                adapt(&pooled).linear(&w.flatten(1, -1), Some(b))
            } else {
                dropped.conv2d(w, Some(b), [1, 1], [0, 0], [1, 1], 1).mean_dim(&[2i64, 3][..], false, Kind::Float)
            }
        }
        Backbone::Alexnet => {
            let fc = |h: &Tensor, n: usize| {
                h.linear(&v[&format!("classifier.{n}.weight")], Some(&v[&format!("classifier.{n}.bias")]))
            };
            let h = fc(&(first * &masks[0]), 1).relu();
            let h = fc(&(h * &masks[1]), 4).relu();
            fc(&adapt(&h), 6)
        }
        Backbone::Caffenet => unreachable!(),
    })
}

/// Draws the masks `update` will draw at `iteration`: source branch first, then target.
fn replay_masks(
    cfg: &TrainConfig,
    iteration: usize,
    source: &[Tensor],
    target: &[Tensor],
) -> (Vec<Tensor>, Vec<Tensor>) {
    runtime::seed_torch_for_iteration(cfg.seed, iteration);
    let draw = |ts: &[Tensor]| ts.iter().map(|t| t.dropout(0.5, true)).collect::<Vec<_>>();
    let s = draw(source);
    let t = draw(target);
    (s, t)
}

fn rel(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    let (a, b) = (a.to_kind(Kind::Double), b.to_kind(Kind::Double));
    let scale = b.abs().max().double_value(&[]);
    (a - b).abs().max().double_value(&[]) / scale.max(f64::MIN_POSITIVE)
}

struct Case {
    backbone: Backbone,
    weights: PathBuf,
    method: Method,
    lambda: f64,
    lr: f64,
    /// Also train the reference with torch.optim.SGD's rule (the swap control).
    torch_sgd: bool,
}

/// What one case measured, and the Rust run's parameters before and after.
struct Outcome {
    init: BTreeMap<String, Tensor>,
    params: BTreeMap<String, Tensor>,
    summary: String,
}

fn contiguous_map(vs: &nn::VarStore) -> BTreeMap<String, Tensor> {
    vs.variables().into_iter().map(|(k, v)| (k, v.detach().contiguous().copy())).collect()
}

/// The largest of `(value, name)`.
fn worst(items: impl Iterator<Item = (f64, String)>) -> (f64, String) {
    items.fold((0.0, String::new()), |a, b| if b.0 > a.0 || b.0.is_nan() { b } else { a })
}

fn run_case(case: &Case, data_root: &Path, dir: &Path) -> Outcome {
    let cfg = TrainConfig {
        data_root: data_root.to_path_buf(),
        source: "amazon".into(),
        target: "webcam".into(),
        backbone: case.backbone,
        weights: case.weights.clone(),
        method: case.method,
        lambda: case.lambda,
        iterations: K,
        batch_size: BATCH,
        lr: case.lr,
        lr_step: LR_STEP,
        lr_gamma: 0.1,
        eval_every: K,
        seed: SEED,
        device: DeviceChoice::Cpu,
        ..TrainConfig::default()
    };
    cfg.validate().unwrap();
    assert!(cfg.channels_last, "the default layout is the one tested");
    assert_eq!(cfg.head, deep_coral::model::backbone::Head::Linear, "the default (linear) fc8 is the one tested");
    let label = format!("{} {} lambda {}", case.backbone, case.method.name(), case.lambda);

    // --- deep-coral: K iterations through the production step, recording what it was fed.
    let (dump, init, params, rust_losses) = {
        let _rng = LIBTORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let (source, target) = scan(&cfg).unwrap();
        let data = load_images(&cfg, &source, &target, Device::Cpu).unwrap();
        assert_eq!(data.classes.len(), 10);
        let mut model = Model::new(&cfg, data.classes.len(), Device::Cpu).unwrap();
        let mut streams = Streams::fresh(&cfg, &data);
        let init = contiguous_map(&model.vs);
        let mut dump: Vec<(String, Tensor)> =
            init.iter().map(|(k, v)| (format!("init.{k}"), v.shallow_clone())).collect();
        let mut losses = Vec::new();
        for it in 0..K {
            let batch: Batch = next_batch(&data, &cfg, &model.input, &mut streams, Device::Cpu);
            let first_s = at_first_dropout(&model, cfg.backbone, &batch.source);
            let first_t = at_first_dropout(&model, cfg.backbone, &batch.target);
            let (ms, mt) = replay_masks(
                &cfg,
                it,
                &dropout_templates(cfg.backbone, &first_s),
                &dropout_templates(cfg.backbone, &first_t),
            );
            for m in ms.iter().chain(&mt) {
                let twos = m.eq(2.0).sum(Kind::Int64).int64_value(&[]);
                let zeros = m.eq(0.0).sum(Kind::Int64).int64_value(&[]);
                assert_eq!(twos + zeros, m.numel() as i64, "{label}: a dropout mask holds 0 and 2 only");
                assert!(zeros > 0 && twos > 0, "{label}: a dropout mask of one value only");
            }
            // The replay is what the production forward draws: the same reseed, train-mode heads.
            runtime::seed_torch_for_iteration(cfg.seed, it);
            let fs = tch::no_grad(|| model.net.head(&batch.source, Finetune::All, true));
            let ft = tch::no_grad(|| model.net.head(&batch.target, Finetune::All, true));
            for (branch, f, first, m) in [("source", &fs, &first_s, &ms), ("target", &ft, &first_t, &mt)] {
                let d = rel(f, &head_with_masks(&model, cfg.backbone, first, m));
                assert!(
                    d < 1e-5,
                    "{label} iteration {it}: the replayed {branch} masks are not the forward's ({d:.2e})"
                );
            }
            dump.push((format!("it{it}.source"), batch.source.contiguous()));
            dump.push((format!("it{it}.labels"), batch.labels.shallow_clone()));
            dump.push((format!("it{it}.target"), batch.target.contiguous()));
            for (branch, masks) in [("source", &ms), ("target", &mt)] {
                for (j, m) in masks.iter().enumerate() {
                    dump.push((format!("it{it}.mask.{branch}.{j}"), m.contiguous()));
                }
            }
            let stats = update(&mut model, &cfg, &batch, it).unwrap();
            assert!(
                stats.class_loss.is_finite() && stats.coral_loss.is_finite(),
                "{label}: diverged at iteration {it}"
            );
            losses.push((stats.class_loss, stats.coral_loss, stats.align_loss));
        }
        (dump, init, contiguous_map(&model.vs), losses)
    };

    // --- the PyTorch reference, from the same start on the same inputs and masks.
    let inputs = dir.join("inputs.safetensors");
    Tensor::write_safetensors(&dump, &inputs).unwrap();
    drop(dump);
    let config = dir.join("config.json");
    let json = serde_json::json!({
        "backbone": cfg.backbone.name(), "head": cfg.head.name(), "method": cfg.method.name(), "iterations": K, "lr": cfg.lr, "lr_step": cfg.lr_step,
        "lr_gamma": cfg.lr_gamma, "momentum": cfg.momentum, "weight_decay": cfg.weight_decay,
        "lambda": cfg.lambda, "torch_sgd": case.torch_sgd,
    });
    std::fs::write(&config, json.to_string()).unwrap();
    let output = dir.join("reference.safetensors");
    let script = common::root().join("tests/data/step_parity.py");
    let started = std::time::Instant::now();
    let out = Command::new(common::python()).arg(&script).arg(&inputs).arg(&config).arg(&output).output().unwrap();
    assert!(
        out.status.success(),
        "{} failed:\n{}{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let python_s = started.elapsed().as_secs_f64();
    std::fs::remove_file(&inputs).unwrap();
    let reference: BTreeMap<String, Tensor> = Tensor::read_safetensors(&output).unwrap().into_iter().collect();
    std::fs::remove_file(&output).unwrap();
    let losses = |rule: &str, which: &str| Vec::<f64>::try_from(&reference[&format!("{rule}.{which}")]).unwrap();
    let rel_f = |a: f64, b: f64| (a - b).abs() / b.abs().max(f64::MIN_POSITIVE);

    // --- per-iteration losses (the method's own beside CORAL's, which every run logs)
    let (cls, cor, ali) = (losses("caffe", "class_loss"), losses("caffe", "coral_loss"), losses("caffe", "align_loss"));
    let mut failures = Vec::new();
    let (mut worst_class, mut worst_coral) = (0.0f64, 0.0f64);
    for it in 0..K {
        let (rc, rk, ra) = rust_losses[it];
        let (dc, dk, da) = (rel_f(rc, cls[it]), rel_f(rk, cor[it]), rel_f(ra, ali[it]));
        (worst_class, worst_coral) = (worst_class.max(dc), worst_coral.max(dk).max(da));
        println!(
            "{label} it {it} (lr {:.0e}): class {rc:.7} vs {:.7} (rel {dc:.1e}); CORAL {rk:.7e} vs {:.7e} (rel {dk:.1e}); \
             {} {ra:.7e} vs {:.7e} (rel {da:.1e})",
            cfg.lr_at(it),
            cls[it],
            cor[it],
            cfg.method.name(),
            ali[it]
        );
        if !(dc <= TOL && dk <= TOL && da <= TOL) {
            failures.push(format!(
                "iteration {it}: class loss {rc} vs {} (rel {dc:.2e}), CORAL loss {rk} vs {} (rel {dk:.2e}), {} loss \
                 {ra} vs {} (rel {da:.2e})",
                cls[it],
                cor[it],
                cfg.method.name(),
                ali[it]
            ));
        }
    }

    // --- every parameter after K steps, and the update w_K - w_0 it is made of
    let (mut rows, mut table) = (Vec::new(), String::new());
    for (name, p) in &params {
        let want = &reference[&format!("caffe.{name}")];
        let d = rel(p, want);
        let du = rel(&(p - &init[name]), &(want - &init[name]));
        let moved = rel(&init[name], want);
        let torch = match case.torch_sgd {
            true => format!("   vs torch.optim.SGD's rule {:.2e}", rel(p, &reference[&format!("torch_sgd.{name}")])),
            false => String::new(),
        };
        let line = format!("{name:<30} moved {moved:.1e}   rel diff {d:.2e}   of the update {du:.2e}{torch}");
        println!("{label} {line}");
        table += &format!("  {line}\n");
        if !(d <= TOL) {
            failures.push(format!("{name}: max|rust - ref| / max|ref| = {d:.2e} (of the update w_K - w_0: {du:.2e})"));
        }
        if !(du <= TOL_UPDATE) {
            failures.push(format!("{name}: the update w_K - w_0 differs by {du:.2e} of its largest element"));
        }
        rows.push((name.clone(), d, du));
    }
    let worst_param = worst(rows.iter().map(|(n, d, _)| (*d, n.clone())));
    let worst_update = worst(rows.iter().map(|(n, _, du)| (*du, n.clone())));
    let summary = format!(
        "{label} (lr {:.0e}): max rel diff class loss {worst_class:.2e}, CORAL loss {worst_coral:.2e}, parameter \
         {:.2e} ({}), update {:.2e} ({}); Python {python_s:.1} s",
        cfg.lr, worst_param.0, worst_param.1, worst_update.0, worst_update.1
    );
    println!("{summary}");
    assert!(
        failures.is_empty(),
        "{label}: deep-coral differs from the PyTorch reference beyond {TOL:e} (updates: {TOL_UPDATE:e}):\n{}\n\
         {summary}\nevery parameter (moved = max|w_K - w_0| / max|w_K| in the reference; rel diff = \
         max|rust - ref| / max|ref|):\n{table}",
        failures.join("\n")
    );

    // --- control: torch.optim.SGD's rule agrees until the lr step, then differs.
    if case.torch_sgd {
        let (tcls, tcor) = (losses("torch_sgd", "class_loss"), losses("torch_sgd", "coral_loss"));
        for it in 0..=LR_STEP {
            assert!(
                rel_f(tcls[it], cls[it]) <= TOL && rel_f(tcor[it], cor[it]) <= TOL,
                "{label}: torch.optim.SGD's and Caffe's rules should agree before the lr step (iteration {it}: \
                 class loss {} vs {}, CORAL loss {} vs {})",
                tcls[it],
                cls[it],
                tcor[it],
                cor[it]
            );
        }
        // The checks above, run against the torch.optim.SGD-rule reference instead.
        let mut caught = Vec::new();
        for (name, p) in &params {
            let other = &reference[&format!("torch_sgd.{name}")];
            let (d, du) = (rel(p, other), rel(&(p - &init[name]), &(other - &init[name])));
            if d > TOL || du > TOL_UPDATE {
                caught.push(name.clone());
            }
        }
        let (d, name) = worst(params.iter().map(|(k, p)| (rel(p, &reference[&format!("torch_sgd.{k}")]), k.clone())));
        println!(
            "{label}: against torch.optim.SGD's rule the checks fail for {} of {} parameters; max rel diff of a \
             parameter {d:.2e} ({name})",
            caught.len(),
            params.len()
        );
        assert!(
            caught.len() == params.len(),
            "{label}: after the lr step torch.optim.SGD's rule should fail the parameter checks everywhere, \
             only {} of {} do: the test could not tell the two rules apart",
            caught.len(),
            params.len()
        );
    }
    Outcome { init, params, summary }
}

/// Both lambdas of `method` on one backbone (the torch.optim.SGD control with coral), then the
/// control that lambda > 0 matters.
fn parity(backbone: Backbone, weights: impl FnOnce(&Path) -> PathBuf, method: Method, lambda: f64, lr: f64) {
    let started = std::time::Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let data_root = small_transfer(tmp.path());
    let weights = {
        let _rng = LIBTORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
        weights(tmp.path())
    };
    let case =
        |lambda: f64, torch_sgd: bool| Case { backbone, weights: weights.clone(), method, lambda, lr, torch_sgd };
    let without = run_case(&case(0.0, method == Method::Coral), &data_root, tmp.path());
    let with = run_case(&case(lambda, false), &data_root, tmp.path());
    // control: the CORAL term moves the weights by far more than the tolerance, so its
    // gradient (into both branches) is part of what was compared.
    let (d, name) = worst(with.params.iter().map(|(k, p)| (rel(p, &without.params[k]), k.clone())));
    let (du, name_u) = worst(
        with.params.iter().map(|(k, p)| (rel(&(p - &with.init[k]), &(&without.params[k] - &with.init[k])), k.clone())),
    );
    println!(
        "{backbone} {}: lambda {lambda} vs 0: max rel diff of a parameter {d:.2e} ({name}), of an update {du:.2e} \
         ({name_u})",
        method.name()
    );
    assert!(
        d > 10.0 * TOL,
        "{backbone}: lambda {lambda} should move some parameter by far more than {TOL:e} (got {d:.2e})"
    );
    println!("{}\n{}\n{backbone}: {:.1} s", without.summary, with.summary, started.elapsed().as_secs_f64());
}

/// SqueezeNet 1.1 with its real ImageNet weights, lr 3e-4 (module doc).
#[test]
fn squeezenet_steps_match_an_independent_pytorch_implementation() {
    parity(Backbone::Squeezenet1_1, |_| common::squeezenet_weights(), Method::Coral, 1.0, 3e-4);
}

/// AlexNet with its real ImageNet convolutions and a seeded fc6/fc7, lr 1e-5 (module doc).
#[test]
fn alexnet_steps_match_an_independent_pytorch_implementation() {
    parity(Backbone::Alexnet, alexnet_weights, Method::Coral, 1.0, 1e-5);
}

/// DDC (the adaptation layer and its linear MMD, at its paper's lambda 0.25) and DAN (MK-MMD on
/// fc6, fc7, fc8, conv1-conv3 frozen, lambda 1), each on both backbones. SqueezeNet at lr 1e-4:
/// at 3e-4 DDC's MMD (about 20 on its pooled features) moves the adaptation layer so far that
/// the outputs collapse by the third step, where float32 rounding is amplified chaotically.
#[test]
fn ddc_and_dan_steps_match_an_independent_pytorch_implementation() {
    for (method, lambda) in [(Method::Ddc, 0.25), (Method::Dan, 1.0)] {
        parity(Backbone::Squeezenet1_1, |_| common::squeezenet_weights(), method, lambda, 1e-4);
        parity(Backbone::Alexnet, alexnet_weights, method, lambda, 1e-5);
    }
}

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

/// Under bf16 the backbone runs in bfloat16, but the CORAL loss a step minimises is the
/// float32 one of its fc8 outputs: it equals a float64 CORAL of the very same outputs to
/// 1e-5 relative (float32 summation), where a covariance computed in bf16 itself would be
/// off by far more (the cancellation of C_S − C_T that bf16 spoils).
#[test]
fn a_bf16_step_computes_coral_in_float32_on_its_fc8_outputs() {
    // Seeds and draws from libtorch's one generator twice (the test's forward, then the step's).
    let _rng = LIBTORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(0);
    let cfg = TrainConfig {
        backbone: Backbone::Squeezenet1_1,
        lambda: 1.0,
        precision: Precision::Bf16,
        batch_size: 8,
        ..TrainConfig::default()
    };
    let mut model = Model::with_random_weights(&cfg, 10, Device::Cpu);
    let image = |shift: f64| Tensor::randn([8, 3, 227, 227], (Kind::Float, Device::Cpu)) + shift;
    let batch = Batch { source: image(0.0), labels: Tensor::arange(8, (Kind::Int64, Device::Cpu)), target: image(0.5) };

    // The outputs of the step's forward passes (seeded as `update` seeds its dropout).
    runtime::seed_torch_for_iteration(cfg.seed, 0);
    let (fs, ft) = fc8_outputs(&model, &cfg, &batch).unwrap();
    assert_eq!((fs.kind(), ft.kind()), (Kind::Float, Kind::Float));
    runtime::seed_torch_for_iteration(cfg.seed, 0);
    let (fs32, _) = fc8_outputs(&model, &TrainConfig { precision: Precision::Fp32, ..cfg.clone() }, &batch).unwrap();
    assert!(fs.not_equal_tensor(&fs32).any().int64_value(&[]) == 1, "bf16 computed what fp32 does");

    let reference = coral::coral(&fs.to_kind(Kind::Double), &ft.to_kind(Kind::Double)).unwrap().loss.double_value(&[]);
    let stats = update(&mut model, &cfg, &batch, 0).unwrap();
    assert!(
        relative(stats.coral_loss, reference) < 1e-5,
        "step's CORAL {} against float64 {reference}",
        stats.coral_loss
    );
    let in_bf16 = coral::coral(&fs.to_kind(Kind::BFloat16), &ft.to_kind(Kind::BFloat16)).unwrap();
    let in_bf16 = in_bf16.loss.to_kind(Kind::Double).double_value(&[]);
    assert!(relative(in_bf16, reference) > 1e-3, "bf16 covariances {in_bf16} would be as good: {reference}");
}
