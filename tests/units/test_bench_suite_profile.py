"""bench/suite_profile.py: the plugin records each test's own and its children's CPU, and the report reads it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

TESTS = '''
import subprocess, sys, time

def test_waits():
    time.sleep(0.3)

def test_starts_a_busy_child():
    subprocess.run([sys.executable, "-c", "sum(i * i for i in range(3_000_000))"], check=True)
'''


def test_the_plugin_times_each_test_and_its_children_and_the_report_reads_them(tmp_path: Path) -> None:
    (tmp_path / "test_tiny.py").write_text(TESTS)
    profile = tmp_path / "profile"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "bench.suite_profile",
                          "--suite-profile", str(profile), "--rootdir", str(tmp_path), "-c", "/dev/null",
                          str(tmp_path / "test_tiny.py")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr

    from bench.suite_profile import _rows

    rows = {r["test"].split("::")[1]: r for r in _rows(profile)}
    assert rows["test_waits"]["wall"] >= 0.3 and rows["test_waits"]["children"] < 0.05
    assert rows["test_starts_a_busy_child"]["children"] > 0.05  # the child's CPU, not the test's own

    shown = subprocess.run([sys.executable, "bench/suite_profile.py", str(profile)], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "2 tests in 1 pytest processes" in shown.stdout and "test_starts_a_busy_child" in shown.stdout


def test_the_report_of_an_empty_folder_says_how_to_make_one(tmp_path: Path) -> None:
    shown = subprocess.run([sys.executable, "bench/suite_profile.py", str(tmp_path)], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 1 and "-p bench.suite_profile --suite-profile" in shown.stderr
