"""Experiments as teams have them (issue 8), each on a real MLflow store: names with spaces, slashes
and `@`, a real scikit-learn grid search with autolog's parent and child runs, declared metric
directions, single-value metrics, two tracking stores, a refused `file:` store, and the index's
build, sync and memory behaviour."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.messages.render import render
from labmate.errors import LabmateError
from labmate.settings import reset_settings
from tests.conftest import built_once
from tests.experiments.conftest import Store

WINE = "/Users/dana@example.com/wine quality"


def _error(work) -> LabmateError:  # type: ignore[no-untyped-def]
    with pytest.raises(LabmateError) as caught:
        work()
    return caught.value


def _blocks(template: str, context: dict) -> str:
    return json.dumps(render(template, context).blocks, ensure_ascii=False)


@pytest.fixture(scope="session")
def grid_search_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MLflow's sklearn autolog on a real GridSearchCV (ElasticNet on the wine data): one parent run
    `grid` with six child runs, each child's metrics logged once (step 0). Made once per run, copied per test."""

    def build(folder: Path) -> None:
        import mlflow
        import mlflow.sklearn
        from sklearn.datasets import load_wine
        from sklearn.linear_model import ElasticNet
        from sklearn.model_selection import GridSearchCV

        from tasks.mlflow_io import process_uris

        with process_uris(f"sqlite:///{folder / 'mlflow.db'}"):
            # its artifacts beside the store: by default MLflow puts them in ./mlruns, the checkout
            mlflow.create_experiment(WINE, artifact_location=(folder / "artifacts").as_uri())
            mlflow.set_experiment(WINE)
            mlflow.sklearn.autolog(log_models=False, log_datasets=False, silent=True, max_tuning_runs=10)
            try:
                features, target = load_wine(return_X_y=True)
                search = GridSearchCV(ElasticNet(max_iter=2000), {"alpha": [0.01, 0.1, 1.0], "l1_ratio": [0.2, 0.8]}, cv=3)
                with mlflow.start_run(run_name="grid"):
                    search.fit(features, target)
            finally:
                mlflow.sklearn.autolog(disable=True)

    return built_once(tmp_path_factory, "grid-search", build) / "mlflow.db"


@pytest.fixture
def wine(lab_home: Path, monkeypatch: pytest.MonkeyPatch, migrated: str, grid_search_db: Path) -> Iterator[Store]:
    from mlflow import MlflowClient

    root = lab_home / "mlflow"
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(grid_search_db, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    reset_settings()
    from tasks.experiments import resolve

    resolve.forget_cache()
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(WINE)
    store = Store(uri, root, client, experiment.experiment_id)
    for run in client.search_runs([experiment.experiment_id]):
        store.runs[run.info.run_name] = run.info.run_id
    yield store
    resolve.forget_cache()


# --- names and ids --------------------------------------------------------------------------------


def test_experiment_reached_by_quoted_name_id_and_prefix(wine: Store) -> None:
    from bot import grammar
    from tasks.experiments import resolve

    for typed in (f'"{WINE}"', f"“{WINE}”", f"'{WINE}'"):
        assert resolve.experiment(grammar.parse(f"summary {typed}").args.experiment).name == WINE
    assert resolve.experiment(wine.experiment_id).name == WINE
    assert resolve.experiment("/users/dana@example.com/wine").name == WINE  # unambiguous start, any case
    err = _error(lambda: resolve.experiment("/Users/dana@example.com/wine qualty"))
    assert err.message == f'MLflow has no experiment `/Users/dana@example.com/wine qualty`. Did you mean `"{WINE}"`?'
    suggested = err.message.split("Did you mean `")[1].rstrip("`?")
    assert grammar.parse(f"summary {suggested}").args.experiment == WINE  # usable as typed


def test_ambiguous_prefix_names_the_candidates_quoted(wine: Store) -> None:
    from tasks.experiments import resolve

    wine.client.create_experiment("wine quality v2")
    wine.client.create_experiment("wine quality v3")
    err = _error(lambda: resolve.experiment("wine"))
    assert err.message == '`wine` starts 2 experiment names: `"wine quality v2"`, `"wine quality v3"`. Type more of the name.'


def test_decide_with_a_run_prefix_stores_the_full_id_and_answers_show_it(wine: Store) -> None:
    from bot.terminal import run_one
    from models import decision as decisions
    from models.db import session_scope

    child = next(run_id for name, run_id in wine.runs.items() if name != "grid")
    outcome = run_one(f"decide keep this one #release run:{child[:8]}", user="U1", channel="C1")
    assert outcome.exit_code == 0
    with session_scope() as session:
        [link] = decisions.get(session, decision_id=1).links
        assert (link.kind, link.ref, link.status) == ("run", child, "ok")
    said = run_one(f'summary "{WINE}" mean_test_score top:10', user="U1", channel="C1")
    payload = json.dumps([m.payload() for m in said.messages])
    assert child in payload  # the full id, in the answer as posted (and so in `--json`)


def test_decide_names_a_run_within_its_experiment(wine: Store) -> None:
    from bot.terminal import run_one
    from models import decision as decisions
    from models.db import session_scope

    name, run_id = next((n, r) for n, r in wine.runs.items() if n != "grid")
    run_one(f'decide ship it run:{name} exp:"{WINE}"', user="U1", channel="C1")
    with session_scope() as session:
        links = {link.kind: link for link in decisions.get(session, decision_id=1).links}
        assert links["run"].ref == run_id and links["run"].detail["typed"] == name


# --- metric direction -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "lower"),
    [
        ("rank_test_score", True),
        ("val_loss", True),
        ("mean_fit_time", True),
        ("rmse", True),
        ("answer_relevancy", False),
        ("uptime_ratio", False),
        ("neg_mean_squared_error", False),
        ("val_f1", False),
        ("trainLoss", True),
    ],
)
def test_the_name_rule_matches_whole_words(metric: str, lower: bool) -> None:
    from tasks.experiments import resolve

    assert resolve.lower_is_better(metric) is lower


def test_rank_test_score_is_ranked_lowest_first_and_the_answer_says_why(wine: Store) -> None:
    from tasks.experiments.summary import best

    [(template, ctx)] = best(WINE, "rank_test_score", None)
    assert ctx["direction"] == "lower is better" and ctx["value"] == "1"
    assert ctx["direction_source"] == "the word `rank` in the metric's name"
    text = _blocks(template, ctx)
    assert "from the word `rank` in the metric's name" in text and f'best \\"{WINE}\\" rank_test_score asc|desc' in text


def test_direction_is_declared_command_then_tag_then_toml_then_name(wine: Store, lab_home: Path) -> None:
    import os

    from tasks.experiments.summary import best

    def source(asked: bool | None = None) -> tuple[str, str]:
        [(_t, ctx)] = best(WINE, "mean_test_score", None, "", asked)
        return ctx["direction"], ctx["direction_source"]

    assert source() == ("higher is better", "the default: no `loss`, `error`, `rank`, `time`… word in its name")
    Path(os.environ["LABMATE_CONFIG"]).write_text('[metric_directions]\nmean_test_score = "lower"\n')
    reset_settings()
    assert source() == ("lower is better", "labmate.toml `[metric_directions]`")
    wine.client.set_experiment_tag(wine.experiment_id, "labmate.direction.mean_test_score", "higher")
    from tasks.experiments import resolve

    resolve.forget_cache()
    assert source() == ("higher is better", "the experiment's MLflow tag `labmate.direction.mean_test_score`")
    assert source(True) == ("lower is better", "what you asked: lowest first")  # typed asc, or "the lowest"
    # a tag that says neither is named in the answer, and the next source is used
    wine.client.set_experiment_tag(wine.experiment_id, "labmate.direction.mean_test_score", "lowr")
    resolve.forget_cache()
    assert source() == ("lower is better", "labmate.toml `[metric_directions]`; the experiment's MLflow tag "
                        "`labmate.direction.mean_test_score` is `lowr`, which is not `lower` or `higher`, so it was "
                        "not used")
    # a metric name with a space is suggested quoted, as it must be typed
    change = resolve.direction(resolve.experiment(WINE), "val loss", None).change
    assert f'say `best "{WINE}" "val loss" asc|desc`' in change


# --- runs as MLflow records them ------------------------------------------------------------------


def test_grid_search_children_are_ranked_with_the_parent_as_their_group(wine: Store) -> None:
    from tasks.experiments.summary import summary

    [(template, ctx)] = summary(WINE, None, 10)
    assert ctx["metric"] == "mean_test_score"  # from the children, not the parent-only best_cv_score
    assert len(ctx["runs"]) == 6 and all(r["group"] == "grid" for r in ctx["runs"])
    assert "grid" not in [r["name"] for r in ctx["runs"]]
    assert {c["status"]: c["count"] for c in ctx["counts"]} == {"finished": 7}
    assert "in grid" in _blocks(template, ctx)
    [(_t, parent)] = summary(WINE, "best_cv_score", 3)
    assert [r["name"] for r in parent["runs"]] == ["grid"]  # a metric only the parent has ranks the parent


def test_find_and_best_on_nested_runs(wine: Store) -> None:
    from tasks.experiments.query import find
    from tasks.experiments.summary import best

    [(_t, ctx)] = best(WINE, None, None)
    assert ctx["run"]["group"] == "grid"
    conditions = [{"name": "alpha", "op": "<", "value": "0.5", "numeric": True}]
    [(_t, found)] = find(WINE, conditions, "mean_test_score", None, 10)
    assert len(found["runs"]) == 4 and all(r["group"] == "grid" for r in found["runs"])
    assert found["local_filter"] == "alpha < 0.5"


def _has_bar_colour(path: Path) -> bool:
    from matplotlib import image

    pixels = image.imread(str(path))
    target = (0x4C / 255, 0x72 / 255, 0xB0 / 255)
    return bool(
        ((abs(pixels[..., 0] - target[0]) < 0.02) & (abs(pixels[..., 1] - target[1]) < 0.02)
         & (abs(pixels[..., 2] - target[2]) < 0.02)).sum() > 500
    )  # fmt: skip


def test_a_metric_logged_once_per_run_is_a_bar_per_run_and_the_chart_is_reused(wine: Store) -> None:
    from tasks.experiments.summary import summary

    [(_t, ctx)] = summary(WINE, "mean_test_score", 5)
    [chart] = ctx["files"]
    assert _has_bar_colour(Path(chart["path"]))
    [(_t, again)] = summary(WINE, "mean_test_score", 5)
    assert again["files"] == ctx["files"]  # same content: the same file, not another one
    assert len(list(Path(chart["path"]).parent.glob("*.png"))) == 1


def test_old_charts_are_pruned(wine: Store) -> None:
    import os
    import time

    from tasks.experiments import charts

    directory = wine.root.parent / "charts"
    directory.mkdir(parents=True, exist_ok=True)
    old = directory / "summary-old.png"
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    fresh = directory / "summary-new.png"
    fresh.write_bytes(b"x")
    assert charts.prune(directory) == 1 and not old.exists() and fresh.exists()


def test_a_refused_file_store_says_mlflows_reason_and_the_fix(lab_home: Path, migrated: str, monkeypatch) -> None:
    from bot.terminal import run_one

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file://{lab_home / 'mlruns'}")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    reset_settings()
    outcome = run_one("summary sales-agent", user="U1", channel="C1")
    answer = outcome.messages[-1]
    assert outcome.exit_code == 1 and answer.template == "error"
    text = json.dumps(answer.blocks)
    assert "MLflow refuses the tracking store `file://" in text and "maintenance mode" in text
    assert "MLFLOW_ALLOW_FILE_STORE=true" in text and "Error id" not in text


# --- more than one store --------------------------------------------------------------------------


def test_two_tracking_stores_never_mix_in_one_knowledge_base(sales: Store, monkeypatch, empty_mlflow_db) -> None:
    from mlflow import MlflowClient

    from tasks.experiments import resolve
    from tasks.experiments.summary import summary

    [(_t, first)] = summary("sales-agent", "val_f1", 3)
    other = sales.root / "other.db"
    shutil.copy(empty_mlflow_db, other)
    uri = f"sqlite:///{other}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("sales-agent")  # the same name, and the same id "1"
    assert experiment_id == sales.experiment_id
    for i in range(3):
        run = client.create_run(experiment_id, run_name=f"other-{i}")
        client.log_metric(run.info.run_id, "val_f1", 0.1 * i)
        client.set_terminated(run.info.run_id)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    reset_settings()
    resolve.forget_cache()
    [(_t, second)] = summary("sales-agent", "val_f1", 3)
    assert second["total"] == 3 and [r["name"] for r in second["runs"]] == ["other-2", "other-1", "other-0"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sales.uri)
    reset_settings()
    resolve.forget_cache()
    [(_t, back)] = summary("sales-agent", "val_f1", 3)
    assert back["total"] == first["total"] == 5 and back["runs"][0]["name"] == "unigram-v2"


def test_store_keys_ignore_credentials_and_drivers() -> None:
    from models.run_index import shown_uri, store_key

    assert store_key("postgresql+psycopg://u:secret@DB:5432/mlflow?x=1") == store_key("postgresql://db:5432/mlflow")
    assert store_key("postgresql://db:5432/mlflow") != store_key("postgresql://db:5432/other")
    assert store_key("http://mlflow:5000") != store_key("http://mlflow2:5000")
    assert "secret" not in shown_uri("postgresql://u:secret@db/mlflow")


# --- building and syncing the index ---------------------------------------------------------------


def _many_runs(store: Store, count: int, *, status: str = "FINISHED") -> list[str]:
    from bench import mlflow_stores

    return mlflow_stores.insert(store.uri, store.experiment_id, count, seed=7, running=0.0)


def test_the_build_goes_in_resumable_chunks_under_a_lease(sales: Store, monkeypatch) -> None:
    from tasks.experiments import resolve, sync

    _many_runs(sales, 250)
    monkeypatch.setattr(sync, "PAGE", 100)
    experiment = resolve.experiment("sales-agent")
    seen: list[int] = []
    assert sync.build(experiment, owner="a", budget_s=0, on_chunk=lambda p: seen.append(p.read)) is False
    assert seen == [100] and not sync.progress(experiment).ready
    from models import run_index
    from models.db import session_scope

    with session_scope() as session:
        assert run_index.take_lease(session, experiment.store, experiment.experiment_id, owner="b",
                                    now_ms=int(datetime.now(UTC).timestamp() * 1000), for_ms=60_000)  # fmt: skip
    assert sync.build(experiment, owner="a", budget_s=5) is None  # b holds it
    with session_scope() as session:
        run_index.release_lease(session, experiment.store, experiment.experiment_id, owner="b")
    assert sync.build(experiment, owner="a", budget_s=60, on_chunk=lambda p: seen.append(p.read)) is True
    assert seen == [100, 200, 255]  # resumed from the cursor: 250 + the fixture's 5 live runs
    assert sum(sync.counts(experiment).values()) == 255


def test_a_first_question_gets_a_preview_then_the_answer(sales: Store, monkeypatch) -> None:
    from tasks.experiments import first, sync
    from tasks.experiments.summary import summary

    _many_runs(sales, 300)
    monkeypatch.setattr(first, "QUICK_S", 0.0)
    monkeypatch.setattr(sync, "PAGE", 100)
    interim: list[tuple[str, dict]] = []
    [(template, ctx)] = summary("sales-agent", "val_f1", 3, interim=lambda t, c: interim.append((t, c)))
    [(preview_template, preview)] = interim
    assert preview_template == "exp_summary" and preview["preview"]["seen"] == 305
    assert preview["preview"]["expected"] == 305 and preview["counts"] == []
    assert "The counts are still being gathered" in _blocks(preview_template, preview)
    assert template == "exp_summary" and ctx["preview"] is None and ctx["total"] == 305
    assert ctx["runs"][0]["name"] == preview["runs"][0]["name"]


def test_incremental_sync_rereads_only_running_runs_that_changed(sales: Store) -> None:
    from tasks.experiments import resolve
    from tasks.experiments.summary import summary
    from tasks.experiments.sync import refresh
    from tests.experiments.conftest import BASE_MS, HOUR

    # started hours before the newest run: only a change can make a sync read them again
    live = [sales.client.create_run(sales.experiment_id, BASE_MS + HOUR + i, run_name=f"live-{i}") for i in range(5)]
    for run in live:
        sales.client.log_metric(run.info.run_id, "val_f1", 0.5, step=1)
    summary("sales-agent", "val_f1", 3)
    experiment = resolve.experiment("sales-agent")
    later = datetime.now(UTC) + timedelta(minutes=10)
    refresh(experiment, now=later)  # values logged within the clock slack of the build are read once more
    # then only the newest run (inside the 5-minute clock slack) is read again; none of the 5 running runs
    assert refresh(experiment, now=later + timedelta(minutes=10)).read == 1
    sales.client.log_metric(live[0].info.run_id, "val_f1", 0.99, step=2, timestamp=int(later.timestamp() * 1000) + 700_000)
    assert refresh(experiment, now=later + timedelta(minutes=20)).read == 2
    [(_t, ctx)] = summary("sales-agent", "val_f1", 1)
    assert ctx["runs"][0]["name"] == "live-0"


def test_freshness_counts_from_when_a_sync_finished(sales: Store) -> None:
    from models import run_index
    from models.db import session_scope
    from tasks.experiments import resolve
    from tasks.experiments.summary import summary
    from tasks.experiments.sync import refresh

    summary("sales-agent", "val_f1", 3)
    experiment = resolve.experiment("sales-agent")
    started = datetime.now(UTC) + timedelta(minutes=5)
    refresh(experiment, now=started)
    with session_scope() as session:
        state = run_index.sync_state(session, experiment.store, experiment.experiment_id)
        assert state is not None
        finished = state.synced_at if state.synced_at.tzinfo else state.synced_at.replace(tzinfo=UTC)
        assert finished > started and state.synced_ms == int(started.timestamp() * 1000)


def test_the_periodic_job_finishes_a_build_nobody_waits_for(sales: Store, monkeypatch) -> None:
    from tasks.experiments import jobs, resolve, sync

    experiment = resolve.experiment("sales-agent")
    monkeypatch.setattr(sync, "PAGE", 2)
    assert sync.build(experiment, budget_s=0) is False
    monkeypatch.setattr(sync, "PAGE", 2000)
    builds: list[str] = []
    monkeypatch.setattr(jobs, "_continue_build", lambda e: builds.append(jobs.build_index_task(e.experiment_id, e.name, e.store)))
    assert jobs.sync_index_task() == 1 and builds == ["done"]
    assert sync.progress(experiment).ready


# --- questions ------------------------------------------------------------------------------------


def test_say_answers_a_question_without_ask(sales: Store) -> None:
    from bot.terminal import run_one

    outcome = run_one("which run had the best val_f1 in sales-agent?", user="U1", channel="C1")
    assert outcome.exit_code == 0 and outcome.messages[-1].template == "exp_best"
    outcome = run_one("what is the weather", user="U1", channel="C1")
    [answer] = outcome.messages
    assert answer.template == "ask_unknown" and "No decision mentions “weather”" in json.dumps(answer.blocks, ensure_ascii=False)
    outcome = run_one("frobnicate the runs", user="U1", channel="C1")
    assert outcome.exit_code == 1 and "I don't know the command `frobnicate`" in outcome.messages[0].text


def test_tags_are_found_as_words(sales: Store) -> None:
    from bot.terminal import run_one

    run_one("decide ship the candidate #release #リリース", user="U1", channel="C1")
    run_one("decide unrelated note", user="U1", channel="C1")
    for query in ("decisions release", "decisions #release", "decisions リリース", "decisions #リリース"):
        [answer] = run_one(query, user="U1", channel="C1").messages
        assert "ship the candidate" in json.dumps(answer.blocks, ensure_ascii=False), query
        assert "unrelated" not in json.dumps(answer.blocks), query


# --- memory ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_memory_is_flat_over_1000_warm_commands(sales: Store) -> None:
    """1,000 warm commands (summary text, best, find, runs) in one worker process: the heap must not
    grow with the number of commands (tracemalloc, after a warm-up of 100)."""
    import gc
    import tracemalloc

    from tasks.experiments import resolve
    from tasks.experiments.query import find_final, runs_final
    from tasks.experiments.summary import best_final, summary_text

    experiment = resolve.experiment("sales-agent")
    conditions = [{"name": "alpha", "op": "<", "value": "0.01", "numeric": True}]
    commands = [
        lambda: summary_text(experiment, "val_f1", 5),
        lambda: best_final(experiment, "val_f1", None),
        lambda: find_final(experiment, conditions, "val_f1", None, 5),
        lambda: runs_final(experiment, None, None, None, []),
    ]
    for i in range(100):
        commands[i % 4]()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(1000):
        commands[i % 4]()
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 512 * 1024, f"the heap grew {grown / 1024:.0f} KiB over 1,000 warm commands"


def test_a_misspelt_direction_in_labmate_toml_is_refused_by_name(lab_home: Path) -> None:
    import os

    from labmate.settings import ConfigError, load_settings

    Path(os.environ["LABMATE_CONFIG"]).write_text('[metric_directions]\nrank_test_score = "lowest"\n')
    with pytest.raises(ConfigError, match=r"rank_test_score = 'lowest': say \"lower\" or \"higher\""):
        load_settings()


def test_an_answer_that_outwaits_its_question_edits_itself_when_the_index_is_ready(sales: Store, monkeypatch) -> None:
    """The question stops waiting for a long build and says where it is; a follow-up asks again and
    replaces that same message with the full answer, without the user asking again."""
    import threading

    from bot.post import router
    from tasks.client import enqueue
    from tasks.experiments import first, sync
    from tasks.experiments import jobs as experiment_jobs

    _many_runs(sales, 300)
    monkeypatch.setattr(first, "QUICK_S", 0.0)
    monkeypatch.setattr(first, "WAIT_S", 0.0)
    monkeypatch.setattr(sync, "PAGE", 100)
    monkeypatch.setattr(experiment_jobs, "FOLLOW_UP_AFTER_S", 0)
    shown: list[tuple[str, dict]] = []
    done = threading.Event()

    def sink(_reply_to: dict, message) -> None:
        import json

        everything = message.text + json.dumps(message.blocks)
        shown.append((message.template, everything))
        if message.template == "exp_summary" and "still being gathered" not in everything:
            done.set()

    router().add_console("follow-up", sink)
    reply_to = {"user": "U1", "channel": "C1", "source": "shell", "thread_ts": None, "response_url": None,
                "session": "follow-up"}
    enqueue("labmate.experiments.summary",
            {"experiment": "sales-agent", "metric": "val_f1", "top": 3, "reply_to": reply_to, "audit_id": None})
    assert done.wait(60), shown
    templates = [t for t, _ in shown]
    assert templates[0] == "exp_summary" and "still being gathered" in shown[0][1]  # the preview
    assert "exp_indexing" in templates  # where the build was when the question stopped waiting
    assert templates[-1] == "exp_summary" and "305" in shown[-1][1]  # the same message, now the full answer
