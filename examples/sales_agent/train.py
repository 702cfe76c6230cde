"""Train the sales-agent intent classifier epoch by epoch and log it as an MLflow pyfunc.

Run through MLflow Projects (`mlflow run examples/sales_agent -e train -P epochs=5`) or directly
(`python train.py --epochs 5`); it logs into the active/env-provided run (MLFLOW_RUN_ID) if any.
Epochs are numbered from 1 and logged with step=epoch. With ``--fail-at-epoch N`` (N >= 0) the run
raises after N completed epochs, so MLflow marks it FAILED with N metric steps.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
from pathlib import Path

sys.dont_write_bytecode = True  # keep the project directory free of __pycache__

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import sklearn  # noqa: E402
from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.linear_model import SGDClassifier  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score, log_loss  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from agent import SalesAgent  # noqa: E402

DATA = HERE / "data" / "intents.csv"


class InjectedFailure(RuntimeError):
    """Raised on purpose (fail_at_epoch) so the demo has FAILED runs."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--alpha", type=float, default=1e-4)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--ngram-max", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fail-at-epoch", type=int, default=-1)
    parser.add_argument("--reply-version", type=int, default=2, choices=(1, 2))
    return parser.parse_args(argv)


def load_data() -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = pd.read_csv(DATA)
    return frame[frame["split"] == "train"], frame[frame["split"] == "val"]


def train(args: argparse.Namespace) -> Pipeline:
    train_df, val_df = load_data()
    classes = np.array(sorted(train_df["intent"].unique()))
    vectorizer = TfidfVectorizer(ngram_range=(1, args.ngram_max), sublinear_tf=True)
    x_train = vectorizer.fit_transform(train_df["text"])
    x_val = vectorizer.transform(val_df["text"])
    y_train, y_val = train_df["intent"].to_numpy(), val_df["intent"].to_numpy()
    clf = SGDClassifier(loss="log_loss", alpha=args.alpha, random_state=args.seed)
    rng = np.random.default_rng(args.seed)
    for epoch in range(1, args.epochs + 1):
        if 0 <= args.fail_at_epoch < epoch:
            raise InjectedFailure(f"injected failure after {args.fail_at_epoch} epoch(s)")
        order = rng.permutation(len(y_train))
        clf.partial_fit(x_train[order], y_train[order], classes=classes)
        val_pred = clf.predict(x_val)
        mlflow.log_metrics(
            {
                "train_loss": float(log_loss(y_train, clf.predict_proba(x_train), labels=classes)),
                "val_f1": float(f1_score(y_val, val_pred, average="macro")),
                "val_accuracy": float(accuracy_score(y_val, val_pred)),
            },
            step=epoch,
        )
    return Pipeline([("tfidf", vectorizer), ("clf", clf)])


def log_agent(pipeline: Pipeline, reply_version: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pipeline_path = Path(tmp) / "pipeline.pkl"
        pipeline_path.write_bytes(pickle.dumps(pipeline))
        mlflow.pyfunc.log_model(
            name="agent",
            python_model=SalesAgent(),
            artifacts={"pipeline": str(pipeline_path)},
            code_paths=[str(HERE / "agent.py")],
            model_config={"reply_version": reply_version},
            # Explicit requirements: skips MLflow's slow requirement inference subprocess.
            pip_requirements=[f"mlflow=={mlflow.__version__}", f"scikit-learn=={sklearn.__version__}"],
        )


def fit_and_log(args: argparse.Namespace, *, log_model: bool = True) -> None:
    """Into the active run: the params not logged yet, a metric step per epoch, then the agent.

    `labmate demo` calls this in its own process (one import of MLflow and scikit-learn for all
    eight runs) and logs the agent only for the runs it registers.
    """
    run = mlflow.active_run()
    assert run is not None, "fit_and_log needs an active MLflow run"
    params = {
        "alpha": args.alpha,
        "epochs": args.epochs,
        "ngram_max": args.ngram_max,
        "seed": args.seed,
        "fail_at_epoch": args.fail_at_epoch,
        "reply_version": args.reply_version,
    }
    # MLflow Projects already logged the MLproject parameters (maybe spelled differently,
    # e.g. "1e-4"); re-logging a different spelling would be rejected.
    logged = mlflow.get_run(run.info.run_id).data.params
    mlflow.log_params({k: v for k, v in params.items() if k not in logged})
    pipeline = train(args)
    if log_model:
        log_agent(pipeline, args.reply_version)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with mlflow.start_run():
        fit_and_log(args)


if __name__ == "__main__":
    main()
