"""Time `evoprune demo` and keep its plot and numbers for the README.

Runs the demo as a user would (`evoprune demo --out runs/demo-bench --overwrite`), measures the wall time, copies
`pareto.png` to `benchmarks/results/demo_pareto.png` and writes `benchmarks/results/demo.json` (the table, the
reading, the wall time, the machine and its load).

    python benchmarks/demo.py
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from _common import RESULTS, ROOT, machine, save


def main() -> None:
    out = ROOT / "runs" / "demo-bench"
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "evoprune", "demo", "--out", str(out), "--overwrite"],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"demo failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    shutil.copyfile(out / "pareto.png", RESULTS / "demo_pareto.png")
    save("demo.json", {"wall_time_s": wall, "rows": summary["rows"], "front": summary["front"],
                       "uniform_l1": summary["uniform_l1"], "reading": summary["reading"],
                       "load_average_1min_before": load_before, "load_average_1min_after": os.getloadavg()[0],
                       "machine": machine()})
    print(proc.stdout[-3000:])
    print(f"demo wall time {wall / 60:.1f} min")


if __name__ == "__main__":
    main()
