"""The standard PyTorch pipeline for Deep CORAL, timed, to compare with `deep-coral bench`.

torchvision ImageFolder + DataLoader (one loader per domain, `--num-workers` worker processes
each, decoding JPEGs on the fly): Resize((256, 256)), RandomCrop(227), RandomHorizontalFlip,
ToTensor, Normalize(ImageNet); the torchvision network (random initialisation: speed does not
depend on the weights) with a 10-way last layer; SGD momentum 0.9, weight decay 5e-4;
loss = cross-entropy(source) + lambda * CORAL, CORAL = ||C_s - C_t||_F^2 / (4 d^2) on the last
layer's outputs, both branches with autograd. One iteration = next source batch + next target
batch + forward both + backward + step; `--warmup` untimed iterations first (the workers start
then). `--precision bf16` runs the forward passes under `torch.autocast(dtype=torch.bfloat16)`
(PyTorch's own mixed precision, CPU and CUDA alike) with CORAL on the fc8 outputs cast to float32.

Prints one JSON line per backbone and precision on stdout: img/s (source + target images; the
median timed iteration, as deep-coral bench), and the peak
memory of the whole process tree (this process and its DataLoader workers), sampled from /proc
every 50 ms: the sum of RSS (shared pages counted once per process) and of PSS (shared pages
split between the processes that map them), besides getrusage's own peaks.

CaffeNet has no torchvision model: it is skipped (a JSON line with "skipped" says so).
Each backbone runs in a fresh subprocess, so its memory peak is its own.

`--like deep-coral.json` takes backbones, precisions, batch, threads, iterations, warm-up, lambda and data
from a `deep-coral bench --json` file, so both sides measure the same thing.

    .venv/bin/python bench/pytorch_pipeline.py --backbone squeezenet1_1 --batch-size 8 --iterations 2
"""

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time

TORCHVISION = {"alexnet", "squeezenet1_1"}
ALL = ["alexnet", "caffenet", "squeezenet1_1"]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--like", help="take the settings from a `deep-coral bench --json` file")
    p.add_argument("--backbone", action="append", help="alexnet, squeezenet1_1 (repeatable or comma list)")
    p.add_argument("--precision", action="append", choices=["fp32", "bf16"],
                   help="fp32 or bf16 (torch.autocast); repeatable; default fp32")
    p.add_argument("--batch-size", type=int, default=128, help="images per domain per iteration")
    p.add_argument("--iterations", type=int, default=5, help="timed iterations")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads; 0 = torch's default")
    p.add_argument("--lambda", dest="lam", type=float, default=0.8, help="CORAL weight")
    p.add_argument("--num-workers", type=int, default=2, help="DataLoader workers per domain")
    p.add_argument("--data-root", default="../shared/data/office-caltech10")
    p.add_argument("--source", default="amazon")
    p.add_argument("--target", default="webcam")
    p.add_argument("--channels-last", action="store_true", help="channels-last model and inputs (not standard)")
    p.add_argument("--device", default="cpu", help="cpu or cuda: where the network runs (decoding stays in the workers)")
    args = p.parse_args(argv)
    if args.like:
        with open(args.like) as f:
            ours = json.load(f)
        args.backbone = args.backbone or list(dict.fromkeys(b["backbone"] for b in ours["backbones"]))
        args.precision = args.precision or list(dict.fromkeys(b.get("precision", "fp32") for b in ours["backbones"]))
        args.batch_size = ours["batch_size"]
        args.iterations = ours["iterations"]
        args.warmup = ours["warmup"]
        args.threads = ours["threads"]
        args.lam = ours["lambda"]
        args.data_root = ours["data"]["data_root"]
        args.source = ours["data"]["source"]
        args.target = ours["data"]["target"]
        args.device = "cuda" if ours["device"].startswith("cuda") else "cpu"
        # Each layout deep-coral measured, so that "ours / PyTorch" compares pipelines, not layouts.
        args.layouts = list(dict.fromkeys(b.get("channels_last", ours.get("channels_last", True))
                                          for b in ours["backbones"]))
    else:
        args.layouts = [args.channels_last]
    names = [n for b in (args.backbone or ALL) for n in b.split(",") if n]
    for n in names:
        if n not in ALL:
            p.error(f"unknown backbone {n!r}; expected one of {', '.join(ALL)}")
    args.backbone = names
    args.precision = args.precision or ["fp32"]
    return args


def tree_memory(root):
    """(sum of RSS, sum of PSS) in bytes over `root` and all its descendants."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    rss = pss = 0
    stack = [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
        except OSError:
            pass
    return rss, pss


class PeakSampler(threading.Thread):
    """Samples `tree_memory` of this process every `every` seconds, keeping the peaks."""

    def __init__(self, every=0.05):
        super().__init__(daemon=True)
        self.every, self.stop, self.rss, self.pss = every, threading.Event(), 0, 0

    def run(self):
        while not self.stop.is_set():
            rss, pss = tree_memory(os.getpid())
            self.rss, self.pss = max(self.rss, rss), max(self.pss, pss)
            self.stop.wait(self.every)


def coral(fs, ft):
    """||C_s - C_t||_F^2 / (4 d^2), C the unbiased covariance of the rows."""
    d = fs.shape[1]

    def cov(x):
        n = x.shape[0]
        s = x.sum(0, keepdim=True)
        return (x.t() @ x - s.t() @ s / n) / (n - 1)

    return (cov(fs) - cov(ft)).pow(2).sum() / (4 * d * d)


def run_one(args, name, precision):
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from torchvision import datasets, models, transforms

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    torch.manual_seed(1)
    sampler = PeakSampler()
    sampler.start()

    tf = transforms.Compose([
        transforms.Resize((256, 256)),
        transforms.RandomCrop(227),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])

    def loader(domain):
        ds = datasets.ImageFolder(os.path.join(args.data_root, domain), transform=tf)
        return ds, DataLoader(ds, batch_size=args.batch_size, shuffle=True, drop_last=True, pin_memory=cuda,
                              num_workers=args.num_workers, persistent_workers=args.num_workers > 0)

    source_set, source = loader(args.source)
    target_set, target = loader(args.target)
    classes = len(source_set.classes)

    def forever(dl):
        while True:
            yield from dl

    src, tgt = forever(source), forever(target)
    net = getattr(models, name)(weights=None, num_classes=classes).to(device)
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)

    def iteration():
        xs, ys = next(src)
        xt, _ = next(tgt)
        xs, ys, xt = (t.to(device, non_blocking=True) for t in (xs, ys, xt))
        if args.channels_last:
            xs, xt = xs.contiguous(memory_format=torch.channels_last), xt.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            fs, ft = net(xs), net(xt)
        fs, ft = fs.float(), ft.float()
        loss = F.cross_entropy(fs, ys) + args.lam * coral(fs, ft)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def sync():
        if cuda:
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        iteration()
    sync()
    # The median iteration, as deep-coral bench reports (one iteration held up by something else
    # on the machine does not move it).
    times = []
    for _ in range(args.iterations):
        clock = time.perf_counter()
        iteration()
        sync()
        times.append(time.perf_counter() - clock)
    s_per_iter = statistics.median(times)
    sampler.stop.set()
    sampler.join()
    rss, pss = tree_memory(os.getpid())
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "backbone": name,
        "precision": precision,
        "weights": None,
        "torch": torch.__version__,
        "threads": threads,
        "num_workers": args.num_workers,
        "batch_size": args.batch_size,
        "iterations": args.iterations,
        "warmup": args.warmup,
        "lambda": args.lam,
        "channels_last": args.channels_last,
        "device": args.device,
        "images": len(source_set) + len(target_set),
        "s_per_iter": s_per_iter,
        "img_per_s": 2 * args.batch_size / s_per_iter,
        "peak_rss_tree_bytes": max(sampler.rss, rss),
        "peak_pss_tree_bytes": max(sampler.pss, pss),
        "maxrss_self_bytes": own,
    }


def main(argv):
    args = parse_args(argv)
    if len(args.backbone) == 1 and len(args.precision) == 1 and os.environ.get("DEEP_CORAL_BENCH_CHILD") == "1":
        print(json.dumps(run_one(args, args.backbone[0], args.precision[0])), flush=True)
        return 0
    settings = ["--batch-size", str(args.batch_size), "--iterations", str(args.iterations),
                "--warmup", str(args.warmup), "--threads", str(args.threads), "--lambda", str(args.lam),
                "--num-workers", str(args.num_workers), "--data-root", args.data_root,
                "--source", args.source, "--target", args.target, "--device", args.device]
    for name, precision, channels_last in itertools.product(args.backbone, args.precision, args.layouts):
        layout = ["--channels-last"] if channels_last else []
        if name not in TORCHVISION:
            print(f"pytorch_pipeline: {name} has no torchvision model; skipped", file=sys.stderr)
            print(json.dumps({"backbone": name, "precision": precision, "channels_last": channels_last,
                              "skipped": "no torchvision model"}), flush=True)
            continue
        print(f"pytorch_pipeline: {name} {precision} {'channels-last' if channels_last else 'contiguous'}",
              file=sys.stderr)
        env = dict(os.environ, DEEP_CORAL_BENCH_CHILD="1")
        out = subprocess.run([sys.executable, __file__, "--backbone", name, "--precision", precision]
                             + settings + layout, env=env, stdout=subprocess.PIPE, text=True)
        if out.returncode != 0:
            print(f"pytorch_pipeline: {name} {precision} failed (exit {out.returncode})", file=sys.stderr)
            return out.returncode
        sys.stdout.write(out.stdout)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
