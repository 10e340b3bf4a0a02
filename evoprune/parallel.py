"""Map backends for population evaluation: ``serial``, ``processes:N``, ``dask`` (join a cluster), ``dask:N`` (local).

One interface, chosen by a spec string (the ``--workers`` option)::

    with make_map("dask:2") as backend:                 # or "serial", "processes:4", "dask" + scheduler=...
        result = ga(problem, budget, seed, map_fn=backend.map)
        F = chunked_evaluate(backend, problem.evaluate, population)

``backend.map(fn, items) -> list`` keeps the order of ``items``, like ``list(map(fn, items))``, so it can also be
registered as DEAP's ``toolbox.map``. What travels where:

* ``fn`` (typically ``problem.evaluate`` or ``evaluator.evaluate``, i.e. the model and its calibration batches) is
  sent **once per worker**, not once per task: the backend ships it with :meth:`Backend.scatter` on first use and
  caches the handle by identity (Dask: a worker plugin holding the pickled object, which the scheduler also gives
  to restarted and late-joining workers; processes: pickled once to a file that each worker loads once and keeps;
  either way each worker unpickles it once, on first use). It is a *snapshot*: mutate the object afterwards and
  the workers keep the old copy, so build a new object (or call :meth:`Backend.clear_shared`) when it changes.
* Each task carries only its item (a chunk of the population: a small bool array) and returns its fitness rows.
* Variation, selection, the hall of fame, the budget and every RNG stay on the driver, so a run gives the same
  result on any backend for the same seed (evaluators must score each genome independently of its chunk-mates).

Fault tolerance: Dask re-runs the tasks of a worker that dies (its nanny restarts it); ``processes:N`` recreates a
broken pool and re-submits the unfinished tasks up to ``retries`` times, then fails with a one-line error.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import os
import pickle
import re
import shutil
import sys
import tempfile
import threading
import time
import types
import uuid
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from .errors import EvopruneError

# numpy/torch are imported lazily: a spawned worker runs its initializer (which sets the BLAS/OpenMP thread
# counts) before anything else, and those libraries read the thread settings when they are first imported.

__all__ = ["WorkerSpec", "parse_workers", "make_map", "Backend", "SerialBackend", "ProcessBackend", "DaskBackend",
           "Shared", "chunked_evaluate", "chunk_bounds", "backend_workers"]

_SCHEMES = ("tcp", "tls", "ucx", "ws", "wss", "inproc")
_MAX_SHARED = 8  # cached shared objects per backend; older ones are released (one run usually needs one)


# ------------------------------------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class WorkerSpec:
    """A parsed ``--workers`` / ``--scheduler`` pair (validated, nothing started)."""

    kind: str  # "serial" | "processes" | "dask"
    n: Optional[int] = None  # worker count for processes:N / dask:N; None with dask = an existing cluster
    scheduler: Optional[str] = None  # "tcp://host:port" or a scheduler JSON file (kind "dask", n None)

    def __str__(self) -> str:
        if self.kind == "serial":
            return "serial"
        if self.kind == "dask" and self.n is None:
            return f"dask at {self.scheduler}"
        return f"{self.kind}:{self.n}"


_HOW = "use serial, processes:N, dask:N (local cluster) or dask with --scheduler tcp://host:port"


def parse_workers(spec: Optional[str] = "serial", scheduler: Optional[str] = None) -> WorkerSpec:
    """Validate a ``--workers`` spec (and ``--scheduler``) without starting anything; one-line errors.

    ``serial`` (default), ``processes:N`` (``processes`` = one per CPU; a bare ``N`` means ``processes:N``),
    ``dask:N`` (a loopback ``LocalCluster`` with N worker processes), ``dask`` (join the cluster at ``scheduler``).
    """
    raw = "serial" if spec is None else str(spec).strip().lower()
    if not raw:
        raise EvopruneError(f"--workers is empty; {_HOW}")
    kind, sep, count = raw.partition(":")
    if kind.isdigit() or (kind.startswith("-") and kind[1:].isdigit()):  # "--workers 4" == processes:4
        kind, sep, count = "processes", ":", kind
    if kind not in ("serial", "processes", "dask"):
        raise EvopruneError(f"unknown --workers '{spec}'; {_HOW}")
    n: Optional[int] = None
    if sep:
        if kind == "serial":
            raise EvopruneError(f"--workers '{spec}': serial takes no worker count; use serial or processes:N")
        try:
            n = int(count)
        except ValueError:
            raise EvopruneError(f"--workers '{spec}': the worker count must be an integer, e.g. {kind}:2") from None
        if n < 1:
            raise EvopruneError(f"--workers '{spec}': need at least 1 worker; use serial to evaluate in-process, "
                                f"or {kind}:N with N >= 1")
    elif kind == "processes":
        n = os.cpu_count() or 1
    if scheduler is not None and str(scheduler).strip():
        if kind != "dask" or n is not None:
            raise EvopruneError(f"--scheduler only applies to --workers dask (joining an existing cluster), got "
                                f"--workers {spec}; drop --scheduler or use --workers dask")
        return WorkerSpec("dask", None, _check_scheduler(str(scheduler).strip()))
    if kind == "dask" and n is None:
        raise EvopruneError("--workers dask joins an existing cluster: give --scheduler tcp://host:port (see "
                            "'dask scheduler'), or use --workers dask:N to start a local cluster of N workers")
    return WorkerSpec(kind, n, None)


def _check_scheduler(address: str) -> str:
    """A scheduler address ``[tcp://]host:port`` or an existing scheduler JSON file (``--scheduler-file``)."""
    if address.endswith(".json"):
        if not Path(address).is_file():
            raise EvopruneError(f"scheduler file '{address}' does not exist; start the scheduler with "
                                f"'dask scheduler --scheduler-file {address}' or give tcp://host:port")
        return address
    scheme, sep, rest = address.rpartition("://")
    if sep and scheme not in _SCHEMES:
        raise EvopruneError(f"--scheduler '{address}': unknown protocol '{scheme}'; use tcp://host:port")
    rest = address if not sep else rest
    m = re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[^:/\s]+):(\d{1,5})", rest)
    if not m or not 0 < int(m.group(2)) < 65536:
        raise EvopruneError(f"--scheduler '{address}' is not an address like tcp://host:8786 or a scheduler .json file")
    return address if sep else f"tcp://{address}"


def make_map(spec: Optional[str] = "serial", scheduler: Optional[str] = None, *, retries: int = 2,
             connect_timeout: float = 5.0, worker_timeout: float = 60.0) -> "Backend":
    """Start the backend named by ``spec`` (see :func:`parse_workers`); use it as a context manager.

    ``retries``: how often ``processes:N`` recreates a broken pool within one ``map`` call before giving up.
    ``connect_timeout``: seconds to reach a remote Dask scheduler (an unreachable one fails within it).
    ``worker_timeout``: seconds to wait for a remote cluster to have at least one worker.
    """
    ws = spec if isinstance(spec, WorkerSpec) else parse_workers(spec, scheduler)
    if ws.kind == "serial":
        return SerialBackend()
    if ws.kind == "processes":
        return ProcessBackend(int(ws.n or 1), retries=retries)
    return DaskBackend(n_workers=ws.n, scheduler=ws.scheduler, connect_timeout=connect_timeout,
                       worker_timeout=worker_timeout)


# ---------------------------------------------------------------------------------------------------- the backends
@contextlib.contextmanager
def _driver_rngs_kept(active: bool = True) -> Iterator[None]:
    """Restore the driver's global RNGs (Python ``random``, NumPy's legacy global) after a block.

    The Dask client (and a LocalCluster scheduler, which runs in this process) draw from the global ``random``
    module in their own threads (replica placement, retry jitter, compression sampling); DEAP's selection
    operators (NSGA-II's tournament) draw from the same global state. Work done *for* the driver by a backend
    must not shift the driver's random stream, or a run would depend on the backend.
    """
    if not active:
        yield
        return
    import random

    py = random.getstate()
    np_mod = sys.modules.get("numpy")
    nps = np_mod.random.get_state() if np_mod is not None else None
    try:
        yield
    finally:
        random.setstate(py)
        if nps is not None:
            np_mod.random.set_state(nps)


class Shared:
    """A handle to an object sent once to every worker (see :meth:`Backend.scatter`); pass it to ``map`` as ``fn``."""

    def __init__(self, backend: "Backend", obj: Any, ref: Any) -> None:
        self.backend_name = backend.name
        self.obj = obj  # the driver's copy (kept alive so identity-keyed caches stay valid)
        self.ref = ref  # backend-specific: the object itself (serial), (token, file) or a plugin token (Dask)

    def __repr__(self) -> str:
        return f"Shared({type(self.obj).__name__} on {self.backend_name})"


def _identity(obj: Any) -> Tuple[Any, ...]:
    """Cache key for a callable: a bound method is re-created at every attribute access, so key it by its owner."""
    owner, func = getattr(obj, "__self__", None), getattr(obj, "__func__", None)
    if owner is not None and func is not None and not isinstance(owner, types.ModuleType):
        return ("method", id(owner), id(func))
    return ("object", id(obj))


class Backend:
    """Base class: ``map(fn, items) -> list`` (order kept), ``scatter(obj)``, ``close()``; a context manager."""

    name = "backend"
    remote = True  # fn runs outside the driver: keep the driver's global RNGs untouched by the machinery

    def __init__(self) -> None:
        self._shared: "collections.OrderedDict[Tuple[Any, ...], Shared]" = collections.OrderedDict()
        self._lock = threading.Lock()
        self.closed = False

    # -- public --------------------------------------------------------------------------------------------------
    @property
    def n_workers(self) -> int:
        """Workers available now (chunks per population: one per worker by default)."""
        return 1

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> List[Any]:
        """``[fn(x) for x in items]`` on the workers, in order. ``fn`` (or a :class:`Shared`) goes once per worker."""
        if self.closed:
            raise EvopruneError(f"the {self.name} backend is closed; create a new one with make_map(...)")
        items = list(items)
        if not items:
            return []
        with _driver_rngs_kept(self.remote):
            return self._map(self.share(fn), items)

    def scatter(self, obj: Any) -> Shared:
        """Send ``obj`` to every worker once; the returned handle can be passed to :meth:`map` as ``fn``."""
        with _driver_rngs_kept(self.remote):
            return Shared(self, obj, self._scatter(obj))

    def share(self, fn: Any) -> Shared:
        """The cached :class:`Shared` handle of ``fn`` (scattered on first use; a snapshot of ``fn`` then)."""
        if isinstance(fn, Shared):
            return fn
        if not callable(fn):
            raise EvopruneError(f"map needs a callable, got a {type(fn).__name__}")
        key = _identity(fn)
        with self._lock:
            handle = self._shared.get(key)
            if handle is not None:
                self._shared.move_to_end(key)
                return handle
        handle = self.scatter(fn)
        with self._lock:
            self._shared[key] = handle
            while len(self._shared) > _MAX_SHARED:
                _, old = self._shared.popitem(last=False)
                self._release(old)
        return handle

    def clear_shared(self) -> None:
        """Forget every cached shared object (the next ``map`` sends ``fn`` again): use after mutating it."""
        with self._lock:
            old, self._shared = list(self._shared.values()), collections.OrderedDict()
        for h in old:
            self._release(h)

    def close(self) -> None:
        """Release workers and shared objects. Idempotent."""
        if self.closed:
            return
        with _driver_rngs_kept(self.remote):
            try:
                self.clear_shared()
            finally:
                self.closed = True
                self._close()

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # a forgotten backend must not leave worker processes behind
        try:
            if not getattr(self, "closed", True):
                self.close()
        except Exception:
            pass

    def describe(self) -> str:
        return self.name

    # -- for subclasses ----------------------------------------------------------------------------------------------
    def _scatter(self, obj: Any) -> Any:
        return obj

    def _release(self, handle: Shared) -> None:
        pass

    def _map(self, handle: Shared, items: List[Any]) -> List[Any]:
        raise NotImplementedError

    def _close(self) -> None:
        pass


class SerialBackend(Backend):
    """In-process, one item after the other: the reference every other backend must reproduce."""

    name = "serial"
    remote = False  # fn runs here, exactly as without a backend (also its use of the global RNGs, if any)

    def _map(self, handle: Shared, items: List[Any]) -> List[Any]:
        fn = handle.ref
        return [fn(x) for x in items]


# ---------------------------------------------------------------------------------------------------- processes
_WORKER_THREADS = 1
_WORKER_CACHE: "collections.OrderedDict[str, Any]" = collections.OrderedDict()


def _init_process_worker(threads: int, preload: Sequence[str]) -> None:
    """Pool initializer: cap BLAS/OpenMP threads (N workers share the cores), import modules pickles refer to."""
    global _WORKER_THREADS
    _WORKER_THREADS = max(1, int(threads))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(_WORKER_THREADS)
    import importlib

    for mod in preload:
        try:
            importlib.import_module(mod)
        except Exception:  # a preload is a convenience (DEAP creator classes); the task reports real failures
            pass


def _load_shared(token: str, path: str) -> Any:
    """The worker's copy of a shared object: loaded from its file on first use, then kept (a few, LRU)."""
    obj = _WORKER_CACHE.get(token)
    if obj is None:
        with open(path, "rb") as fh:
            obj = pickle.load(fh)
        _WORKER_CACHE[token] = obj
        while len(_WORKER_CACHE) > _MAX_SHARED:
            _WORKER_CACHE.popitem(last=False)
        if "torch" in sys.modules:  # the object may have imported torch, which sized its pool before we could
            sys.modules["torch"].set_num_threads(_WORKER_THREADS)
    else:
        _WORKER_CACHE.move_to_end(token)
    return obj


def _run_shared(token: str, path: str, item: Any) -> Any:
    return _load_shared(token, path)(item)


def _dumps(obj: Any, where: str) -> bytes:
    """Pickle with cloudpickle (lambdas, closures, ``__main__`` functions) or pickle; one-line error if impossible."""
    try:
        import cloudpickle

        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except ImportError:
        pass
    except Exception as exc:
        raise EvopruneError(f"cannot send {type(obj).__name__} to {where}: it does not pickle ({type(exc).__name__}: "
                            f"{str(exc)[:120]}); use module-level objects, or --workers serial") from None
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise EvopruneError(f"cannot send {type(obj).__name__} to {where}: it does not pickle ({type(exc).__name__}: "
                            f"{str(exc)[:120]}); define it at module level, or use --workers serial") from None


def _preload_modules() -> Tuple[str, ...]:
    # DEAP individuals are instances of classes created at run time in deap.creator by this module: a worker
    # must import it before it can unpickle one (toolbox.map(toolbox.evaluate, individuals)).
    return tuple(m for m in ("evoprune.problems.base",) if m in sys.modules)


class ProcessBackend(Backend):
    """A spawn-context process pool on this machine (safe with torch and threads; no fork of a CUDA context).

    Shared objects are pickled once to a private temporary folder; each worker loads one once and keeps it, also a
    worker that replaced a dead one. A dead worker breaks the pool: it is recreated and the unfinished items are
    re-submitted, at most ``retries`` times per ``map`` call.
    """

    name = "processes"

    def __init__(self, n_workers: int, retries: int = 2) -> None:
        super().__init__()
        if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
            raise EvopruneError(f"processes backend needs at least 1 worker, got {n_workers!r}")
        self._n = n_workers
        self.retries = max(0, int(retries))
        self.restarts = 0  # pools recreated after a worker died (for logs and tests)
        self._pool: Optional[cf.ProcessPoolExecutor] = None
        self._dir = Path(tempfile.mkdtemp(prefix="evoprune-shared-"))
        self._threads = max(1, (os.cpu_count() or 1) // n_workers)

    @property
    def n_workers(self) -> int:
        return self._n

    def describe(self) -> str:
        return f"processes:{self._n} ({self._threads} thread(s) each)"

    def _ensure_pool(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            import multiprocessing as mp

            self._pool = cf.ProcessPoolExecutor(max_workers=self._n, mp_context=mp.get_context("spawn"),
                                                initializer=_init_process_worker,
                                                initargs=(self._threads, _preload_modules()))
        return self._pool

    def _drop_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _scatter(self, obj: Any) -> Tuple[str, str]:
        token = uuid.uuid4().hex
        path = self._dir / f"{token}.pkl"
        from .io import atomic_write_bytes

        atomic_write_bytes(path, _dumps(obj, "worker processes"))
        return token, str(path)

    def _release(self, handle: Shared) -> None:
        try:
            os.unlink(handle.ref[1])
        except OSError:
            pass

    def _map(self, handle: Shared, items: List[Any]) -> List[Any]:
        token, path = handle.ref
        results: List[Any] = [None] * len(items)
        todo = list(range(len(items)))
        failures = 0
        while todo:
            pool = self._ensure_pool()
            futures: Dict[cf.Future, int] = {}
            try:
                for i in todo:  # inside the try: the pool can break while we are still submitting
                    futures[pool.submit(_run_shared, token, path, items[i])] = i
                for fut in cf.as_completed(futures):
                    results[futures[fut]] = fut.result()  # a task's own exception propagates unchanged
                return results
            except BrokenProcessPool:
                # keep what finished before the crash, re-submit the rest to a fresh pool
                finished = {i for f, i in futures.items()
                            if f.done() and not f.cancelled() and f.exception() is None}
                for f, i in futures.items():
                    if i in finished:
                        results[i] = f.result()
                todo = [i for i in todo if i not in finished]
                self._drop_pool()
                failures += 1
                self.restarts += 1
                if failures > self.retries:
                    raise EvopruneError(
                        f"a worker process died {failures} times while evaluating ({len(todo)} of {len(items)} "
                        f"tasks unfinished): out of memory, or the evaluation crashes the interpreter; use fewer "
                        f"workers, or --workers serial to see the error") from None
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        return results

    def _close(self) -> None:
        try:
            self._drop_pool()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------- dask
_WORKER_BLOBS: Dict[str, bytes] = {}  # Dask worker side: token -> pickled shared object, installed by a plugin


def _run_token(token: str, item: Any) -> Any:
    """A Dask task: the worker's copy of shared object ``token`` (unpickled on first use, then kept) on ``item``."""
    obj = _WORKER_CACHE.get(token)
    if obj is None:
        blob = _WORKER_BLOBS.get(token)
        if blob is None:
            raise RuntimeError(f"shared object {token} is not installed on this worker (released too early?)")
        obj = pickle.loads(blob)
        _WORKER_CACHE[token] = obj
        while len(_WORKER_CACHE) > _MAX_SHARED:
            _WORKER_CACHE.popitem(last=False)
    return obj(item)


def _share_plugin(token: str, blob: bytes) -> Any:
    """A Dask worker plugin that installs one shared object on every worker, restarted and late-joining ones too.

    Why a plugin rather than ``client.scatter(obj, broadcast=True)``: the scheduler's active memory manager drops
    "extra" replicas of scattered data every few seconds (ReduceReplicas), so the object kept moving between
    workers and being unpickled again; a plugin's payload stays put and reaches workers that join later.
    Defined lazily: importing ``distributed`` at module level would slow down every ``processes`` worker start.
    """
    from distributed.diagnostics.plugin import WorkerPlugin

    class EvopruneShared(WorkerPlugin):
        idempotent = True

        def __init__(self) -> None:
            self.name = f"evoprune-shared-{token}"
            self.token, self.blob = token, blob

        def setup(self, worker: Any) -> None:
            from evoprune import parallel  # the worker's module, not a by-value copy of its globals

            parallel._WORKER_BLOBS[self.token] = self.blob

        def teardown(self, worker: Any) -> None:
            from evoprune import parallel

            parallel._WORKER_BLOBS.pop(self.token, None)
            parallel._WORKER_CACHE.pop(self.token, None)

    return EvopruneShared()


def _probe() -> Dict[str, Any]:
    """Run on every Dask worker at connect: can it import this evoprune, and which version is it?"""
    import evoprune

    return {"evoprune": evoprune.__version__, "python": sys.version.split()[0]}


def _preload_plugin(modules: Sequence[str]) -> Any:
    """A Dask worker plugin importing ``modules`` on every worker, also restarted and late-joining ones."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class EvopruneImports(WorkerPlugin):
        name = "evoprune-imports"
        idempotent = True

        def __init__(self, mods: Sequence[str]) -> None:
            self.mods = tuple(mods)

        def setup(self, worker: Any) -> None:
            import importlib

            for mod in self.mods:
                try:
                    importlib.import_module(mod)
                except Exception:  # a convenience for unpickling DEAP individuals; tasks report real failures
                    pass

    return EvopruneImports(modules)


WORKER_CONFIG: Dict[str, Any] = {
    # Dask's nanny exports MALLOC_TRIM_THRESHOLD_=65536 to its workers; setting it switches off glibc's dynamic
    # mmap threshold, so every large torch temporary is mmap'ed and page-faulted afresh: measured 1.8x the CPU
    # time per stage-2 evaluation (benchmarks/parallel_scaling.py). None removes the variable.
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    # the statistical profiler samples every thread each 10 ms: CPU the evaluations need on busy cores
    "distributed.worker.profile.enabled": False,
}
"""Dask settings for the workers of ``dask:N`` (set the same for ``dask worker``: see docs/cluster.md)."""


def _dask_error_types() -> Tuple[type, ...]:
    from distributed.scheduler import KilledWorker

    return (KilledWorker,)


class DaskBackend(Backend):
    """A Dask ``distributed`` cluster: a loopback ``LocalCluster`` of ``n_workers`` processes, or an existing one.

    Shared objects are installed on every worker by a worker plugin (see :func:`_share_plugin`), which the
    scheduler also gives to restarted and late-joining workers; tasks carry only a token and their item. Tasks of
    a worker that dies are re-run elsewhere by the scheduler; a task that kills its worker repeatedly
    (``distributed.scheduler.allowed-failures``, default 3) fails with a one-line error.
    """

    name = "dask"

    def __init__(self, n_workers: Optional[int] = None, scheduler: Optional[str] = None,
                 connect_timeout: float = 5.0, worker_timeout: float = 60.0) -> None:
        super().__init__()
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise EvopruneError("--workers dask needs dask.distributed: pip install 'evoprune[dist]' "
                                "(or pip install 'dask[distributed]')") from None
        if (n_workers is None) == (scheduler is None):
            raise EvopruneError("dask backend: give either n_workers (local cluster) or scheduler (existing one)")
        self.cluster: Any = None
        self.client: Any = None
        self.address = scheduler
        try:
            with _driver_rngs_kept():
                self._start(n_workers, scheduler, connect_timeout, worker_timeout)
        except BaseException:
            self._close()
            self.closed = True
            raise

    def _start(self, n_workers: Optional[int], scheduler: Optional[str], connect_timeout: float,
               worker_timeout: float) -> None:
        if scheduler is None:
            self._start_local(int(n_workers))  # type: ignore[arg-type]
        else:
            self._connect(scheduler, connect_timeout, worker_timeout)
        modules = _preload_modules()
        if modules:
            self.client.register_plugin(_preload_plugin(modules))

    def _start_local(self, n: int) -> None:
        import logging

        import dask
        from distributed import Client, LocalCluster

        # loopback only, no dashboard (no extra port, no bokeh); one thread per worker process, and the nanny
        # sets OMP/MKL threads to 1, so N workers use N cores; the nanny restarts a worker that dies.
        with dask.config.set(WORKER_CONFIG):
            self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                                        dashboard_address=None, worker_dashboard_address=None,
                                        silence_logs=logging.ERROR)
        self.client = Client(self.cluster, set_as_default=False)
        self.address = self.cluster.scheduler_address

    def _connect(self, scheduler: str, connect_timeout: float, worker_timeout: float) -> None:
        from distributed import Client

        t0 = time.monotonic()
        kw: Dict[str, Any] = {"scheduler_file": scheduler} if scheduler.endswith(".json") else {"address": scheduler}
        try:
            self.client = Client(timeout=f"{connect_timeout}s", set_as_default=False, **kw)
        except (OSError, TimeoutError) as exc:
            raise EvopruneError(
                f"cannot reach the Dask scheduler at {scheduler} within {time.monotonic() - t0:.0f} s "
                f"({type(exc).__name__}); start it with 'dask scheduler', check host, port and firewall, "
                "or use --workers dask:N for a local cluster") from None
        except Exception as exc:  # bad scheduler file contents, protocol errors
            raise EvopruneError(f"cannot connect to the Dask scheduler at {scheduler}: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:120] if str(exc) else ''}") from None
        try:
            self.client.wait_for_workers(1, timeout=worker_timeout)
        except (TimeoutError, OSError):
            raise EvopruneError(f"the Dask scheduler at {scheduler} has no workers after {worker_timeout:.0f} s; "
                                f"start some with 'dask worker {self.client.scheduler.address}'") from None
        try:
            info = self.client.run(_probe)
        except Exception as exc:
            raise EvopruneError(f"Dask workers at {scheduler} cannot run evoprune ({type(exc).__name__}: "
                                f"{str(exc)[:100]}); install the same evoprune on every worker machine") from None
        from . import __version__

        bad = sorted({v["evoprune"] for v in info.values() if v["evoprune"] != __version__})
        if bad:
            raise EvopruneError(f"Dask workers at {scheduler} run evoprune {', '.join(bad)}, this driver runs "
                                f"{__version__}; install the same version everywhere")

    @property
    def n_workers(self) -> int:
        if self.cluster is not None:
            return max(1, len(self.cluster.workers))
        try:
            return max(1, len(self.client.scheduler_info(n_workers=-1)["workers"]))
        except TypeError:  # older distributed: no n_workers argument
            return max(1, len(self.client.scheduler_info()["workers"]))

    def describe(self) -> str:
        kind = "local cluster" if self.cluster is not None else "cluster"
        return f"dask: {self.n_workers} worker(s), {kind} at {self.address}"

    def _scatter(self, obj: Any) -> str:
        token = uuid.uuid4().hex
        plugin = _share_plugin(token, _dumps(obj, "the Dask workers"))
        self.client.register_plugin(plugin)  # returns once every current worker has it
        return token

    def _release(self, handle: Shared) -> None:
        try:
            self.client.unregister_worker_plugin(f"evoprune-shared-{handle.ref}")
        except Exception:  # closing anyway, or the cluster is gone
            pass

    def _map(self, handle: Shared, items: List[Any]) -> List[Any]:
        killed = _dask_error_types()
        for attempt in range(3):
            futures = self.client.map(_run_token, [handle.ref] * len(items), items, pure=False)
            try:
                out = self.client.gather(futures)
                for f in futures:
                    f.release()
                return out
            except killed as exc:
                raise EvopruneError(f"a Dask task killed its worker repeatedly ({str(exc).splitlines()[0][:120]}); "
                                    "out of memory, or the evaluation crashes the interpreter; try "
                                    "--workers serial to see the error") from None
            except cf.CancelledError:  # distributed's FutureCancelledError derives from it
                self.client.cancel(futures)
                if attempt == 2:
                    raise EvopruneError("Dask tasks were cancelled 3 times (the cluster lost its workers); "
                                        "check the workers and retry") from None
            except BaseException:
                self.client.cancel(futures)  # e.g. the evaluator raised: drop the sibling tasks
                raise
        raise AssertionError("unreachable")

    def _close(self) -> None:
        client, cluster, self.client, self.cluster = self.client, self.cluster, None, None
        try:
            if client is not None:
                client.close()
        finally:
            if cluster is not None:
                cluster.close()


# --------------------------------------------------------------------------------------------------- chunking
def backend_workers(mapper: Any) -> Optional[int]:
    """Worker count behind a :class:`Backend` or its bound ``map`` (``None`` for plain callables like ``map``)."""
    owner = mapper if isinstance(mapper, Backend) else getattr(mapper, "__self__", None)
    return owner.n_workers if isinstance(owner, Backend) else None


def chunk_bounds(n_items: int, n_chunks: Optional[int] = None,
                 chunk_size: Optional[int] = None) -> List[Tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n_items)`` in order: ``chunk_size`` rows each, or ``n_chunks``
    nearly equal parts (sizes differ by at most one, like ``numpy.array_split``)."""
    if n_items <= 0:
        return []
    if chunk_size is not None:
        if int(chunk_size) < 1:
            raise EvopruneError(f"chunk size must be >= 1, got {chunk_size}")
        size = int(chunk_size)
        return [(s, min(s + size, n_items)) for s in range(0, n_items, size)]
    k = max(1, min(int(n_chunks or 1), n_items))
    base, extra = divmod(n_items, k)
    out, start = [], 0
    for j in range(k):
        stop = start + base + (1 if j < extra else 0)
        out.append((start, stop))
        start = stop
    return out


def chunked_evaluate(backend: Any, evaluate_fn: Callable[[Any], Any], population: Any,
                     chunk_size: Optional[int] = None, *, n_chunks: Optional[int] = None) -> Any:
    """Score ``population`` ``[P, n]`` with ``evaluate_fn`` in row chunks mapped through ``backend``; ``[P, n_obj]``.

    ``backend``: a :class:`Backend`, any ``map_fn(fn, items)`` (e.g. ``backend.map``, builtins ``map``), or
    ``None`` (one in-process call on the whole population). Chunks are ``chunk_size`` rows, else ``n_chunks``
    equal parts, else one per worker of the backend. Rows come back in order; 1-D results become one column.
    """
    import numpy as np

    pop = np.asarray(population)
    if backend is None or len(pop) == 0:
        out = np.asarray(evaluate_fn(pop), dtype=float) if len(pop) else np.zeros((0, 1))
        return out[:, None] if out.ndim == 1 else out
    mapper = backend.map if isinstance(backend, Backend) else backend
    if chunk_size is None and n_chunks is None:
        n_chunks = backend_workers(mapper) or 1
    pieces = [pop[a:b] for a, b in chunk_bounds(len(pop), n_chunks, chunk_size)]
    parts = []
    for piece, res in zip(pieces, list(mapper(evaluate_fn, pieces))):
        arr = np.asarray(res, dtype=float)
        arr = arr[:, None] if arr.ndim == 1 else arr
        if arr.shape[0] != len(piece):
            raise EvopruneError(f"evaluator returned {arr.shape[0]} fitness rows for a chunk of {len(piece)} genomes")
        parts.append(arr)
    return np.concatenate(parts)
