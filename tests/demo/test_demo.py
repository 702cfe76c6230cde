"""`labmate demo` end to end: real MLflow Project runs into a throwaway sqlite store.

The demo runs once per module (~40 s on 2 cores); models are loaded in a fresh subprocess, the
way the regression engine will load them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tasks.mlflow_io.demo import DEMO_RUNS, MODEL_NAME, PROJECT_DIR, DemoReport, run_demo

pytestmark = pytest.mark.slow

SPECS = {spec.key: spec for spec in DEMO_RUNS}
CONVERSATIONS: dict[str, list[dict[str, str]]] = {
    "hi": [{"role": "user", "content": "hi"}],
    "named_greeting": [{"role": "user", "content": "Hi, I'm Dana"}],
    "pricing": [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "Hi there! How can I help you today?"},
        {"role": "user", "content": "how much for 10 seats?"},
    ],
    "discount": [{"role": "user", "content": "do you have any discounts?"}],
    "refund": [{"role": "user", "content": "I want a refund for order #10482"}],
    "human": [{"role": "user", "content": "can I talk to a human?"}],
    "goodbye_by_name": [
        {"role": "user", "content": "I'm Sam, just looking around"},
        {"role": "assistant", "content": "Welcome!"},
        {"role": "user", "content": "thanks, bye!"},
    ],
}
PROJECT_FILES = {"MLproject", "python_env.yaml", "agent.py", "train.py", "data"}

_PREDICT_SCRIPT = """
import json, sys
import mlflow.pyfunc
conversations = json.loads(sys.stdin.read())
out = {}
for alias in ("production", "candidate"):
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@{alias}")
    out[alias] = {name: model.predict(conv) for name, conv in conversations.items()}
    out[alias + "_batch"] = model.predict(list(conversations.values()))
print(json.dumps(out))
"""


@dataclass
class DemoResult:
    tracking_uri: str
    root: Path
    home: Path
    first: DemoReport
    second: DemoReport
    first_seconds: float
    runs_after_first: int
    runs_after_second: int
    versions_after_second: int
    messages: list[str]


def _count_runs(tracking_uri: str, experiment_id: str) -> int:
    import mlflow

    return len(mlflow.MlflowClient(tracking_uri).search_runs([experiment_id], max_results=1000))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoResult:
    import mlflow

    root = tmp_path_factory.mktemp("sales_demo")
    home = root / "home"
    home.mkdir()
    tracking_uri = f"sqlite:///{root}/mlflow.db"
    messages: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.chdir(root)
        mp.setattr(sys, "dont_write_bytecode", False)  # as a user's Python runs: nothing may land in the project
        for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
            mp.delenv(var, raising=False)
        started = time.monotonic()
        first = run_demo(tracking_uri, progress=messages.append)
        first_seconds = time.monotonic() - started
        runs_after_first = _count_runs(tracking_uri, first.experiment_id)
        second = run_demo(tracking_uri)
        runs_after_second = _count_runs(tracking_uri, first.experiment_id)
    versions = mlflow.MlflowClient(tracking_uri).search_model_versions(f"name = '{MODEL_NAME}'")
    print(f"demo took {first_seconds:.1f}s, second call {second.seconds}s")
    return DemoResult(
        tracking_uri,
        root,
        home,
        first,
        second,
        first_seconds,
        runs_after_first,
        runs_after_second,
        len(versions),
        messages,
    )


@pytest.fixture(scope="module")
def replies(demo: DemoResult) -> dict:
    """Load both aliases in a fresh interpreter (as a consumer would) and predict."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": demo.tracking_uri, "HOME": str(demo.home)}
    env.pop("MLFLOW_REGISTRY_URI", None)
    proc = subprocess.run(
        [sys.executable, "-c", _PREDICT_SCRIPT.replace("{MODEL}", MODEL_NAME)],
        input=json.dumps(CONVERSATIONS),
        capture_output=True,
        text=True,
        cwd=demo.root,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _client(demo: DemoResult):
    import mlflow

    return mlflow.MlflowClient(demo.tracking_uri)


def test_run_statuses(demo: DemoResult) -> None:
    statuses = {status: len(ids) for status, ids in demo.first.runs_by_status.items()}
    assert statuses == {"FINISHED": 6, "FAILED": 2}
    assert set(demo.first.run_ids) == set(SPECS)
    assert demo.first.created and set(demo.first.created_runs) == set(SPECS)


def test_runs_are_trained_by_the_project_code_by_several_users(demo: DemoResult) -> None:
    client = _client(demo)
    runs = [client.get_run(run_id) for run_id in demo.first.run_ids.values()]
    assert {run.data.tags["mlflow.source.name"] for run in runs} == {"examples/sales_agent/train.py"}
    assert {run.data.tags["mlflow.user"] for run in runs} == {"dana", "sam", "lee"}
    assert all(run.data.tags["labmate.demo"] == "1" for run in runs)


def test_only_the_registered_runs_log_a_model(demo: DemoResult) -> None:
    """Training more than the demo needs cost most of its time: six of eight models were never used."""
    from tasks.mlflow_io.demo import REGISTERED

    client = _client(demo)
    with_model = {
        key for key, run_id in demo.first.run_ids.items() if (client.get_run(run_id).outputs or None) and client.get_run(run_id).outputs.model_outputs
    }
    assert with_model == {key for key, _ in REGISTERED}


def test_progress_counts_the_runs_and_calls_the_failures_planned(demo: DemoResult) -> None:
    assert any(m.startswith(f"[1/{len(DEMO_RUNS)}] training baseline") for m in demo.messages)
    planned = [m for m in demo.messages if "as planned" in m]
    assert len(planned) == 2 and all("crash" in m for m in planned)


def test_finished_runs_log_params_and_metrics_per_epoch(demo: DemoResult) -> None:
    client = _client(demo)
    for key, spec in SPECS.items():
        if spec.expected_status != "FINISHED":
            continue
        run = client.get_run(demo.first.run_ids[key])
        assert run.info.status == "FINISHED"
        assert float(run.data.params["alpha"]) == pytest.approx(spec.params["alpha"])
        assert run.data.params["ngram_max"] == str(spec.params["ngram_max"])
        for metric in ("train_loss", "val_f1", "val_accuracy"):
            history = client.get_metric_history(run.info.run_id, metric)
            assert sorted(m.step for m in history) == list(range(1, int(spec.params["epochs"]) + 1))
        assert 0.5 < run.data.metrics["val_f1"] <= 1.0


def test_failed_runs(demo: DemoResult) -> None:
    client = _client(demo)
    mid = client.get_run(demo.first.run_ids["crash-mid"])
    early = client.get_run(demo.first.run_ids["crash-early"])
    assert mid.info.status == early.info.status == "FAILED"
    assert [m.step for m in client.get_metric_history(mid.info.run_id, "val_f1")] == [1, 2]
    assert early.data.metrics == {}
    assert early.data.params["fail_at_epoch"] == "0"


def test_registered_model_and_aliases(demo: DemoResult) -> None:
    client = _client(demo)
    production = client.get_model_version_by_alias(MODEL_NAME, "production")
    candidate = client.get_model_version_by_alias(MODEL_NAME, "candidate")
    assert (str(production.version), str(candidate.version)) == ("1", "2")
    assert production.run_id == demo.first.run_ids["baseline"]
    assert candidate.run_id == demo.first.run_ids["unigram-v2"]
    prod_f1, cand_f1 = (client.get_run(mv.run_id).data.metrics["val_f1"] for mv in (production, candidate))
    assert cand_f1 > prod_f1
    assert demo.first.aliases == {"production": "1", "candidate": "2"}


def test_models_predict_contract(replies: dict) -> None:
    for alias in ("production", "candidate"):
        single = replies[alias]["hi"]
        assert set(single) == {"reply", "intent", "slots"}
        assert single["intent"] == "greet" and single["reply"]
        batch = replies[alias + "_batch"]
        assert isinstance(batch, list) and len(batch) == len(CONVERSATIONS)
        assert batch == list(replies[alias].values())
    slots = replies["candidate"]["goodbye_by_name"]["slots"]
    assert slots == {"name": "Sam"}
    assert replies["candidate"]["pricing"]["slots"] == {"quantity": 10}
    assert replies["candidate"]["refund"]["slots"] == {"order_id": "#10482"}


def test_versions_reply_differently(replies: dict) -> None:
    prod, cand = replies["production"], replies["candidate"]
    assert all(prod[name]["intent"] == cand[name]["intent"] for name in CONVERSATIONS)
    assert "$39" in prod["pricing"]["reply"] and "$49" in cand["pricing"]["reply"]
    assert "Dana" not in prod["named_greeting"]["reply"] and "Hi Dana!" in cand["named_greeting"]["reply"]
    assert "WELCOME10" in cand["discount"]["reply"] and "WELCOME10" not in prod["discount"]["reply"]
    assert "#10482" in cand["refund"]["reply"] and "#10482" not in prod["refund"]["reply"]
    assert "Sam" in cand["goodbye_by_name"]["reply"]
    for same in ("hi", "human"):
        assert prod[same] == cand[same]
    assert "human agent" in cand["human"]["reply"]


def test_second_run_creates_nothing(demo: DemoResult) -> None:
    assert not demo.second.created
    assert demo.runs_after_second == demo.runs_after_first == len(SPECS)
    assert demo.versions_after_second == 2
    assert demo.second.run_ids == demo.first.run_ids
    assert demo.second.aliases == demo.first.aliases


def test_writes_stay_in_the_store(demo: DemoResult) -> None:
    assert (demo.root / "mlartifacts").is_dir()
    assert not (demo.root / "mlruns").exists()
    assert {p.name for p in PROJECT_DIR.iterdir()} <= PROJECT_FILES
    leaked = [p for p in demo.home.rglob("*") if p.is_file()]
    assert leaked == []


@pytest.mark.slow
def test_two_demos_at_once_on_a_new_home_both_succeed_and_make_the_runs_once(tmp_path: Path) -> None:
    """Both ran MLflow's own schema migrations on the new store at once: both failed, and every later
    demo failed on the half-migrated store (`table _alembic_tmp_… already exists`)."""
    labmate = Path(sys.executable).parent / "labmate"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABMATE_", "MLFLOW_", "SLACK_"))}
    env.update(LABMATE_HOME=str(tmp_path / "home"), LABMATE_CONFIG=str(tmp_path / "labmate.toml"))
    (tmp_path / "labmate.toml").touch()
    demos = [subprocess.Popen([str(labmate), "demo"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [demo.communicate(timeout=300)[0] for demo in demos]
    assert [demo.returncode for demo in demos] == [0, 0], outputs
    assert sum(out.count("[1/8] training") for out in outputs) == 1, outputs  # one made them, the other found them
    again = subprocess.run([str(labmate), "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "training" not in again.stdout, again.stdout + again.stderr
