"""Where the test suite's time goes. As a pytest plugin it writes, for each test, its wall time, the
CPU time of its pytest process and that of the processes it started and waited for (workers, served
apps, CLIs: `RUSAGE_CHILDREN`); run as a script it reports a run: how busy the cores were, the
files and tests that cost the most, and what each pytest process did at the end.

    .venv/bin/python -m pytest -n auto -p bench.suite_profile --suite-profile /tmp/suite-profile
    .venv/bin/python bench/suite_profile.py /tmp/suite-profile

A process killed by its test (a fault) counts only if the test reaped it; uWSGI's workers and
PostgreSQL's backends don't count, so the children's CPU is a lower bound.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--suite-profile", metavar="DIR", help="write each test's wall and CPU times under DIR")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    folder = item.config.getoption("--suite-profile")
    if not folder:
        yield
        return
    started, wall, cpu, children = time.time(), time.perf_counter(), time.process_time(), _children_cpu()
    yield
    row = {"test": item.nodeid, "start": started, "wall": time.perf_counter() - wall,
           "cpu": time.process_time() - cpu, "children": _children_cpu() - children,
           "process": os.environ.get("PYTEST_XDIST_WORKER", "main")}
    Path(folder).mkdir(parents=True, exist_ok=True)
    with (Path(folder) / f"{row['process']}-{os.getpid()}.jsonl").open("a") as out:
        out.write(json.dumps(row) + "\n")


def _rows(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted(folder.glob("*.jsonl")) for line in path.read_text().splitlines()]


def report(folder: Path, top: int) -> None:
    rows = _rows(folder)
    if not rows:
        raise SystemExit(f"no test times under {folder}: run pytest with -p bench.suite_profile --suite-profile {folder}")
    begin = min(r["start"] for r in rows)
    span = max(r["start"] + r["wall"] for r in rows) - begin
    processes = sorted({r["process"] for r in rows})
    wall = sum(r["wall"] for r in rows)
    own, children = sum(r["cpu"] for r in rows), sum(r["children"] for r in rows)
    cores = len(os.sched_getaffinity(0))
    print(f"{len(rows)} tests in {len(processes)} pytest processes; first start to last end {span:.0f} s")
    print(f"tests' own times summed {wall:.0f} s; CPU {own + children:.0f} s ({own:.0f} s in pytest, "
          f"{children:.0f} s in the processes they started): {(own + children) / wall:.0%} of their time computing, "
          f"{(own + children) / (span * cores):.0%} of {cores} cores over the run (a lower bound)")
    for process in processes:
        mine = [r for r in rows if r["process"] == process]
        print(f"  {process}: busy {sum(r['wall'] for r in mine):.0f} s, "
              f"last test ended at {max(r['start'] + r['wall'] for r in mine) - begin:.0f} s")
    files: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for r in rows:
        entry = files[r["test"].split("::")[0]]
        entry[0] += r["wall"]
        entry[1] += r["cpu"] + r["children"]
        entry[2] += 1
    print(f"\nfiles by wall time (top {top}): wall s, CPU s, tests")
    for name, (w, c, n) in sorted(files.items(), key=lambda x: -x[1][0])[:top]:
        print(f"{w:7.1f} {c:7.1f} {n:5d}  {name}")
    print(f"\ntests by wall time (top {top}): wall s, CPU s")
    for r in sorted(rows, key=lambda r: -r["wall"])[:top]:
        print(f"{r['wall']:7.1f} {r['cpu'] + r['children']:7.1f}  {r['test'][:140]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    report(args.folder, args.top)


if __name__ == "__main__":
    main()
