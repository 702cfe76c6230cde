"""A tiny MLflow Project for labmate's launch tests and benchmarks.

Prints one JSON line first (when it started, the argv it got, its process group, which labmate
variables leaked into its environment) and one last (when it ended, its CPU seconds), and between
them logs `epochs` steps of `score` and `loss` into the run
MLflow Projects hands it (MLFLOW_RUN_ID). `--spin` burns that many CPU seconds per step, `--sleep`
waits, `--fail N` raises at step N.
"""

import argparse
import json
import os
import sys
import time

STARTED = time.time()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--spin", type=float, default=0.0)
    parser.add_argument("--note", default="none")
    parser.add_argument("--fail", type=int, default=0)
    parser.add_argument("--data", default="")
    args = parser.parse_args()
    leaked = sorted(k for k in os.environ if k.startswith(("SLACK_", "LABMATE_")))
    print(json.dumps({"started": STARTED, "argv": sys.argv[1:], "pid": os.getpid(), "pgid": os.getpgid(0),
                      "leaked": leaked, "cwd": os.getcwd()}), flush=True)
    import mlflow

    with mlflow.start_run():
        for epoch in range(1, args.epochs + 1):
            deadline = time.process_time() + args.spin
            while time.process_time() < deadline:
                sum(i * i for i in range(10_000))
            time.sleep(args.sleep)
            if args.fail and epoch == args.fail:
                print(f"about to fail at epoch {epoch}", flush=True)
                raise RuntimeError(f"injected failure at epoch {epoch}")
            score = 1 - 1 / (1 + epoch * args.lr * 10)
            mlflow.log_metrics({"score": score, "loss": 1 - score}, step=epoch)
            print(f"epoch {epoch}: score {score:.4f}", flush=True)
    print(json.dumps({"ended": time.time(), "cpu": time.process_time()}), flush=True)


if __name__ == "__main__":
    main()
