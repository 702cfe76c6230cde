"""Commands timed as whole processes, one of each per round.

On a shared machine the speed drifts within a minute (the same import floor took 0.37-0.79 s in one
run), so timing one command's repetitions and then the next command's makes their ratio depend on
which minute each got. Interleaving lets drift slow every command alike.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

Runner = Callable[[], float]


def timed(argv: list[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> Runner:
    def run() -> float:
        started = time.perf_counter()
        subprocess.run(argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - started

    return run


def rounds(runners: Mapping[str, Runner], count: int, *, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per run of each command over `count` rounds, after `warmup` untimed rounds (which
    compile and cache every module)."""
    for _ in range(warmup):
        for run in runners.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(count):
        for name, run in runners.items():
            times[name].append(run())
    return times


def report(times: Mapping[str, list[float]], ratios: list[tuple[str, str, float | None]]) -> None:
    """A table of mean, median and min, then each ratio by mean, median and min against its target
    (None: shown without one)."""
    print(f"{'command':<22} {'mean':>7} {'median':>7} {'min':>7}")
    for name, seen in times.items():
        print(f"{name:<22} {statistics.mean(seen):7.3f} {statistics.median(seen):7.3f} {min(seen):7.3f}")
    print()
    for name, floor, target in ratios:
        by = [f(times[name]) / f(times[floor]) for f in (statistics.mean, statistics.median, min)]
        verdict = "" if target is None else f" (target {target}x: {'met' if by[0] <= target else 'NOT met'})"
        print(f"{name:<22} {by[0]:5.2f}x {floor} by mean, {by[1]:5.2f}x by median, {by[2]:5.2f}x by min{verdict}")
