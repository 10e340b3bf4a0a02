"""Map backends (evoprune.parallel): specs and their errors, order, send-once, identical strategy results on serial,
processes and a loopback Dask cluster, and runs that survive a worker killed mid-run."""
from __future__ import annotations

import os
import socket
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from evoprune.errors import EvopruneError
from evoprune.parallel import (ProcessBackend, SerialBackend, chunk_bounds, chunked_evaluate, make_map,
                               parse_workers)
from evoprune.registry import PROBLEMS

import evoprune.problems.benchmarks  # noqa: F401  (registers the benchmark problems)

distributed = pytest.importorskip("distributed")
import cloudpickle  # noqa: E402  (a dask dependency)

# Helpers below are sent to worker processes; pickle them by value so workers need not import this test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ------------------------------------------------------------------------------------------------------- helpers
class CrashOnce:
    """A problem proxy whose ``evaluate`` kills its worker process once, after the driver arms it (mid-run).

    ``fired`` is created with O_EXCL, so exactly one process dies, even with several workers armed at once.
    The driver never dies: a one-row population is scored in-process by ``BudgetedEvaluator``.
    """

    def __init__(self, problem, armed: Path, fired: Path) -> None:
        self.problem, self.armed, self.fired = problem, str(armed), str(fired)
        self.driver = os.getpid()

    def __getattr__(self, name):
        if name.startswith("__") or name in ("problem", "armed", "fired", "driver"):
            raise AttributeError(name)  # also keeps unpickling (no __dict__ yet) from recursing
        return getattr(self.problem, name)

    def evaluate(self, pop):
        if os.getpid() != self.driver and os.path.exists(self.armed):
            try:
                fd = os.open(self.fired, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.close(fd)
                os._exit(17)  # no cleanup, no exception: like an OOM kill
        return self.problem.evaluate(pop)


class CountLoads:
    """Records every unpickling (one file per load) so a test can count how often it reached a worker."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = str(log_dir)

    def __setstate__(self, state):
        self.__dict__.update(state)
        Path(self.log_dir, f"{os.getpid()}-{uuid.uuid4().hex}").touch()

    def __call__(self, chunk):
        return np.asarray(chunk, dtype=float).sum(axis=1) * 2.0


def always_die(x):
    os._exit(3)


def fails(x):
    raise ValueError(f"bad item {x}")


def results_equal(a, b) -> None:
    for field in ("best_genome", "best_fitness", "front_genomes", "front_fitness", "history_genomes",
                  "history_fitness"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert a.evaluations == b.evaluations
    assert [dict(r) for r in a.logbook] == [dict(r) for r in b.logbook]


def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg
    return msg


@pytest.fixture(scope="module")
def dask2():
    """One loopback LocalCluster (2 worker processes) for the whole module: startup takes seconds."""
    with make_map("dask:2") as backend:
        yield backend


def _ga(problem, map_fn=None, callback=None):
    from evoprune.strategies.ga import ga

    return ga(problem, 480, 7, callback, pop_size=24, map_fn=map_fn)


def _nsga2(problem, map_fn=None, callback=None):
    from evoprune.strategies.nsga2 import nsga2

    return nsga2(problem, 400, 7, callback, pop_size=20, map_fn=map_fn)


@pytest.fixture(scope="module")
def qp():
    return PROBLEMS.get("planted-qp")(n=48, k=24, seed=3)


@pytest.fixture(scope="module")
def biobj():
    """(cost kept, value pruned) with integer values: every sum is exact in float64, so a genome's score cannot
    depend on how the population was split into chunks (BLAS sums float64 rows in a batch-dependent order)."""
    from evoprune.problems.benchmarks import CostLossSubset
    from evoprune.problems.channel_selection import ChannelSelectionProblem

    rng = np.random.default_rng(3)
    return ChannelSelectionProblem(20, None, CostLossSubset(rng.integers(1, 6, 20), rng.integers(1, 100, 20)),
                                   name="exact-biobjective")


# -------------------------------------------------------------------------------------------------- spec parsing
@pytest.mark.parametrize("spec, scheduler, kind, n", [
    ("serial", None, "serial", None), (None, None, "serial", None), ("processes:3", None, "processes", 3),
    ("4", None, "processes", 4), ("dask:2", None, "dask", 2), ("DASK:1", None, "dask", 1),
    ("dask", "tcp://10.0.0.5:8786", "dask", None), ("dask", "localhost:8786", "dask", None),
])
def test_parse_workers(spec, scheduler, kind, n):
    ws = parse_workers(spec, scheduler)
    assert (ws.kind, ws.n) == (kind, n)
    if scheduler:
        assert ws.scheduler.startswith("tcp://")


@pytest.mark.parametrize("spec, scheduler, words", [
    ("0", None, "at least 1 worker"), ("processes:0", None, "at least 1 worker"), ("dask:0", None, "at least 1"),
    ("-2", None, "at least 1"), ("processes:x", None, "integer"), ("threads:2", None, "unknown --workers"),
    ("", None, "empty"), ("serial:2", None, "no worker count"), ("dask", None, "--scheduler"),
    ("processes:2", "tcp://h:1", "only applies"), ("dask:2", "tcp://h:1", "only applies"),
    ("dask", "http//nonsense", "not an address"), ("dask", "foo://h:1", "unknown protocol"),
    ("dask", "tcp://h:99999", "not an address"), ("dask", "missing-file.json", "does not exist"),
])
def test_bad_specs_are_one_line_errors(spec, scheduler, words):
    with pytest.raises(EvopruneError) as ei:
        make_map(spec, scheduler)
    assert words in one_line_error(ei)


def test_unreachable_scheduler_fails_fast():
    with socket.socket() as s:  # a free local port: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(EvopruneError) as ei:
        make_map("dask", f"tcp://127.0.0.1:{port}")
    assert time.monotonic() - t0 < 10
    msg = one_line_error(ei)
    assert "cannot reach the Dask scheduler" in msg and "dask scheduler" in msg


# ------------------------------------------------------------------------------------------------------ chunking
def test_chunk_bounds_cover_in_order():
    assert chunk_bounds(10, n_chunks=3) == [(0, 4), (4, 7), (7, 10)]
    assert chunk_bounds(5, chunk_size=2) == [(0, 2), (2, 4), (4, 5)]
    assert chunk_bounds(2, n_chunks=8) == [(0, 1), (1, 2)]
    assert chunk_bounds(0, n_chunks=4) == []
    with pytest.raises(EvopruneError):
        chunk_bounds(4, chunk_size=0)


def test_chunked_evaluate_matches_direct(qp):
    pop = qp.sample(np.random.default_rng(0), 13)
    direct = qp.evaluate(pop)
    for backend in (None, map, SerialBackend()):
        for kw in ({}, {"chunk_size": 4}, {"n_chunks": 5}):
            got = chunked_evaluate(backend, qp.evaluate, pop, **kw)
            assert got.shape == (13, 1) and np.array_equal(got, direct)
    assert chunked_evaluate(None, qp.evaluate, pop[:0]).shape == (0, 1)


# ---------------------------------------------------------------------------------------------------- processes
def test_processes_order_send_once_and_errors(tmp_path, qp):
    with make_map("processes:2") as b:
        assert isinstance(b, ProcessBackend) and b.n_workers == 2
        assert b.map(abs, [-3, 1, -2, 5, -8]) == [3, 1, 2, 5, 8]
        fn = CountLoads(tmp_path)
        chunks = [np.eye(4)[i:i + 1] * i for i in range(4)]
        for _ in range(3):
            assert [float(r[0]) for r in b.map(fn, chunks)] == [0.0, 2.0, 4.0, 6.0]
        loads = len(list(tmp_path.iterdir()))
        assert 1 <= loads <= 2  # once per worker, not once per task (12 tasks)
        with pytest.raises(ValueError, match="bad item"):  # the evaluator's own error comes back unchanged
            b.map(fails, [1, 2])
        pop = qp.sample(np.random.default_rng(1), 9)
        assert np.array_equal(chunked_evaluate(b, qp.evaluate, pop), qp.evaluate(pop))
    with pytest.raises(EvopruneError, match="closed"):
        b.map(abs, [1])


def test_processes_worker_killed_mid_run_same_result(tmp_path, qp):
    ref = _ga(qp)
    armed, fired = tmp_path / "armed", tmp_path / "fired"
    crash = CrashOnce(qp, armed, fired)

    def arm(gen, pop, fit):
        if gen == 3:
            armed.touch()

    with make_map("processes:2") as b:
        got = _ga(crash, b.map, arm)
        assert b.restarts == 1
    assert fired.exists()  # a worker really died mid-run
    results_equal(got, ref)


def test_processes_gives_up_with_clear_error():
    with ProcessBackend(2, retries=1) as b:
        with pytest.raises(EvopruneError) as ei:
            b.map(always_die, [1, 2, 3])
    assert "died 2 times" in one_line_error(ei)


# --------------------------------------------------------------------------------------------------------- dask
def test_dask_order_send_once_and_errors(dask2, tmp_path):
    assert dask2.n_workers == 2 and "127.0.0.1" in dask2.describe()
    assert dask2.map(abs, range(-20, 0)) == list(range(20, 0, -1))
    fn = CountLoads(tmp_path)
    chunks = [np.eye(4)[i:i + 1] * i for i in range(4)]
    for i in range(3):
        assert [float(r[0]) for r in dask2.map(fn, chunks)] == [0.0, 2.0, 4.0, 6.0]
        if i == 0:
            time.sleep(2.5)  # > the active memory manager's 2 s period, which drops replicas of scattered data
    loads = sorted(p.name.split("-")[0] for p in tmp_path.iterdir())
    assert 1 <= len(loads) <= 2, (loads, dask2.client.run(os.getpid))  # once per worker, not with each of 12 tasks
    with pytest.raises(ValueError, match="bad item"):
        dask2.map(fails, [1, 2])


def test_ga_dask_identical_to_serial(dask2, qp):
    ref = _ga(qp)
    with make_map("serial") as serial:
        results_equal(_ga(qp, serial.map), ref)
    results_equal(_ga(qp, dask2.map), ref)


def test_nsga2_dask_identical_to_serial(dask2, biobj):
    ref = _nsga2(biobj)
    with make_map("serial") as serial:
        results_equal(_nsga2(biobj, serial.map), ref)
    results_equal(_nsga2(biobj, dask2.map), ref)


def test_deap_toolbox_map_idiom(dask2, qp):
    tb = qp.toolbox(seed=0)
    pop = tb.population(10)
    serial = list(map(tb.evaluate, pop))
    tb.register("map", dask2.map)  # individuals (DEAP creator class) travel to the workers
    assert tb.map(tb.evaluate, pop) == serial


@pytest.mark.parametrize("which", ["ga", "nsga2"])
def test_dask_worker_killed_mid_run_same_result(dask2, tmp_path, qp, biobj, which):
    problem, run = (qp, _ga) if which == "ga" else (biobj, _nsga2)
    ref = run(problem)
    armed, fired = tmp_path / "armed", tmp_path / "fired"
    crash = CrashOnce(problem, armed, fired)

    def arm(*args):
        gen = args[0]["gen"] if isinstance(args[0], dict) else args[0]
        if gen == 3:
            armed.touch()

    got = run(crash, dask2.map, arm)
    assert fired.exists()  # a worker process really died mid-run
    results_equal(got, ref)
    dask2.client.wait_for_workers(2, timeout=60)  # the nanny restarts it; leave the cluster whole


def test_backends_leave_driver_rngs_alone(dask2):
    """Dask's client and an in-process LocalCluster scheduler may draw from the global ``random`` in their threads
    (e.g. picking replica holders for ``scatter(broadcast=True)``), and DEAP's selection draws from it too: that
    made NSGA-II runs depend on the backend. Every backend call hands the driver its RNG states back unchanged."""
    import random

    from evoprune.parallel import _driver_rngs_kept

    random.seed(5)
    np.random.seed(5)
    py, npy = random.getstate(), np.random.get_state()
    with _driver_rngs_kept():
        random.random(), np.random.random()  # stands in for a background thread drawing during a call
    dask2.scatter(np.arange(100_000))
    assert dask2.map(len, [[1], [2, 3]]) == [1, 2]
    assert random.getstate() == py
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), npy))


def test_join_external_cluster_from_the_cli(tmp_path, qp):
    """The documented path: `dask scheduler` + `dask worker` processes, then --workers dask --scheduler ...
    (here through a scheduler file, loopback only); the driver checks the workers' evoprune version."""
    import subprocess

    sched_file = tmp_path / "scheduler.json"
    dask_cli = [sys.executable, "-m", "dask"]
    env = dict(os.environ, DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED="False")
    procs = [subprocess.Popen([*dask_cli, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(sched_file)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        procs.append(subprocess.Popen([*dask_cli, "worker", "--scheduler-file", str(sched_file), "--nthreads", "1",
                                       "--nworkers", "1", "--host", "127.0.0.1", "--no-dashboard"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        ref = _ga(qp)
        with make_map("dask", str(sched_file)) as backend:
            assert backend.n_workers == 1 and backend.cluster is None
            results_equal(_ga(qp, backend.map), ref)
    finally:
        for p in reversed(procs):  # only the processes this test started
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
