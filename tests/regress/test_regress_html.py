from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from tasks.regress.reports.html_report import to_html
from tasks.regress.session import execute, plan

SUITE = """
    targets:
      baseline: {base}
      candidate: {cand}
    gate: {{no_new_failures_tagged: [p0]}}
    conversations:
      - id: price
        tags: [p0]
        turns: [{{user: "What is the price? <script>alert(1)</script>", expect: [{{contains: "49 USD"}}]}}]
      - id: refund
        turns: [{{user: refund please, expect: [{{icontains: "30 days"}}]}}]
      - id: echo-html
        turns: [{{user: "<b>bold</b>", expect: [{{contains: "x"}}]}}]
"""


@pytest.fixture
def report(write_suite, agent):
    path = write_suite(SUITE.format(base=agent("deterministic"), cand=agent("deterministic_v2")))
    return execute(plan([str(path)]))


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith("#"):
                self.external.append(value)


def test_html_is_self_contained_and_escaped(report):
    page = to_html(report)
    parser = _Collector()
    parser.feed(page)
    assert "script" not in parser.tags and "b" not in parser.tags
    assert parser.external == []
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<style>" in page


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_new_failures_render_in_headless_chromium(report, tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("LABMATE_REQUIRE_SERVICES") == "1":
            pytest.fail("chromium is required (LABMATE_REQUIRE_SERVICES=1) but not installed")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    page = tmp_path / "report.html"
    page.write_text(to_html(report), encoding="utf-8")
    completed = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )
    dom = completed.stdout
    start = dom.index('id="new-failures"')
    end = dom.index('id="fixes"')
    new_failures = dom[start:end]
    assert 'id="conv-price"' in new_failures
    assert "The Pro plan costs 59 USD per month." in new_failures
    assert "expected contains '49 USD'" in new_failures
    assert 'id="conv-refund"' in dom[end:]
    assert "Gate failed" in dom and "new failures tagged p0: price" in dom
    # escaped text stays text after parsing: no injected element
    assert "<script>alert(1)</script>" not in dom
