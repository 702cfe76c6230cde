"""A real labmate Celery worker for the benchmarks: prefork pool, the jobs' own time limits, Redis
broker. Its replies go to a Redis list (`bench:replies:<session>`) with the time each was
delivered, so the benchmark sees the interim and the final answer as a user would.

    BENCH_REDIS=redis://127.0.0.1:6379/12 LABMATE_BROKER_URL=redis://127.0.0.1:6379/12 \
        .venv/bin/python bench/bench_worker.py
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


class RedisDelivery:
    def __init__(self, url: str) -> None:

        self.url = url
        self._client: Any = None

    def deliver(
        self, reply_to: dict[str, Any], template: str, context: dict[str, Any], *, key: str | None = None,
        final: bool = True,
    ) -> str | None:
        import redis

        if self._client is None:  # one per forked child
            self._client = redis.Redis.from_url(self.url)
        shown = {
            "t": time.time(),
            "template": template,
            "preview": bool(context.get("preview")),
            "total": context.get("total"),
            "message": context.get("message"),
            "indexed": context.get("indexed"),
        }
        self._client.rpush(f"bench:replies:{reply_to['session']}", json.dumps(shown, default=str))
        return None


def main() -> None:
    from labmate import outbox

    outbox.install(RedisDelivery(os.environ["BENCH_REDIS"]))
    from labmate.bootstrap import configure_logging
    from tasks.app import celery_app

    configure_logging("WARNING")
    app = celery_app()
    app.worker_main(
        ["worker", "-P", "prefork", "-c", os.environ.get("BENCH_CONCURRENCY", "2"), "-Q", "default",
         "--loglevel", "WARNING", "-n", f"bench-{os.getpid()}@%h", "--without-gossip", "--without-mingle",
         "--without-heartbeat"]
    )  # fmt: skip


if __name__ == "__main__":
    main()
