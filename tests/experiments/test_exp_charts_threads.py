"""Charts drawn by several threads at once, as the embedded worker does when two runs of a sweep end
together: matplotlib's first import from two threads deadlocked on its own circular imports (Python's
import lock then hands one thread a half-initialized module), and the card lost its chart, the sweep
its summary. Each try is a fresh process, where matplotlib is not imported yet."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DRAW_AT_ONCE = """
import sys, tempfile, threading
from pathlib import Path
from tasks.experiments import charts

errors, barrier, tmp = [], threading.Barrier(6), Path(tempfile.mkdtemp())

def draw(i):
    lines, bars = [("a", [(0, 1.0), (1, 2.0)])], [("a", [(0, 1.0)]), ("b", [(0, 2.0)])]
    barrier.wait()
    try:
        charts.history(lines if i % 2 else bars, metric="m", title="t", path=tmp / f"{i}.png")
    except Exception as exc:
        errors.append(repr(exc))

threads = [threading.Thread(target=draw, args=(i,)) for i in range(6)]
[t.start() for t in threads]
[t.join() for t in threads]
print(errors or "ok")
"""


def test_charts_drawn_from_several_threads_at_first_import_all_succeed(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    for _ in range(4):  # the race lost about one try in two before
        done = subprocess.run([sys.executable, "-c", DRAW_AT_ONCE], cwd=root, capture_output=True, text=True, timeout=120,
                              env={"PATH": "/usr/bin:/bin", "LABMATE_HOME": str(tmp_path), "MPLBACKEND": "Agg"})
        assert done.stdout.strip().splitlines()[-1:] == ["ok"], done.stdout + done.stderr
