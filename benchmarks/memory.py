"""Peak memory (RSS) of ``evoprune prune`` on full-size data and model: CIFAR VGG-16-BN width 1 on CIFAR-10 (JPEG).

The point is memory, not accuracy, so the checkpoint is an *untrained* width-1 VGG-16 saved with the same metadata
``evoprune train`` writes (training one takes ~20 min on this CPU), and the search/fine-tune budgets are tiny; the
data (50,000 training + 10,000 test images, in memory as uint8) and the model are full size. By default the GA with
the two-step fitness prunes three units of different shapes (an early 64-channel unit at 32x32, a 256-channel and a
512-channel unit): stage-1 statistics, stage-2 network checks, physical pruning, a fine-tune step and the
evaluations on the full test set all run.

Measured: the prune process tree (the command and any children it starts) -- every 50 ms the summed ``VmRSS`` of
the tree and each process's ``VmHWM`` (its own peak) from ``/proc/<pid>/status``; after it exits,
``getrusage(RUSAGE_CHILDREN).ru_maxrss`` (the kernel's peak RSS of the largest waited-for child: the prune process;
this script does its own work -- writing the checkpoint -- in-process so that nothing else counts). Target: < 4 GB.

    python benchmarks/memory.py                      # dataset cache as it is (~/.cache/evoprune or $EVOPRUNE_CACHE)
    python benchmarks/memory.py --cold-cache         # fresh cache: also decodes the 60,000 JPEGs (the worst case)
    python benchmarks/memory.py --selector l1        # no GA: the memory floor of the pipeline itself
    python benchmarks/memory.py --selector l1 --units all --result memory_all_units_l1.json   # all 13 units

Writes benchmarks/results/memory.json (and keeps the run directory under benchmarks/results/memory_run/ only with
--keep). Exit status 1 when the peak exceeds --target-gb.

Run time is dominated by stage 2 of the fitness (adaptive-BN + held-out accuracy of full-size VGG-16 on 4+4 batches
of 128 images, for every verified candidate: the top-k every few generations and the GA's 10 finalists per unit):
about 5 min per early unit on 2 busy cores (20 min for the default three units at load average 5-8);
``--units features.34`` (one late unit) takes a few minutes and still loads the full data and model.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

from _common import RESULTS, machine, save, shared_cifar10

DEFAULT_RATIOS = {"features.0": 0.5, "features.14": 0.5, "features.34": 0.5}


def make_checkpoint(path: Path, data_spec: str) -> Dict:
    """An untrained VGG-16 width 1 with the metadata 'evoprune train' would record for this dataset."""
    import torch

    from evoprune.data import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD
    from evoprune.models import create_model
    from evoprune.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    kwargs = {"num_classes": 10, "in_channels": 3, "width": 1.0}
    model = create_model("vgg16", **kwargs)
    # imagefolder classes are the sorted folder names: for CIFAR-10 the usual list, which is already sorted
    meta = {"arch": "vgg16", "model_kwargs": kwargs, "dataset": data_spec, "classes": sorted(CIFAR10_CLASSES),
            "mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD), "in_channels": 3, "image_size": 32,
            "accuracy": None, "epochs": 0, "seed": 0, "note": "untrained: for the memory benchmark only"}
    save_checkpoint(str(path), model, meta)
    return {"params": sum(p.numel() for p in model.parameters())}


def _tree(root: int) -> List[int]:
    """``root`` and all its descendants (from /proc/*/stat parent ids)."""
    parents: Dict[int, List[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, []))
    return out


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(cmd: List[str], env: Dict[str, str], log: Path, interval: float = 0.05) -> Dict:
    """Run ``cmd``; poll the process tree's memory; return peaks (MB) and a coarse RSS time series."""
    t0 = time.monotonic()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
    tree_peak_kb, hwm_kb, series, last = 0, {}, [], -1.0
    while proc.poll() is None:
        pids = _tree(proc.pid)
        rss = sum(_status_kb(p, "VmRSS") for p in pids)
        for p in pids:
            hwm_kb[p] = max(hwm_kb.get(p, 0), _status_kb(p, "VmHWM"))
        tree_peak_kb = max(tree_peak_kb, rss)
        now = time.monotonic() - t0
        if now - last >= 1.0:
            series.append([round(now, 1), round(rss / 1024, 1)])
            last = now
        time.sleep(interval)
    wall = time.monotonic() - t0
    ru_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    return {"returncode": proc.returncode, "wall_s": round(wall, 1),
            "peak_rss_mb": round(max([ru_kb] + list(hwm_kb.values())) / 1024, 1),
            "ru_maxrss_mb": round(ru_kb / 1024, 1),
            "peak_tree_rss_mb_polled": round(tree_peak_kb / 1024, 1),
            "processes_seen": len(hwm_kb), "rss_series_mb": series}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="dataset spec (default imagefolder:<shared cifar10-jpeg.tar.gz>)")
    ap.add_argument("--selector", default="ga", help="ga (default), l1, ...")
    ap.add_argument("--units", default=",".join(DEFAULT_RATIOS),
                    help="comma-separated units to prune to half their channels, or 'all' (the 13 convolutions)")
    ap.add_argument("--result", default="memory.json", help="file name under benchmarks/results/")
    ap.add_argument("--pop-size", type=int, default=16)
    ap.add_argument("--generations", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None, help="OMP/torch threads of the prune process")
    ap.add_argument("--cold-cache", action="store_true", help="decode the dataset from scratch (fresh cache)")
    ap.add_argument("--target-gb", type=float, default=4.0)
    ap.add_argument("--keep", action="store_true", help="keep the run directory (benchmarks/results/memory_run)")
    ap.add_argument("--dry-run", action="store_true", help="print the command and exit")
    a = ap.parse_args()

    data = a.data or f"imagefolder:{shared_cifar10()}"
    work = Path(tempfile.mkdtemp(prefix="evoprune-memory-"))
    try:
        ckpt = work / "vgg16_w1_untrained.pt"
        info = make_checkpoint(ckpt, data)
        if a.units == "all":
            import torch

            from evoprune.models.checkpoint import load_model
            from evoprune.pruning.space import PruningSpace

            a.units = ",".join(PruningSpace(load_model(str(ckpt))[0], torch.zeros(1, 3, 32, 32)).names)
        ratios = work / "ratios.json"
        ratios.write_text(json.dumps({u: 0.5 for u in a.units.split(",") if u}))
        out = (RESULTS / "memory_run") if a.keep else (work / "run")
        cmd = [sys.executable, "-m", "evoprune", "--quiet", "prune", "--checkpoint", str(ckpt), "--data", data,
               "--ratios", str(ratios), "--order", "forward", "--selector", a.selector,
               "--pop-size", str(a.pop_size), "--generations", str(a.generations), "--stage2-every", "5",
               "--stage2-top-k", "2", "--calib-batches", "4", "--bn-batches", "4", "--eval-batches", "4",
               "--finetune-steps", "1", "--finetune-epochs", "0", "--batch-size", str(a.batch_size),
               "--device", "cpu", "--seed", "0", "--no-refit",  # the README's figures predate the default refit
               "--out", str(out), "--overwrite"]
        env = dict(os.environ)
        if a.threads:
            env.update({"OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)})
        cache = Path(env.get("EVOPRUNE_CACHE", Path.home() / ".cache" / "evoprune"))
        if a.cold_cache:
            cache = work / "cache"
            env["EVOPRUNE_CACHE"] = str(cache)
        warm = cache.is_dir() and any(p.name.startswith(Path(data.split(":", 1)[-1]).name) for p in cache.iterdir())
        print("+", " ".join(cmd), flush=True)
        if a.dry_run:
            return
        res = measure(cmd, env, work / "prune.log")
        log_tail = (work / "prune.log").read_text()[-3000:]
        if res["returncode"] != 0:
            print(log_tail, file=sys.stderr)
            sys.exit(f"prune failed with exit code {res['returncode']}")
        results = json.loads((out / "results.json").read_text())
        report = {
            "benchmark": "peak RSS of evoprune prune, VGG-16-BN width 1, CIFAR-10 JPEG (full size)",
            "command": " ".join(cmd[1:]).replace(str(work), "<tmp>"),
            "model": {"arch": "vgg16", "width": 1.0, "params": info["params"], "trained": False},
            "data": data, "dataset_cache_warm": bool(warm), "selector": a.selector,
            "units": {u: 0.5 for u in a.units.split(",") if u},
            "target_mb": a.target_gb * 1024, **{k: v for k, v in res.items() if k != "rss_series_mb"},
            "within_target": res["peak_rss_mb"] < a.target_gb * 1024,
            "macs_ratio": results["final"].get("macs_ratio"), "pipeline_wall_time_s": results.get("wall_time_s"),
            "rss_series_mb": res["rss_series_mb"][:: max(1, len(res["rss_series_mb"]) // 300)],
            "machine": dict(machine(), loadavg=os.getloadavg()),
        }
        save(a.result, report)
        print(f"peak RSS {report['peak_rss_mb']:.0f} MB (target < {a.target_gb * 1024:.0f} MB), "
              f"polled tree peak {report['peak_tree_rss_mb_polled']:.0f} MB, {res['wall_s']:.0f}s, "
              f"dataset cache {'warm' if warm else 'cold'}")
        if not report["within_target"]:
            sys.exit(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
