from __future__ import annotations

import json
import pickle
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tasks.regress.errors import TargetLoadError
from tasks.regress.runner import run_conversation, run_suite_conversation
from tasks.regress.suite import load_suite
from tasks.regress.targets import load_target


def conversation(write_suite, text):
    (conv,) = load_suite(write_suite(text)).conversations
    return conv


PRICE = """
    vars: {plan: Pro}
    conversations:
      - id: price
        turns:
          - user: "What is the price of {{ plan }}?"
            expect:
              - contains: "49 USD"
              - intent: pricing
"""


def test_pass_and_fail_against_two_versions(write_suite, agent):
    conv = conversation(write_suite, PRICE)
    ok = run_conversation(conv, agent("deterministic"))
    assert ok["status"] == "pass" and ok["error"] is None
    assert ok["turns"][0]["user"] == "What is the price of Pro?"
    assert ok["turns"][0]["intent"] == "pricing"
    bad = run_conversation(conv, agent("deterministic_v2"))
    assert bad["status"] == "fail"
    failed = [e for e in bad["turns"][0]["expectations"] if not e["passed"]]
    assert [e["description"] for e in failed] == ["contains '49 USD'"]
    assert pickle.loads(pickle.dumps(bad)) == bad


def test_agent_sees_the_conversation_so_far_and_captures_feed_later_turns(write_suite, agent):
    conv = conversation(write_suite, """
        conversations:
          - id: order
            turns:
              - user: I want to place an order
                capture: {order_id: "(?P<order_id>A-\\\\d+)"}
              - user: "what is the status of {{ order_id }}"
                expect:
                  - contains: "{{ order_id }} has shipped"
                  - regex: "(?i)turn"
                    optional: true
    """)
    result = run_conversation(conv, agent("deterministic"))
    assert result["status"] == "pass", result
    assert result["turns"][1]["user"] == "what is the status of A-1234"
    assert result["turns"][1]["expectations"][1]["passed"] is False  # optional, does not fail


def test_failed_capture_stops_the_conversation(write_suite, agent):
    conv = conversation(write_suite, """
        conversations:
          - id: c
            turns:
              - user: hello
                capture: {order_id: "A-(\\\\d+)"}
              - user: "status of {{ order_id }}"
    """)
    result = run_conversation(conv, agent("echo"))
    assert result["status"] == "fail"
    assert len(result["turns"]) == 1
    assert result["turns"][0]["expectations"][0]["description"] == "capture order_id by 'A-(\\d+)'"


def test_echo_and_multi_turn_history(write_suite, agent):
    conv = conversation(write_suite, """
        conversations:
          - id: e
            turns:
              - user: one
                expect: [{equals: one}]
              - user: hi
                expect: [{contains: "turn 2"}]
    """)
    assert run_conversation(conv, agent("echo"))["status"] == "fail"
    assert run_conversation(conv, agent("deterministic"))["turns"][1]["reply"] == "Hello! How can I help? (turn 2)"


def test_raising_agent_is_an_error_not_a_crash(write_suite, agent):
    conv = conversation(write_suite, "conversations: [{id: r, turns: [{user: hi}, {user: again}]}]")
    result = run_conversation(conv, agent("raising"))
    assert result["status"] == "error"
    assert result["error"] == "turn 1: agent raised RuntimeError: agent exploded"
    assert len(result["turns"]) == 1


def test_hanging_agent_times_out_without_blocking(write_suite, agent):
    conv = conversation(write_suite, "conversations: [{id: h, turns: [{user: hi}]}]")
    started = time.perf_counter()
    result = run_conversation(conv, agent("hanging"), {"timeout": 0.2})
    assert time.perf_counter() - started < 2
    assert result["status"] == "error"
    assert result["error"] == "turn 1: timeout: no reply within 0.2 s"
    # The next call gets a fresh worker thread and works normally.
    assert run_conversation(conv, agent("echo"), {"timeout": 0.5})["status"] == "pass"


def test_output_shapes(write_suite, agent):
    conv = conversation(write_suite, "conversations: [{id: o, turns: [{user: hi, expect: [{intent: listed}]}]}]")
    assert run_conversation(conv, agent("list_output"))["status"] == "pass"
    bad = run_conversation(conv, agent("bad_output"))
    assert bad["status"] == "error"
    assert bad["error"] == "turn 1: bad output: the agent returned int; expected a str or a dict with 'reply'"


def test_repeat_with_pass_rate_for_flaky_agents(write_suite, agent):
    strict = conversation(write_suite, """
        conversations:
          - {id: f, repeat: 4, turns: [{user: hi, expect: [{equals: ok}]}]}
    """)
    result = run_conversation(strict, agent("flaky"))
    assert (result["runs"], result["passed_runs"], result["status"]) == (4, 2, "fail")
    lenient = {**strict, "pass_rate": 0.5}
    result = run_conversation(lenient, agent("flaky"))
    assert (result["passed_runs"], result["status"]) == (2, "pass")
    assert len(result["latencies_ms"]) == 4


def test_weights_and_min_score(write_suite, agent):
    conv = conversation(write_suite, """
        conversations:
          - id: w
            min_score: 0.7
            turns:
              - user: What is the price?
                expect:
                  - contains: "49 USD"
                    weight: 3
                  - contains: "EUR"
    """)
    result = run_conversation(conv, agent("deterministic"))
    assert result["score"] == pytest.approx(0.75) and result["status"] == "pass"
    assert run_conversation({**conv, "min_score": 0.8}, agent("deterministic"))["status"] == "fail"


def test_run_suite_conversation_by_path_and_id(write_suite, agent):
    path = write_suite(PRICE)
    assert run_suite_conversation(str(path), "price", agent("deterministic"))["status"] == "pass"
    with pytest.raises(KeyError):
        run_suite_conversation(str(path), "nope", agent("deterministic"))


def test_module_callable_target_and_cache(monkeypatch):
    first = load_target("json:dumps")
    assert load_target("json:dumps") is first
    assert first([{"role": "user", "content": "x"}]) == '[{"role": "user", "content": "x"}]'


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("no_such_module_xyz:agent", "cannot load target 'no_such_module_xyz:agent': ModuleNotFoundError"),
        ("json:no_such_function", "cannot load target 'json:no_such_function': json has no attribute"),
        ("json:__doc__", "'__doc__' is not callable"),
        ("just-a-name", "not a model URI (models:/…, runs:/…), a callable (package.module:function)"),
        ("/nowhere/agent.py:run", "FileNotFoundError: no such file: /nowhere/agent.py"),
    ],
)
def test_target_that_cannot_be_loaded(uri, message):
    with pytest.raises(TargetLoadError) as info:
        load_target(uri)
    assert message in str(info.value)


def test_mlflow_model_that_does_not_exist(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(TargetLoadError) as info:
        load_target("models:/no-such-model@candidate", {"tracking_uri": uri})
    assert str(info.value).startswith("cannot load target 'models:/no-such-model@candidate': ")
    assert "no-such-model" in str(info.value).split(": ", 1)[1]


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        last = body["messages"][-1]["content"]
        if last == "boom":
            self.send_response(500)
            self.end_headers()
            return
        payload = {"data": {"text": f"you said {last} ({len(body['messages'])} messages)", "label": "echo"}}
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_agent():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/chat"
    server.shutdown()
    server.server_close()


def test_http_target_with_configured_paths(write_suite, http_agent):
    conv = conversation(write_suite, """
        conversations:
          - id: h
            turns:
              - user: hello
              - user: again
                expect:
                  - equals: "you said again (3 messages)"
                  - intent: echo
                  - json-path: {path: "$.data.label", equals: echo}
    """)
    options = {"reply_path": "$.data.text", "intent_path": "$.data.label"}
    assert run_conversation(conv, http_agent, options)["status"] == "pass"
    default_paths = run_conversation(conv, http_agent)
    assert default_paths["status"] == "error"
    assert default_paths["error"] == "turn 1: bad output: no string reply at $.reply"


def test_http_server_error_is_a_conversation_error(write_suite, http_agent):
    conv = conversation(write_suite, "conversations: [{id: b, turns: [{user: boom}]}]")
    result = run_conversation(conv, http_agent, {"reply_path": "$.data.text"})
    assert result["status"] == "error"
    assert "agent raised HTTPError: 500 Server Error" in result["error"]


def test_batch_carries_on_after_a_hung_conversation(write_suite, agent):
    from tasks.regress.runner import run_batch

    conv = conversation(write_suite, "conversations: [{id: b, turns: [{user: one}, {user: two}]}]")
    seen = []
    results = run_batch(
        [(conv, agent("echo"), {"timeout": 0.3}), (conv, agent("hanging"), {"timeout": 0.3}),
         (conv, agent("echo"), {"timeout": 0.3})],
        on_result=lambda index, result: seen.append(index),
    )
    assert [r["status"] for r in results] == ["pass", "error", "pass"]
    assert results[1]["turns"][0]["error"] == "turn 1: timeout: no reply within 0.3 s"
    assert results[1]["turns"][0]["latency_ms"] == pytest.approx(300)
    assert results[1]["latencies_ms"] == [pytest.approx(300)], "a p95 gate sees the turn that timed out"
    assert sorted(seen) == [0, 1, 2]


def test_timeout_in_a_later_turn_keeps_the_earlier_transcript(write_suite, agent, monkeypatch):
    conv = conversation(write_suite, "conversations: [{id: s, turns: [{user: fast}, {user: slow}]}]")
    result = run_conversation(conv, agent("slow_on_second_turn"), {"timeout": 0.3})
    assert result["status"] == "error"
    assert [t["reply"] for t in result["turns"]] == ["fast", None]
    assert result["error"] == "turn 2: timeout: no reply within 0.3 s"


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ('user: "{{ 1/0 }}"', "turn 1: template error in user message: ZeroDivisionError: division by zero"),
        ('user: "{% for i in range(100000000) %}x{% endfor %}"', "turn 1: template error in user message: OverflowError"),
    ],
)
def test_a_template_that_breaks_while_rendering_errors_its_conversation(write_suite, agent, where, expected):
    conv = conversation(write_suite, f"conversations: [{{id: t, turns: [{{{where}}}]}}]")
    result = run_conversation(conv, agent("echo"))
    assert result["status"] == "error" and result["error"].startswith(expected), result["error"]


def test_an_expectation_that_breaks_while_rendering_fails_that_expectation(write_suite, agent):
    conv = conversation(write_suite, 'conversations: [{id: e, turns: [{user: hi, expect: [{contains: "{{ 1/0 }}"}]}]}]')
    result = run_conversation(conv, agent("echo"))
    assert result["status"] == "fail"
    assert result["turns"][0]["expectations"][0]["detail"] == "template error: ZeroDivisionError: division by zero"
