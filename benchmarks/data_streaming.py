"""Datasets larger than memory: the streaming loader on a generated ImageNet-like folder, and its speed on CIFAR-10.

1. Generates an ImageFolder of 20,000 JPEGs at 256x256 (10 classes; 18,000 train / 2,000 test; smooth random
   images so the files are a few kB, as photos would be after JPEG) under ``--work``, once.
2. Runs ``evoprune evaluate`` and ``evoprune prune --selector l1 --image-size 224`` on ``torchvision:resnet18``
   (a plain torchvision state dict with random weights, 1000 classes, ``--num-classes 10``) and samples the peak
   memory of the whole process tree (the command and its data workers) every 0.2 s: PSS (shared pages split
   among the forked workers: what the tree holds), the main process's RSS, and the naive sum of RSS. In memory, the decoded
   folder alone would take 20,000 x 3 x 224 x 224 bytes = 3.0 GB.
3. Images/s of the training loader (random crop + flip, normalised float batches of 128): in memory vs streamed
   with 2 worker processes, on CIFAR-10 from ``../shared/datasets``, measured in one run (the ratio is what counts on
   a shared machine).

    python benchmarks/data_streaming.py            # writes benchmarks/results/data_streaming.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from _common import ROOT, machine, save, shared_cifar10

N_TRAIN, N_TEST, CLASSES, SIZE = 18_000, 2_000, 10, 256


def make_folder(root: Path) -> Path:
    """Smooth random 256x256 JPEGs: an 8x8 colour field upsampled, tinted by class (learnable, a few kB each)."""
    import numpy as np
    from PIL import Image

    done = root / ".complete"
    if done.exists():
        return root
    rng = np.random.default_rng(0)
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        for i in range(n):
            c = i % CLASSES
            d = root / split / f"class{c:02d}"
            d.mkdir(parents=True, exist_ok=True)
            field = rng.integers(0, 200, (8, 8, 3)).astype(np.uint8)
            field[..., c % 3] = np.clip(field[..., c % 3].astype(int) + 25 * (c // 3 + 1), 0, 255)
            Image.fromarray(field).resize((SIZE, SIZE), Image.BILINEAR).save(d / f"{i:05d}.jpg", quality=85)
    done.write_text("ok\n")
    return root


def tree_memory(pid: int) -> tuple:
    """``(PSS, RSS)`` summed over the process tree: PSS splits pages shared by forked workers among them (the
    memory the tree really holds); summed RSS counts such pages once per process."""
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    pss = rss = 0
    for q in procs:
        try:
            full = q.memory_full_info()
            pss += getattr(full, "pss", full.rss)
            rss += full.rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return pss, rss


def run_measured(cmd: list, log: Path) -> dict:
    """Run ``cmd``; return its wall time, exit code and the peak RSS of its process tree (sampled)."""
    print("+", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        peak = {"pss": 0, "rss": 0, "main_rss": 0}

        def sample():
            import psutil

            while proc.poll() is None:
                pss, rss = tree_memory(proc.pid)
                peak["pss"], peak["rss"] = max(peak["pss"], pss), max(peak["rss"], rss)
                try:
                    peak["main_rss"] = max(peak["main_rss"], psutil.Process(proc.pid).memory_info().rss)
                except psutil.NoSuchProcess:
                    pass
                time.sleep(0.2)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        rc = proc.wait()
        th.join()
    out = {"command": " ".join(cmd), "rc": rc, "wall_s": round(time.perf_counter() - t0, 1),
           "peak_pss_tree_mb": round(peak["pss"] / 2 ** 20, 1), "peak_rss_tree_sum_mb": round(peak["rss"] / 2 ** 20, 1),
           "peak_rss_main_mb": round(peak["main_rss"] / 2 ** 20, 1)}
    if rc != 0:
        sys.exit(f"command failed ({rc}); see {log}:\n{log.read_text()[-2000:]}")
    return out


def loader_speed(n_batches: int, workers: int) -> dict:
    """Images/s of the augmented training loader, in memory and streamed, on CIFAR-10 (JPEG)."""
    from evoprune.data import load_dataset, make_loaders

    spec = f"imagefolder:{shared_cifar10()}"
    out = {}
    for mode in ("memory", "stream"):
        t0 = time.perf_counter()
        data = load_dataset(spec, mode=mode)
        setup = time.perf_counter() - t0
        train = make_loaders(data, batch_size=128, workers=workers).train
        train.set_epoch(0)
        n = 0
        t0 = time.perf_counter()
        for i, (x, _) in enumerate(train):
            n += len(x)
            if i + 1 >= n_batches:
                break
        dt = time.perf_counter() - t0
        out[mode] = {"images_per_s": round(n / dt, 1), "images": n, "setup_s": round(setup, 1)}
        print(f"{mode:>6}: {n / dt:8.1f} images/s ({n} images; load/decode/scan {setup:.1f} s)", flush=True)
    out["stream_over_memory"] = round(out["stream"]["images_per_s"] / out["memory"]["images_per_s"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench-stream"))
    ap.add_argument("--loader-batches", type=int, default=60)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("EVOPRUNE_CACHE", str(work / "cache"))
    t0 = time.perf_counter()
    folder = make_folder(work / "folder")
    gen_s = time.perf_counter() - t0
    import torch
    import torchvision

    sd = work / "resnet18_random.pth"
    if not sd.exists():
        torch.manual_seed(0)
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), sd)
    evo = [sys.executable, "-m", "evoprune"]
    data = ["--data", f"imagefolder:{folder}", "--image-size", "224", "--data-workers", str(a.workers),
            "--model", "torchvision:resnet18", "--checkpoint", str(sd), "--num-classes", "10"]
    ev = run_measured([*evo, "--quiet", "evaluate", *data, "--batch-size", "64"], work / "evaluate.log")
    pr = run_measured([*evo, "--quiet", "prune", *data, "--selector", "l1", "--uniform", "--order", "forward", "--target-macs", "0.5",
                       "--batch-size", "32", "--eval-batches", "1", "--bn-batches", "1", "--calib-size", "256",
                       "--finetune-steps", "2", "--finetune-epochs", "0", "--no-refit",  # as the README measured
                       "--out", str(work / "prune"),
                       "--overwrite"], work / "prune.log")
    speed = loader_speed(a.loader_batches, a.workers)
    result = {"folder": {"images": N_TRAIN + N_TEST, "size": SIZE, "classes": CLASSES,
                         "bytes_on_disk_mb": round(sum(f.stat().st_size for f in folder.rglob("*.jpg")) / 2 ** 20, 1),
                         "decoded_at_224_gb": round((N_TRAIN + N_TEST) * 3 * 224 * 224 / 1e9, 2),
                         "generate_s": round(gen_s, 1)},
              "evaluate": ev, "prune": pr, "loader_cifar10": speed, "rss_target_mb": 3 * 1024,
              "under_target": ev["peak_pss_tree_mb"] < 3072 and pr["peak_pss_tree_mb"] < 3072,
              "load_average_1min": os.getloadavg()[0], "machine": machine()}
    save("data_streaming.json", result)
    print(json.dumps({k: result[k] for k in ("evaluate", "prune", "under_target")}, indent=1))


if __name__ == "__main__":
    main()
