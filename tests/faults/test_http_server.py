"""The serving stack under many keep-alive clients (as Slack's and most HTTP clients' pools behave):
an idle keep-alive connection must not hold a server thread, or a handful of them starve everyone."""

from __future__ import annotations

import http.client
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from slackreq import FORM, Slack, signed_headers

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def test_idle_keep_alive_connections_do_not_starve_new_requests(make_lab) -> None:
    setup = make_lab()
    setup.lab.serve(threads=4)
    port = setup.lab.port
    body = Slack(None, "").command_body("help")  # type: ignore[arg-type]

    def request(connection: http.client.HTTPConnection) -> float:
        started = time.perf_counter()
        connection.request("POST", "/slack/events", body=body, headers=signed_headers(body, content_type=FORM))
        answer = connection.getresponse()
        answer.read()
        assert answer.status == 200
        return time.perf_counter() - started

    idle = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(60)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(request, idle))  # 60 clients, each now holding an idle keep-alive connection

    newcomer = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    assert request(newcomer) < 2.0
    with ThreadPoolExecutor(max_workers=20) as pool:
        again = list(pool.map(request, idle))  # the idle connections are still usable
    assert max(again) < 5.0
    for connection in [*idle, newcomer]:
        connection.close()
