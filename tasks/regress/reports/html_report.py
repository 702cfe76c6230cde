"""A self-contained HTML report: inline CSS, no scripts or external assets, every text escaped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Regression report — {{ 'PASSED' if report.verdict.passed else 'FAILED' }}</title>
<style>
  :root { --red:#b42318; --green:#067647; --amber:#b54708; --grey:#475467; --line:#eaecf0; }
  body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:#101828;
         margin:0; background:#f9fafb; }
  main { max-width: 1100px; margin: 0 auto; padding: 24px; }
  h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 32px 0 8px; }
  .verdict { border-radius: 10px; padding: 16px 20px; color: #fff; margin: 16px 0; }
  .verdict.pass { background: var(--green); } .verdict.fail { background: var(--red); }
  .verdict ul { margin: 8px 0 0; padding-left: 20px; }
  .note { opacity: .85; font-size: 13px; }
  table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid var(--line); }
  th, td { text-align: left; padding: 8px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
  th { background: #f2f4f7; font-weight: 600; font-size: 13px; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .pill { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 12px; font-weight: 600; }
  .pill.pass { background: #dcfae6; color: var(--green); } .pill.fail { background: #fee4e2; color: var(--red); }
  .pill.error { background: #fdead7; color: var(--amber); }
  .change-new_failure { color: var(--red); font-weight: 700; } .change-fix { color: var(--green); font-weight: 700; }
  .card { background: #fff; border: 1px solid var(--line); border-left: 4px solid var(--grey);
          border-radius: 8px; padding: 12px 16px; margin: 12px 0; }
  .card.new_failure { border-left-color: var(--red); } .card.fix { border-left-color: var(--green); }
  .card h3 { margin: 0 0 6px; font-size: 16px; }
  .replies { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; margin-top: 8px; }
  .reply { background: #f2f4f7; border-radius: 6px; padding: 8px 10px; white-space: pre-wrap; word-break: break-word; }
  .label { font-size: 12px; color: var(--grey); text-transform: uppercase; letter-spacing: .04em; }
  .failed { color: var(--red); margin: 4px 0 0; padding-left: 18px; }
  .tags { color: var(--grey); font-size: 13px; }
  details { margin: 6px 0; } summary { cursor: pointer; }
  .turn { border-top: 1px dashed var(--line); padding: 6px 0; }
  .ok { color: var(--green); } .ko { color: var(--red); }
  code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 13px; }
  @media (max-width: 700px) { .replies { grid-template-columns: 1fr; } }
</style>
</head>
<body><main>
<h1>Regression report</h1>
<div class="tags">{% for role, uri in report.targets.items() %}{{ role }}: <code>{{ uri }}</code>{% if not loop.last %} · {% endif %}{% endfor %}</div>

<section id="verdict" class="verdict {{ 'pass' if report.verdict.passed else 'fail' }}">
  <strong>Gate {{ 'passed' if report.verdict.passed else 'failed' }}</strong>
  {% if report.verdict.reasons %}<ul>{% for r in report.verdict.reasons %}<li>{{ r }}</li>{% endfor %}</ul>{% endif %}
  {% for n in report.verdict.notes %}<div class="note">{{ n }}</div>{% endfor %}
</section>

<table id="summary">
  <tr><th>target</th><th>pass rate</th><th>passed</th><th>failed</th><th>errors</th><th>p95 latency</th></tr>
  {% for role, s in report.summary.items() %}
  <tr><td>{{ role }}</td><td class="num">{{ '%.1f%%' % (s.pass_rate * 100) }}</td><td class="num">{{ s.passed }}</td>
      <td class="num">{{ s.failed }}</td><td class="num">{{ s.errors }}</td>
      <td class="num">{{ '—' if s.p95_latency_ms is none else '%.0f ms' % s.p95_latency_ms }}</td></tr>
  {% endfor %}
</table>

{% macro card(entry) %}
<article class="card {{ entry.change or '' }}" id="conv-{{ entry.key }}">
  <h3>{{ entry.key }}</h3>
  <div class="tags">tags: {{ entry.tags | join(', ') or '—' }}
    {% for role, status in entry.status.items() %} · {{ role }} <span class="pill {{ status }}">{{ status }}</span>{% endfor %}</div>
  {% set d = entry.divergence %}
  {% if d %}
    <p>First divergence at turn {{ d.turn }} — user: <q>{{ d.user }}</q></p>
    <div class="replies">
      <div><div class="label">baseline</div><div class="reply">{{ d.baseline_reply if d.baseline_reply is not none else '(no reply)' }}</div>
        {% if d.baseline_failed %}<ul class="failed">{% for f in d.baseline_failed %}<li>expected {{ f }}</li>{% endfor %}</ul>{% endif %}</div>
      <div><div class="label">candidate</div><div class="reply">{{ d.candidate_reply if d.candidate_reply is not none else '(no reply)' }}</div>
        {% if d.candidate_failed %}<ul class="failed">{% for f in d.candidate_failed %}<li>expected {{ f }}</li>{% endfor %}</ul>{% endif %}</div>
    </div>
    {% for role in ['baseline', 'candidate'] %}{% set ff = d[role ~ '_first_failure'] %}
    {% if ff and ff.turn != d.turn %}<p class="ko">{{ role }} fails at turn {{ ff.turn }} (user: <q>{{ ff.user }}</q>, reply: <q>{{ ff.reply }}</q>):
      {% if ff.expectation %}expected {{ ff.expectation }}{% endif %}{% if ff.detail %} ({{ ff.detail }}){% endif %}</p>{% endif %}
    {% endfor %}
  {% elif entry.failure %}
    <p>Turn {{ entry.failure.turn }} — user: <q>{{ entry.failure.user }}</q></p>
    <div class="reply">{{ entry.failure.reply if entry.failure.reply is not none else '(no reply)' }}</div>
    <ul class="failed"><li>{% if entry.failure.expectation %}expected {{ entry.failure.expectation }}{% endif %}
      {% if entry.failure.detail %}({{ entry.failure.detail }}){% endif %}</li></ul>
  {% endif %}
  {% for role, result in entry.results.items() %}
  <details><summary>{{ role }} transcript ({{ result.status }}{% if result.runs > 1 %}, {{ result.passed_runs }}/{{ result.runs }} runs passed{% endif %})</summary>
    {% for t in result.turns %}<div class="turn"><div><span class="label">user</span> {{ t.user }}</div>
      <div><span class="label">reply</span> {{ t.reply if t.reply is not none else '—' }}{% if t.intent %} <span class="tags">[{{ t.intent }}]</span>{% endif %}
        {% if t.latency_ms is not none %}<span class="tags">{{ '%.0f' % t.latency_ms }} ms</span>{% endif %}</div>
      {% if t.error %}<div class="ko">{{ t.error }}</div>{% endif %}
      {% for e in t.expectations %}<div class="{{ 'ok' if e.passed else 'ko' }}">{{ '✓' if e.passed else '✗' }} {{ e.description }}{% if e.detail %} ({{ e.detail }}){% endif %}</div>{% endfor %}
    </div>{% endfor %}
  </details>
  {% endfor %}
</article>
{% endmacro %}

{% set new = report.conversations | selectattr('change', 'equalto', 'new_failure') | list %}
{% set fixes = report.conversations | selectattr('change', 'equalto', 'fix') | list %}
<h2 id="new-failures">New failures ({{ new | length }})</h2>
{% for e in new %}{{ card(e) }}{% else %}<p class="tags">None.</p>{% endfor %}
<h2 id="fixes">Fixes ({{ fixes | length }})</h2>
{% for e in fixes %}{{ card(e) }}{% else %}<p class="tags">None.</p>{% endfor %}
{% set others = report.conversations | rejectattr('change', 'in', ['new_failure', 'fix']) | selectattr('status.candidate', 'ne', 'pass') | list %}
{% if others %}<h2 id="failing">Still failing ({{ others | length }})</h2>{% for e in others %}{{ card(e) }}{% endfor %}{% endif %}

<h2 id="all">All conversations ({{ report.conversations | length }})</h2>
<table>
  <tr><th>conversation</th><th>tags</th>{% for role in report.targets %}<th>{{ role }}</th>{% endfor %}<th>change</th></tr>
  {% for e in report.conversations %}
  <tr><td><code>{{ e.key }}</code></td><td class="tags">{{ e.tags | join(', ') }}</td>
    {% for role in report.targets %}<td><span class="pill {{ e.status[role] }}">{{ e.status[role] }}</span></td>{% endfor %}
    <td class="change-{{ e.change }}">{{ (e.change or '') | replace('_', ' ') }}</td></tr>
  {% endfor %}
</table>
</main></body>
</html>
"""

_ENV = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)


def to_html(report: dict[str, Any]) -> str:
    return _ENV.from_string(_TEMPLATE).render(report=report)


def write_html(report: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(to_html(report), encoding="utf-8")
