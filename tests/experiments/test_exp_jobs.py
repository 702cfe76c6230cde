"""Job functions against a real (tmp) MLflow store, and their Block Kit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.messages.render import render
from labmate.errors import LabmateError
from tests.experiments.conftest import BASE_MS, Store, add_run


def _text(template: str, context: dict) -> str:
    message = render(template, context)
    return json.dumps(message.blocks, ensure_ascii=False)


def test_summary_ranks_shows_varying_params_gain_users_and_chart(sales: Store) -> None:
    from tasks.experiments.summary import summary

    [(template, ctx)] = summary("sales-agent", "val_f1", 3)
    assert template == "exp_summary"
    assert [r["name"] for r in ctx["runs"]] == ["unigram-v2", "bigram", "baseline"]
    assert {c["status"]: c["count"] for c in ctx["counts"]} == {"finished": 4, "failed": 1}
    assert ctx["varying"] == ["alpha", "ngram_max"]  # epochs and seed are the same everywhere
    assert ctx["gain"]["previous"] == "bigram" and ctx["gain"]["delta"] == "+0.06"
    assert ctx["users"] == ["lee", "sam", "dana"] and ctx["other_users"] == 0  # every run's owner, not the top 3's
    chart = Path(ctx["files"][0]["path"])
    assert chart.exists() and chart.stat().st_size > 1000 and chart.suffix == ".png"
    blocks = _text(template, ctx)
    assert "unigram-v2" in blocks and "+0.06 against the previous best bigram" in blocks
    assert "deleted-one" not in blocks and "crash-mid" not in blocks


def test_run_by_names_the_owners_of_all_the_runs_it_counts_the_most_frequent_first(sales: Store) -> None:
    from tasks.experiments.summary import summary

    for i, user in enumerate(["kim", "ola", "pat", "ray", "sue"]):
        add_run(sales, f"by-{user}", user=user, params={}, f1s=[0.1], start_hour=20 + i)
    add_run(sales, "kim-again", user="kim", params={}, f1s=[0.2], start_hour=26, status="FAILED")
    sales.client.delete_run(add_run(sales, "gone", user="ghost", params={}, f1s=[0.3], start_hour=27))
    [(template, ctx)] = summary("sales-agent", "val_f1", 2)
    assert [r["user"] for r in ctx["runs"]] == ["sam", "sam"]
    blocks = _text(template, ctx)
    assert "11 runs*: 9 finished · 2 failed\\nRun by kim, lee, sam, dana, ola and 3 others" in blocks
    assert "ghost" not in blocks  # a deleted run isn't counted


def test_run_by_reads_the_owner_counts_the_sync_keeps(sales: Store) -> None:
    """The owners are counted by the sync, with the counts by status, not on every answer; an index
    synced before those counts were kept (migration 0012) is counted live until its next sync."""
    from sqlalchemy import update

    from models import run_index
    from models.db import session_scope
    from tasks.experiments import resolve, sync
    from tasks.experiments.summary import summary

    summary("sales-agent", "val_f1", 2)
    experiment = resolve.experiment("sales-agent")
    with session_scope() as session:
        state = run_index.sync_state(session, experiment.store, experiment.experiment_id)
        assert state.owner_counts == {"lee": 2, "sam": 2, "dana": 1}
        session.execute(update(run_index.SyncState).values(owner_counts={"cached": 5}))
    assert summary("sales-agent", "val_f1", 2)[0][1]["users"] == ["cached"]  # read, not counted
    with session_scope() as session:
        session.execute(update(run_index.SyncState).values(owner_counts=None))
    assert summary("sales-agent", "val_f1", 2)[0][1]["users"] == ["lee", "sam", "dana"]
    add_run(sales, "by-kim", user="kim", params={}, f1s=[0.1], start_hour=20)
    sync.refresh(experiment)
    with session_scope() as session:
        state = run_index.sync_state(session, experiment.store, experiment.experiment_id)
        assert state.owner_counts == {"lee": 2, "sam": 2, "dana": 1, "kim": 1}


def test_a_preview_says_whose_runs_among_the_newest_it_names(sales: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.experiments import resolve, summary

    monkeypatch.setattr(summary, "PREVIEW_RUNS", 3)  # crash-mid (lee), strong-reg (lee), unigram-v2 (sam)
    template, ctx = summary.summary_preview(resolve.experiment("sales-agent"), "val_f1", 1)
    assert "\\nNewest 3 runs by lee, sam" in _text(template, ctx)


def test_summary_and_compare_show_an_infinite_metric_and_chart_the_rest(sales: Store) -> None:
    """A diverged run logs inf (MLflow's SQL store keeps it as the largest float): it is no winner, so
    the ranking leaves it out, and compare shows it as `inf`; the chart leaves out what it can't draw,
    without matplotlib's overflow."""
    import warnings

    from mlflow.entities import Metric

    from tasks.experiments.compare import compare
    from tasks.experiments.summary import summary

    diverged = add_run(sales, "diverged", user="kim", params={}, f1s=[], start_hour=23)
    sales.client.log_batch(diverged, metrics=[Metric("score", float("inf"), BASE_MS, 0)])
    for name, value in [("tame", 0.7), ("tamer", 0.6)]:
        run = add_run(sales, name, user="kim", params={}, f1s=[], start_hour=21)
        sales.client.log_batch(run, metrics=[Metric("score", value, BASE_MS, 0)])
    grown = add_run(sales, "grown", user="kim", params={}, f1s=[], start_hour=22)
    history = [Metric("val_f1", v, BASE_MS + s, s) for s, v in enumerate([0.5, float("inf"), 0.7])]
    sales.client.log_batch(grown, metrics=history)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        [(template, ctx)] = summary("sales-agent", "score", 5)
        [(_t, single)] = compare(["tame", "diverged"])
        [(_t, lines)] = compare(["baseline", "grown"])
    assert [r["name"] for r in ctx["runs"]] == ["tame", "tamer"] and ctx["best_value"] == "0.7"
    assert "with score *0.7*" in _text(template, ctx)
    assert Path(ctx["files"][0]["path"]).exists()
    score = next(m for m in single["metrics"] if m["key"] == "score")
    assert [(c["value"], c["delta"]) for c in score["cells"]] == [("0.7", ""), ("inf", "+inf")]
    assert [f["title"] for f in single["files"]] == ["score"] and Path(single["files"][0]["path"]).exists()
    assert "val_f1" in [f["title"] for f in lines["files"]]


def test_a_history_chart_leaves_out_what_it_cant_draw_and_says_so(
    lab_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from tasks.experiments import charts

    drawn: list = []
    monkeypatch.setattr(charts, "_save", lambda figure, path: drawn.append(figure) or path)
    series = [("ok", [(0, 1.0), (1, 2.0)]), ("diverged", [(0, 1.5), (1, sys.float_info.max), (2, float("nan"))])]
    assert charts.history(series, metric="loss", title="t", path=charts.chart_path("t", "loss", 1)) is not None
    [axes] = drawn[0].axes
    assert axes.get_ylim()[1] < 3
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["ok", "diverged (inf, nan not drawn)"]
    unplottable = [("diverged", [(0, float("inf")), (1, float("nan"))])]
    assert charts.history(unplottable, metric="loss", title="t", path=charts.chart_path("t", "loss", 2)) is None


def _error(work) -> LabmateError:  # type: ignore[no-untyped-def]
    with pytest.raises(LabmateError) as caught:
        work()
    return caught.value


def test_unknown_experiment_offers_the_closest_names(sales: Store) -> None:
    from tasks.experiments.summary import summary

    err = _error(lambda: summary("sales-agnt", None, 5))
    assert err.message == "MLflow has no experiment `sales-agnt`. Did you mean `sales-agent` or `sales-agent-old`?"


def test_an_experiment_asked_of_an_empty_store_says_the_store_is_empty(mlflow_store: Store) -> None:
    """A fresh LABMATE_HOME (or the wrong MLFLOW_TRACKING_URI): say which store, and how to fill one."""
    from tasks.experiments.summary import summary

    err = _error(lambda: summary("sales-agent", None, 5))
    assert err.message == f"MLflow has no experiment `sales-agent`: the store at {mlflow_store.uri} has no experiments yet."
    assert "`labmate demo`" in (err.hint or "")


def test_unknown_metric_offers_the_closest(sales: Store) -> None:
    from tasks.experiments.summary import summary

    err = _error(lambda: summary("sales-agent", "val_f2", 5))
    assert err.message == "No run in `sales-agent` logged a metric `val_f2`. Did you mean `val_f1`?"
    assert err.hint == "Its metrics: `train_loss`, `val_accuracy`, `val_f1`."


def test_experiment_without_runs(sales: Store) -> None:
    from tasks.experiments.summary import summary

    err = _error(lambda: summary("sales-agent-old", None, 5))
    assert err.message == "Experiment `sales-agent-old` has no runs yet."


def test_summary_uses_configured_primary_metric(sales: Store, lab_home: Path) -> None:
    from labmate.settings import get_settings, reset_settings
    from tasks.experiments.summary import summary

    Path(get_settings().home.parent / "labmate.toml").write_text('[primary_metrics]\n"sales-agent" = "val_accuracy"\n')
    reset_settings()
    [(_t, ctx)] = summary("sales-agent", None, 2)
    assert ctx["metric"] == "val_accuracy" and ctx["runs"][0]["name"] == "unigram-v2"


def test_summary_links_runs_to_the_ui_and_shows_linked_decisions(sales: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from labmate.settings import reset_settings
    from models import decision as decisions
    from models.db import session_scope
    from tasks.experiments.summary import summary

    monkeypatch.setenv("LABMATE_MLFLOW_UI_URL", "http://mlflow.local:5000")
    reset_settings()
    best = sales.runs["unigram-v2"]
    with session_scope() as session:
        decisions.create(
            session,
            new=decisions.NewDecision(
                text="ship <unigram-v2> *now*", author="U1", links=(decisions.LinkRef("run", best),)
            ),
        )
    [(template, ctx)] = summary("sales-agent", "val_f1", 2)
    assert ctx["runs"][0]["url"] == f"http://mlflow.local:5000/#/experiments/{sales.experiment_id}/runs/{best}"
    assert ctx["runs"][0]["decisions"][0]["text"] == "ship <unigram-v2> *now*"
    blocks = _text(template, ctx)
    assert f"<http://mlflow.local:5000/#/experiments/{sales.experiment_id}/runs/{best}|unigram-v2>" in blocks
    assert ":memo: #1 ship &lt;unigram-v2&gt; *now*" in blocks  # decision text escaped, not markup


def test_run_names_from_mlflow_are_escaped(sales: Store) -> None:
    from tasks.experiments.summary import summary

    add_run(sales, '<!channel> "x"', user="eve", params={"alpha": 9}, f1s=[0.99], start_hour=20)
    [(template, ctx)] = summary("sales-agent", "val_f1", 1)
    message = render(template, ctx)
    texts = [b["text"]["text"] for b in message.blocks if b["type"] == "section"]
    assert any('&lt;!channel&gt; "x"' in t for t in texts)
    assert "<!channel>" not in json.dumps(message.blocks)


def test_best_and_runs(sales: Store) -> None:
    from tasks.experiments.query import runs
    from tasks.experiments.summary import best

    [(template, ctx)] = best("sales-agent", "val_f1", None)
    assert ctx["run"]["name"] == "unigram-v2" and ctx["value"] == "0.86"
    assert "Best run in *sales-agent* by *val_f1*" in _text(template, ctx)
    [(template, ctx)] = runs("sales-agent", "FAILED", None, None, [])
    assert [r["name"] for r in ctx["runs"]] == ["crash-mid"] and ctx["total"] == 1
    assert "1 run matches." in _text(template, ctx)
    [(_t, ctx)] = runs("sales-agent", None, None, "sam", [["team", "nlp"]])
    assert [r["name"] for r in ctx["runs"]] == ["unigram-v2", "bigram"]


def test_a_run_whose_metric_diverged_to_infinity_is_never_the_best(sales: Store) -> None:
    from tasks.experiments.summary import best, summary

    add_run(sales, "diverged", user="lee", params={"epochs": 3, "seed": 1}, f1s=[0.5, float("inf")], start_hour=9)
    add_run(sales, "collapsed", user="lee", params={"epochs": 3, "seed": 1}, f1s=[0.5, float("-inf")], start_hour=10)
    [(_t, ctx)] = best("sales-agent", "val_f1", None)
    assert ctx["run"]["name"] == "unigram-v2" and ctx["value"] == "0.86"
    [(_t, ctx)] = best("sales-agent", "val_f1", None, None, True)  # lowest first: -inf is no winner either
    assert ctx["run"]["name"] == "strong-reg"
    [(_t, ctx)] = summary("sales-agent", "val_f1", 3)
    assert ctx["runs"] and "diverged" not in str(ctx["runs"]) and "collapsed" not in str(ctx["runs"])


def test_find_builds_a_validated_mlflow_filter(sales: Store) -> None:
    from tasks.experiments.query import find

    conditions = [
        {"name": "val_f1", "op": ">", "value": "0.7", "numeric": True},
        {"name": "alpha", "op": "<", "value": "0.001", "numeric": True},
    ]
    [(template, ctx)] = find("sales-agent", conditions, "val_f1", None, 5)
    assert ctx["mlflow_filter"] == "metrics.`val_f1` > 0.7"
    assert ctx["local_filter"] == "alpha < 0.001"  # MLflow compares params as text
    assert [r["name"] for r in ctx["runs"]] == ["unigram-v2", "bigram"]
    assert "MLflow filter: metrics.`val_f1` &gt; 0.7" in _text(template, ctx)
    [(_t, ctx)] = find(
        "sales-agent", [{"name": "status", "op": "=", "value": "failed", "numeric": False}], None, None, 5
    )
    assert ctx["mlflow_filter"] == "attributes.`status` = 'FAILED'" and [r["name"] for r in ctx["runs"]] == [
        "crash-mid"
    ]



def test_find_says_how_many_runs_match_not_how_many_it_shows(sales: Store) -> None:
    from tasks.experiments.query import find

    everything = [{"name": "start_time", "op": ">", "value": "0", "numeric": True}]
    [(template, ctx)] = find("sales-agent", everything, None, None, 50)
    total = len(ctx["runs"])
    assert total > 2 and ctx["total"] == total
    [(template, ctx)] = find("sales-agent", everything, None, None, 2)
    assert len(ctx["runs"]) == 2 and ctx["total"] == total
    assert f"{total} runs match, newest 2 shown." in _text(template, ctx)
    [(template, ctx)] = find("sales-agent", [{"name": "val_f1", "op": ">", "value": "0", "numeric": True}], "val_f1", None, 1)
    assert ctx["total"] > 1 and f"{ctx['total']} runs match, first 1 shown." in _text(template, ctx)


def test_find_unknown_name_and_wrong_value(sales: Store) -> None:
    from tasks.experiments.query import find

    err = _error(
        lambda: find("sales-agent", [{"name": "val_f", "op": ">", "value": "1", "numeric": True}], None, None, 5)
    )
    assert err.message == "`sales-agent` has no metric, param, tag or attribute `val_f`. Did you mean `val_f1`?"
    # a name like none of them gets no guess (`nosuch` was "Did you mean `epochs`?"); a part of one still does
    err = _error(lambda: find("sales-agent", [{"name": "nosuch", "op": ">", "value": "1", "numeric": True}], None, None, 5))
    assert err.message == "`sales-agent` has no metric, param, tag or attribute `nosuch`."
    err = _error(lambda: find("sales-agent", [{"name": "f1", "op": ">", "value": "1", "numeric": True}], None, None, 5))
    assert err.message.endswith("Did you mean `val_f1`?")
    err = _error(
        lambda: find("sales-agent", [{"name": "val_f1", "op": ">", "value": "high", "numeric": False}], None, None, 5)
    )
    assert err.message == "`val_f1` is a number; compare it to a number, not `high`."


def test_find_compares_a_start_or_end_time_with_a_date(sales: Store) -> None:
    """`start_time` is MLflow's milliseconds; a date was refused with "compare it to a number, e.g. > 0.8"."""
    from tasks.experiments.query import find

    def found(op: str, value: str, numeric: bool = False) -> tuple[str, int]:
        [(_t, ctx)] = find("sales-agent", [{"name": "start_time", "op": op, "value": value, "numeric": numeric}],
                           None, None, 50)
        return ctx["mlflow_filter"], len(ctx["runs"])

    everything = found(">", "0", True)[1]
    assert everything > 0
    assert found(">", "2000-01-01") == ("attributes.`start_time` > 946684800000", everything)
    assert found("<", "2000-01-01T12:00") == ("attributes.`start_time` < 946728000000", 0)
    assert found("<", "2000-01-01T12:00+02:00")[0] == "attributes.`start_time` < 946720800000"
    err = _error(lambda: found(">", "yesterdayish"))
    assert err.message == ("`start_time` is a time: compare it to a date, or a date and time in UTC (`2026-11-01`, "
                           "`2026-11-01T09:30`), or to milliseconds since 1970; not `yesterdayish`.")
    assert err.hint == "e.g. `where start_time > 2026-11-01`"


def test_compare_params_metrics_deltas_and_charts(sales: Store) -> None:
    from tasks.experiments.compare import compare

    prefix = sales.runs["bigram"][:10]
    [(template, ctx)] = compare(["baseline", prefix], "")
    assert [p["key"] for p in ctx["params"]] == ["alpha"]
    f1 = next(m for m in ctx["metrics"] if m["key"] == "val_f1")
    assert [c["value"] for c in f1["cells"]] == ["0.75", "0.8"] and f1["cells"][1]["delta"] == "+0.05"
    assert len(ctx["files"]) == 3 and all(Path(f["path"]).exists() for f in ctx["files"])
    blocks = _text(template, ctx)
    assert "alpha: `0.001` → `0.0001`" in blocks and "val_f1: *0.75* · *0.8* (+0.05)" in blocks
    # each run's line (and the decisions under it) in its own context block: Slack lays one block's
    # elements side by side, so run 1's decisions read as run 2's label
    contexts = [b for b in render(template, ctx).blocks if b["type"] == "context"]
    assert [b["elements"][0]["text"][:3] for b in contexts[:2]] == ["1. ", "2. "]
    assert all(len(b["elements"]) == 1 for b in contexts)


def test_compare_bad_references(sales: Store) -> None:
    from tasks.experiments.compare import compare

    err = _error(lambda: compare(["baseline", "nosuchrun"]))
    assert err.message == "No run has the id, id prefix or name `nosuchrun`."
    add_run(sales, "twin", user="x", params={}, f1s=[0.1], start_hour=30)
    add_run(sales, "twin", user="y", params={}, f1s=[0.2], start_hour=31)
    err = _error(lambda: compare(["baseline", "twin"]))
    assert err.message.startswith("`twin` matches 2 runs: `")
    assert err.message.endswith("Use a longer id prefix, or name the experiment: `… in <experiment>`.")
    gone = sales.runs["deleted-one"]
    err = _error(lambda: compare(["baseline", gone]))
    assert err.message == f"Run `deleted-one` ({gone[:12]}) was deleted in MLflow; restore it to use it."


def test_compare_with_a_run_that_logged_no_metrics_compares_params_and_status(sales: Store) -> None:
    from tasks.experiments.compare import compare

    empty = add_run(sales, "no-metrics", user="x", params={"alpha": 1}, f1s=[], start_hour=32, status="FAILED")
    [(template, ctx)] = compare(["baseline", empty[:8]])
    assert ctx["no_metrics"] == ["no-metrics"]
    assert all(row["cells"][1]["value"] == "–" for row in ctx["metrics"])
    assert [p["key"] for p in ctx["params"]] == ["alpha", "epochs", "ngram_max", "seed"]
    blocks = _text(template, ctx)
    assert "No metrics logged by no-metrics" in blocks and "baseline finished · no-metrics failed" in blocks


def test_short_prefixes_are_names_and_say_how_long_a_prefix_must_be(sales: Store) -> None:
    from tasks.experiments import resolve

    run_id = sales.runs["baseline"]
    assert resolve.run(run_id[:8]).run_id == run_id
    err = _error(lambda: resolve.run(run_id[:5]))
    assert err.message == f"No run has the id, id prefix or name `{run_id[:5]}`: an id prefix needs 8 characters or more."
    assert err.hint.startswith("Copy the id from the run's page")
    assert resolve.run("baseline", "sales-agent").run_id == run_id
    err = _error(lambda: resolve.run("baseline", "sales-agent-old"))
    assert err.message == "No run in `sales-agent-old` has the id, id prefix or name `baseline`."


def test_deleted_run_by_prefix_says_deleted(sales: Store) -> None:
    from tasks.experiments import resolve

    gone = sales.runs["deleted-one"]
    err = _error(lambda: resolve.run(gone[:12]))
    assert err.message == f"Run `deleted-one` ({gone[:12]}) was deleted in MLflow; restore it to use it."


def test_index_catches_new_running_and_deleted_runs(sales: Store) -> None:
    from datetime import UTC, datetime, timedelta

    from tasks.experiments import resolve
    from tasks.experiments.summary import summary
    from tasks.experiments.sync import ensure_fresh

    summary("sales-agent", "val_f1", 3)
    experiment = resolve.experiment("sales-agent")
    later = datetime.now(UTC) + timedelta(seconds=61)
    # a run still going: indexed as running, then its new values are picked up
    run = sales.client.create_run(sales.experiment_id, run_name="live", tags={"mlflow.user": "kim"})
    sales.client.log_metric(run.info.run_id, "val_f1", 0.5, step=1)
    stats = ensure_fresh(experiment, now=later)
    assert not stats.full and stats.read >= 1
    sales.client.log_metric(run.info.run_id, "val_f1", 0.95, step=2)
    sales.client.delete_run(sales.runs["unigram-v2"])
    ensure_fresh(experiment, now=later + timedelta(seconds=61))
    [(_t, ctx)] = summary("sales-agent", "val_f1", 2)
    assert [r["name"] for r in ctx["runs"]] == ["live", "bigram"]
    assert ctx["runs"][0]["status"] == "RUNNING"


def test_summary_ranks_by_the_experiments_primary_metric_tag(sales: Store) -> None:
    from tasks.experiments.summary import summary

    sales.client.set_experiment_tag(sales.experiment_id, "labmate.primary_metric", "val_accuracy")
    [(_, ctx)] = summary("sales-agent", None, 3)
    assert ctx["metric"] == "val_accuracy"


def test_labmate_toml_primary_metric_wins_over_the_tag(sales: Store, lab_home: Path) -> None:
    import os

    from labmate.settings import reset_settings
    from tasks.experiments.summary import summary

    sales.client.set_experiment_tag(sales.experiment_id, "labmate.primary_metric", "val_accuracy")
    Path(os.environ["LABMATE_CONFIG"]).write_text('[primary_metrics]\nsales-agent = "train_loss"\n')
    reset_settings()
    [(_, ctx)] = summary("sales-agent", None, 3)
    assert ctx["metric"] == "train_loss"


def test_a_primary_metric_no_run_logged_says_where_it_is_configured(sales: Store, lab_home: Path) -> None:
    """The person typed `summary sales-agent`; "no run logged a metric nosuch" named a metric they never typed."""
    import os

    from labmate.errors import NotFoundError
    from labmate.settings import reset_settings
    from tasks.experiments.summary import best, summary

    sales.client.set_experiment_tag(sales.experiment_id, "labmate.primary_metric", "nosuch")
    with pytest.raises(NotFoundError) as tagged:
        summary("sales-agent", None, 3)
    assert tagged.value.message.startswith(
        "No run in `sales-agent` logged a metric `nosuch`. It is the primary metric: the experiment's MLflow tag "
        "`labmate.primary_metric` names it. Name a metric after the experiment (`summary sales-agent <metric>`), "
        "or change it there.")
    Path(os.environ["LABMATE_CONFIG"]).write_text('[primary_metrics]\nsales-agent = "val_acc"\n')
    reset_settings()
    with pytest.raises(NotFoundError) as configured:
        best("sales-agent", None, None, "", None)
    assert "It is the primary metric: labmate.toml `[primary_metrics]` names it for `sales-agent`." in configured.value.message
    with pytest.raises(NotFoundError) as typed:
        summary("sales-agent", "nosuch", 3)
    assert "primary metric" not in typed.value.message


def test_a_chart_of_names_the_font_lacks_warns_nobody(tmp_path: Path) -> None:
    """matplotlib's 'Glyph … missing from font' reached the terminal's stderr, three lines per chart."""
    import warnings

    from tasks.experiments import charts

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        drawn = charts.bars([("実験 🚀", 1.0), ("b", 2.0)], metric="val_f1", title="Ünïcode 実験 🚀", path=tmp_path / "c.png")
    assert drawn.is_file() and drawn.stat().st_size > 0
