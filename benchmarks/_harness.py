"""Shared helpers for benchmark scripts: time ours against a reference in one run.

Every benchmark prints lines of the form::

    name: ours 0.123 s, reference 0.456 s, ratio 0.27 (target <= 1.10) [ok]

where ``ratio = ours / reference`` (lower is better for time and memory) and
the optional target is the requirement from the issue. ``make bench`` runs all
``bench_*.py`` scripts with ``--quick`` unset; each script also accepts
``--quick`` for a small smoke run.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import threading
import time
import tracemalloc
from collections.abc import Callable


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_memory(fn: Callable[[], object]) -> float:
    """Peak resident memory added while ``fn()`` runs, in MiB (sampled RSS).

    Sampling ``/proc/self/statm`` every 5 ms catches allocations from C
    extensions and torch that ``tracemalloc`` does not see.
    """
    import os

    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * page

    gc.collect()
    base = rss()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        stop.set()
        thread.join()
    peak[0] = max(peak[0], rss())
    return (peak[0] - base) / 2**20


def python_peak_memory(fn: Callable[[], object]) -> float:
    """Peak memory of numpy/Python allocations during ``fn()`` in MiB (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


def report(
    name: str,
    ours: float,
    reference: float,
    *,
    unit: str = "s",
    target: float | None = None,
    higher_is_better: bool = False,
    note: str = "",
) -> str:
    """Print and return one result line: ``name: ours …, reference …, ratio …``."""
    ratio = ours / reference if reference else float("inf")
    line = f"{name}: ours {ours:.4g} {unit}, reference {reference:.4g} {unit}, ratio {ratio:.3g}"
    if target is not None:
        ok = ratio >= target if higher_is_better else ratio <= target
        sign = ">=" if higher_is_better else "<="
        line += f" (target {sign} {target:g}) [{'ok' if ok else 'MISSED'}]"
    if note:
        line += f"  # {note}"
    print(line, flush=True)
    return line


def arguments(description: str) -> argparse.Namespace:
    """Common command-line arguments: ``--quick`` for a small smoke run."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    return parser.parse_args()


def in_child(fn: Callable[..., dict], *args) -> dict:
    """``fn(*args)`` (returning a JSON-able dict) in a forked child process.

    For memory figures: the child starts with the parent's imports and objects
    (copy-on-write), so what it measures is the run alone. POSIX only.

    Raises
    ------
    RuntimeError
        With the child's traceback when ``fn`` raised.
    """
    import json
    import os
    import traceback

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_end)
        code = 0
        try:
            payload = json.dumps(fn(*args))
        except BaseException:
            payload = json.dumps({"error": traceback.format_exc()})
            code = 1
        with os.fdopen(write_end, "w") as fh:
            fh.write(payload)
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as fh:
        payload = fh.read()
    os.waitpid(pid, 0)
    result = json.loads(payload)
    if "error" in result:
        raise RuntimeError(f"child {fn.__name__}{args[:3]} failed:\n{result['error']}")
    return result
