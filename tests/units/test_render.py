"""The renderer: every template gives valid Block Kit, user text stays literal, limits hold."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from bot import dispatch, grammar
from bot.grammar import HelpArgs
from bot.messages import limits
from bot.messages.render import TEMPLATES, Message, render
from bot.origin import Origin
from tests.units.cleanup_contexts import cleanup_contexts
from tests.units.launch_contexts import launch_contexts
from tests.units.regress_contexts import regress_contexts
from tests.units.watch_contexts import watch_contexts

WHEN = datetime(2026, 11, 26, 15, 30, tzinfo=UTC)
HOSTILE = (
    'hey <!channel> and <!here|here> ping <@U123> see <https://evil.example|ok> &lt; *bold* _it_ ~s~ `code` '
    '"quoted" \\backslash\\ \\" \n newline\ttab {{ jinja }} {% raw %} </script> ]} " , {"a": 1}'
)
LITERALS = ('"quoted"', "\\backslash\\", "*bold*", "\n newline\ttab", "{{ jinja }}", '{"a": 1}')
BLOCK_TYPES = {"section", "context", "header", "divider", "actions", "image", "rich_text"}
TEXT_TYPES = {"mrkdwn", "plain_text"}


# --- a small Block Kit validator ------------------------------------------------------


def _text_object(obj: Any, where: str, limit: int, plain_only: bool = False) -> None:
    assert isinstance(obj, dict), f"{where}: text object must be an object"
    assert obj.get("type") in ({"plain_text"} if plain_only else TEXT_TYPES), f"{where}: bad text type {obj.get('type')}"
    assert isinstance(obj.get("text"), str), f"{where}: text must be a string"
    assert 1 <= len(obj["text"]) <= limit, f"{where}: text length {len(obj['text'])} not in 1..{limit}"
    assert set(obj) <= {"type", "text", "emoji", "verbatim"}, f"{where}: unknown keys {set(obj)}"


def validate_block_kit(payload: dict[str, Any]) -> None:
    assert set(payload) == {"text", "blocks"}
    assert isinstance(payload["text"], str)
    assert len(payload["text"]) <= limits.MAX_FALLBACK_TEXT
    blocks = payload["blocks"]
    assert isinstance(blocks, list)
    assert 1 <= len(blocks) <= 50
    for i, block in enumerate(blocks):
        where = f"block {i}"
        assert block.get("type") in BLOCK_TYPES, f"{where}: type {block.get('type')!r}"
        if block["type"] == "section":
            assert "text" in block or "fields" in block, f"{where}: section needs text or fields"
            if "text" in block:
                _text_object(block["text"], where, 3000)
            for field in block.get("fields", []):
                _text_object(field, where, 2000)
            assert len(block.get("fields", [])) <= 10
        elif block["type"] == "header":
            _text_object(block["text"], where, 150, plain_only=True)
        elif block["type"] == "context":
            elements = block["elements"]
            assert 1 <= len(elements) <= 10, f"{where}: {len(elements)} context elements"
            for element in elements:
                _text_object(element, where, 3000)


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def checked(message: Message) -> str:
    """Validate, round-trip through JSON as Slack gets it, and return every string joined."""
    payload = json.loads(json.dumps(message.payload()))
    validate_block_kit(payload)
    return "\n".join(strings(payload))


def assert_no_injection(rendered: str) -> None:
    """No mention, broadcast or link from the user's text; trusted links (`<https://mlflow…|…>`) may remain."""
    assert "<!" not in rendered
    assert "<@U123" not in rendered
    assert "<https://evil" not in rendered
    for match in re.finditer(r"<(http[^|>]*)", rendered):
        assert match.group(1).startswith(("https://mlflow.example/", "https://team.slack.com/")), match.group(0)


def test_validator_rejects_what_slack_rejects():
    """The validator itself must fail on broken payloads, or the tests below prove nothing."""
    good = {"text": "t", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "x"}}]}
    validate_block_kit(good)
    bad = [
        {"text": "t", "blocks": [{"type": "sektion", "text": {"type": "mrkdwn", "text": "x"}}]},
        {"text": "t", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]},
        {"text": "t", "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}]},
        {"text": "t", "blocks": [{"type": "header", "text": {"type": "mrkdwn", "text": "x"}}]},
        {"text": "t", "blocks": [{"type": "context", "elements": [{"type": "mrkdwn", "text": "x"}] * 11}]},
        {"text": "t", "blocks": [{"type": "section", "text": {"type": "markdown", "text": "x"}}]},
        {"text": "t", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": ""}}]},
        {"text": "t", "blocks": [good["blocks"][0]] * 51},
    ]
    for payload in bad:
        with pytest.raises(AssertionError):
            validate_block_kit(payload)


# --- contexts for every template ----------------------------------------------------


def link(kind: str = "run", ref: str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9", **kw: Any) -> dict[str, Any]:
    return {"kind": kind, "ref": ref, "status": "ok", "summary": "", "url": "", **kw}


def view(text: str = HOSTILE, **kw: Any) -> dict[str, Any]:
    return {
        "id": 7,
        "text": text,
        "author": "U999",
        "channel": "C1",
        "created_at": WHEN,
        "tags": ["release", "nlp"],
        "links": [link()],
        "permalink": None,
        "superseded_by": None,
        **kw,
    }


def contexts(text: str = HOSTILE) -> dict[str, list[dict[str, Any]]]:
    hostile_link = link(
        "model", f"m/{text[:50]}", status="missing", summary=text, url="https://mlflow.example/#/models/x/versions/1"
    )
    replaced = view(text, superseded_by=8, permalink="https://team.slack.com/archives/C1/p1", links=[hostile_link])
    replaced["replacement"] = view(text, id=8)
    plain = view(text)
    plain["replacement"] = None
    return {
        "decision_logged": [{"d": view(text), "old": None}, {"d": view(text, id=8, links=[], tags=[]), "old": view(text)},
                            {"d": view(text), "old": None, "logged_by": text}, {"d": view(text), "old": None, "already": True}],
        "decisions": [
            {"hits": [replaced, plain], "query": text, "filters": "#release"},
            {"hits": [], "query": text, "filters": f"by {text}"},
            {"hits": [plain], "query": "", "filters": ""},
        ],
        "ask_decisions": [
            {"how": "some", "words": [text, "weather"], "links": "", "hits": [{**replaced, "mentions": [text]}, plain]},
            {"how": "linked", "words": [text, "candidate"], "links": "a model", "hits": [plain]},
            {"how": "linked", "words": [], "links": "a model and a run", "hits": [replaced]},
        ],
        "error": [
            {"message": text, "hint": text, "error_id": None},
            {"message": text, "hint": "", "error_id": "E-12345678"},
        ],
        "help": [
            {"verb": None, "verbs": grammar.VERBS, "command": "/lab"},
            *({"verb": v, "verbs": [], "command": "/lab"} for v in grammar.VERBS),
        ],
        "links_checked": [
            {"decision_id": 7, "found": [{"kind": "run", "ref": text[:40], "summary": text}],
             "missing": [{"kind": "model", "ref": text, "reason": text}]},
            {"decision_id": 7, "found": [], "missing": [{"kind": "run", "ref": "r", "reason": ""}] * 2},
            {"decision_id": 7, "found": [{"kind": "run", "ref": "r", "summary": ""}], "missing": []},
        ],
        "working": [{"what": text}],
        "ask_unknown": [{"question": text, "words": [text, "weather"]}, {"question": text, "words": []}],
        "exp_indexing": [
            {"experiment": text, "understood": text, "indexed": 12000, "expected": 100000},
            {"experiment": text, "understood": "", "indexed": 0, "expected": None},
        ],
        **launch_contexts(text),
        **regress_contexts(text),
        **cleanup_contexts(text),
        **watch_contexts(text),
    }


ALL_TEMPLATES = sorted(p.name.removesuffix(".json.j2") for p in TEMPLATES.glob("*.json.j2"))


def test_contexts_name_real_templates():
    assert set(contexts()) <= set(ALL_TEMPLATES)


# The experiment answers are rendered from real MLflow runs with hostile names, params and tags.
COVERED_BY_REAL_JOBS = {"exp_summary", "exp_best", "exp_runs", "exp_compare", "exp_working"}


@pytest.mark.parametrize("template", ALL_TEMPLATES)
def test_every_template_is_covered(template):
    from tests.experiments.test_exp_hostile import EXP_TEMPLATES

    assert COVERED_BY_REAL_JOBS == EXP_TEMPLATES
    assert template in contexts() or template in COVERED_BY_REAL_JOBS, f"add hostile-text contexts for {template}"


@pytest.mark.parametrize("template", sorted(contexts()))
def test_template_renders_valid_block_kit_with_hostile_text(template):
    for context in contexts()[template]:
        message = render(template, context)
        rendered = checked(message)
        assert_no_injection(rendered)
    if template != "help":
        first = checked(render(template, contexts()[template][0]))
        assert "&lt;!channel&gt;" in first, "the hostile text must actually be in the message"


@pytest.mark.parametrize("template", ["decision_logged", "decisions", "error", "working"])
def test_user_text_arrives_literally(template):
    """After Slack decodes the three entities, the reader sees exactly what was typed."""
    from bot.messages.mrkdwn import unescape

    message = render(template, contexts()[template][0])
    shown = unescape(checked(message))
    for literal in LITERALS:
        assert literal in shown, literal
    assert "<!channel>" in shown and "<@U123>" in shown and "<https://evil.example|ok>" in shown
    assert "&lt;" in shown  # typed "&lt;" is shown as those four characters, not as "<"


@pytest.mark.parametrize("template", sorted(p.name for p in TEMPLATES.glob("*.j2")))
def test_no_template_writes_a_raw_angle_bracket(template: str) -> None:
    """Slack reads `<…>` as a link, mention or command: a placeholder written so (`run <project>`) showed
    garbled there and as `run project` in the terminal. Literal text says `&lt;project&gt;`; Slack's own
    markup (links, mentions) comes from filters and code, never from a template's text."""
    source = (TEMPLATES / template).read_text()
    literal = re.sub(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", "", source, flags=re.S)
    assert not re.findall(r"<[^>]*>", literal)


def test_trusted_markup_still_works():
    rendered = checked(render("decisions", contexts()["decisions"][0]))
    assert "<@U999>" in rendered  # a known author is a real mention
    assert "<https://team.slack.com/archives/C1/p1|message>" in rendered
    assert "<https://mlflow.example/#/models/x/versions/1|m/" in rendered


@pytest.mark.parametrize("query", ["*", "ship*", "a *b* c", "_x_ ~y~", "`code` and *bold*", "x\n *y*", "&lt;*"])
def test_the_query_cannot_close_the_bold_of_its_header(query: str) -> None:
    """`decisions ship*` showed `*Decisions matching “ship*”*`: the query's star ended the bold. The
    query is shown as code after the bold words (a backtick in it as ˋ, as code has no escape)."""
    from bot.console import mrkdwn_text
    from bot.messages.mrkdwn import CODE_TICK, escape

    hit = view("x")
    hit["replacement"] = None
    message = render("decisions", {"hits": [hit], "query": query, "filters": ""})
    checked(message)
    header = message.blocks[0]["text"]["text"]
    shown = " ".join(query.split()).replace("`", CODE_TICK)
    assert header == f"*Decisions matching* `{escape(shown)}`"
    styled = mrkdwn_text(header)
    assert styled.plain == f"Decisions matching {shown}"
    assert [(styled.plain[s.start : s.end], str(s.style)) for s in styled.spans] == [
        ("Decisions matching", "bold"), (shown, "cyan")
    ]


def test_non_http_links_and_odd_authors_are_plain_text():
    hit = view("x", author="<!here>", permalink="javascript:alert(1)")
    hit["replacement"] = None
    rendered = checked(render("decisions", {"hits": [hit], "query": "x", "filters": ""}))
    assert "<!here>" not in rendered
    assert "&lt;!here&gt;" in rendered
    assert "javascript:" not in rendered


# --- limits -----------------------------------------------------------------------


def test_long_decision_is_truncated_with_the_note():
    message = render("decision_logged", {"d": view("word " * 2000), "old": None})
    checked(message)
    section = message.blocks[0]["text"]["text"]
    assert section.endswith(limits.TRUNCATED)
    assert message.text.endswith(limits.TRUNCATED)


def test_long_error_message_is_cut_to_the_section_limit():
    message = render("error", {"message": "é<" * 5000, "hint": "", "error_id": None})
    checked(message)
    section = message.blocks[0]["text"]["text"]
    assert len(section) <= 3000
    assert section.endswith(limits.TRUNCATED)
    assert not re.search(r"&[a-z]*…", section), "an entity must not be cut in half"


def test_many_hits_stay_within_fifty_blocks_and_say_so():
    hits = []
    for i in range(40):
        hit = view(f"decision {i}", id=i)
        hit["replacement"] = None
        hits.append(hit)
    message = render("decisions", {"hits": hits, "query": "decision", "filters": ""})
    checked(message)
    assert len(message.blocks) == 50
    note = message.blocks[-1]["elements"][0]["text"]
    assert note == f"… {1 + 2 * 40 - 49} more not shown (Slack shows at most 50 blocks)."


def test_many_tags_and_links_fit_one_context_element():
    d = view("x", tags=[f"t{i}" for i in range(300)], links=[link(ref=f"{i:032x}") for i in range(100)])
    message = render("decision_logged", {"d": d, "old": None})
    checked(message)


# --- help -------------------------------------------------------------------------


def test_help_lists_every_verb_and_nothing_else(lab_home):
    reply = dispatch._help(HelpArgs(None), Origin(user="U1"), None)  # type: ignore[arg-type]
    message = render(reply.template, reply.context)
    rendered = checked(message)
    listing = "\n".join(b["text"]["text"] for b in message.blocks if b["type"] == "section")
    assert all(len(b["text"]["text"]) <= 3000 for b in message.blocks if b["type"] == "section")
    shown = re.findall(r"^`/lab ([a-z]+)", listing, flags=re.MULTILINE)
    assert shown == [v.name for v in grammar.VERBS]
    for verb in grammar.VERBS:
        assert verb.summary in rendered


@pytest.mark.parametrize("verb", [v.name for v in grammar.VERBS])
def test_help_for_one_verb_shows_usage_and_examples(lab_home, verb):
    spec = grammar.lookup(verb)
    reply = dispatch._help(HelpArgs(verb), Origin(user="U1"), None)  # type: ignore[arg-type]
    rendered = checked(render(reply.template, reply.context))
    assert spec is not None
    for example in spec.examples:
        assert example.replace("<", "&lt;").replace(">", "&gt;") in rendered
    assert spec.summary in rendered


def test_rendered_cache_is_bounded_and_keyed(lab_home):
    from bot.messages import render as renderer
    from bot.origin import Reply

    first = renderer.render_reply(Reply("working", {"what": "a"}, cache_key="k-a"))
    again = renderer.render_reply(Reply("working", {"what": "ignored"}, cache_key="k-a"))
    assert again is first
    for i in range(renderer.RENDERED_CACHE_SIZE + 10):
        renderer.render_reply(Reply("working", {"what": str(i)}, cache_key=f"k-{i}"))
    assert len(renderer._rendered) == renderer.RENDERED_CACHE_SIZE
    assert "k-a" not in renderer._rendered


def test_a_template_cache_that_cannot_be_written_still_renders(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compiled templates are cached on disk; a full or read-only disk must not cost a reply."""
    import tempfile

    from bot.messages import render as render_module

    def full_disk(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    render_module.environment.cache_clear()
    monkeypatch.setattr(render_module, "_bytecode_cache", lambda: render_module._BestEffortBytecodeCache(directory=str(TEMPLATES)))
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", full_disk)
    try:
        message = render("error", {"message": "Nothing saved.", "hint": "", "error_id": None})
        assert "Nothing saved." in json.dumps(message.payload())
    finally:
        render_module.environment.cache_clear()


def test_times_are_shown_in_utc_whatever_zone_they_come_in() -> None:
    from zoneinfo import ZoneInfo

    from bot.messages.render import environment

    when = environment().filters["when"]
    assert when(datetime(2026, 11, 30, 8, 57, tzinfo=ZoneInfo("America/Los_Angeles"))) == "2026-11-30 16:57 UTC"
    assert when(datetime(2026, 11, 30, 16, 57)) == "2026-11-30 16:57 UTC"  # SQLite's: naive, UTC


def test_plural_says_fixes_not_fixs():
    from bot.messages.render import _plural

    assert [_plural(n, w) for n, w in ((1, "fix"), (5, "fix"), (2, "run"), (0, "new failure"), (3, "match"))] == [
        "1 fix", "5 fixes", "2 runs", "0 new failures", "3 matches"]


def test_a_scan_says_which_proposal_went_to_whom() -> None:
    """It said "1 proposal sent to P1 (sam)": P1 is the proposal, not who it went to."""
    context = {"dry_run": False, "experiments": [], "waiting": [], "configured": [], "scanned": True,
               "made": [{"label": "P1", "owner": "sam", "recipient": "U0SAM"}, {"label": "P2", "owner": "lee", "recipient": ""}]}
    assert "*2 proposals* sent: P1 to <@U0SAM>, P2 to `lee`." in json.dumps(render("cleanup_scan", context).blocks)


@pytest.mark.parametrize(("template", "key"), [("watch_notice", "error"), ("launch_card", "output"),
                                               ("launch_dry_run", "command")])  # fmt: skip
def test_text_inside_a_preformatted_block_cannot_close_it(template: str, key: str) -> None:
    """An error or output holding ``` ended the block early and the rest was formatted as mrkdwn."""
    base = next(c for c in contexts()[template] if c.get(key))
    message = render(template, {**base, key: "x = `a`\n```\n*not bold* `b`"})
    [section] = [s for s in checked(message).split('"text"') if "```" in s]
    assert section.count("```") == 2 and "ˋˋˋ" in section and "ˋaˋ" in section


@pytest.mark.parametrize("template", ["cleanup_proposal", "cleanup_scan", "home", "watch_added", "launch_card",
                                      "exp_indexing"])
def test_names_inside_bold_or_a_strikethrough_cannot_end_it(template: str) -> None:
    """`*wine*q_v2*` showed as bold "wine" then "q_v2*"; a superseded decision's own `~` ended its
    strikethrough. Names and text inside `*…*` show a star as ∗, inside `~…~` a tilde as ∼."""
    name = "wine*q~v2"
    shown = json.dumps([render(template, context).blocks for context in contexts(name)[template]], ensure_ascii=False)
    assert "wine\u2217q" in shown or "wine*q\u223cv2" in shown
    assert not re.search(r"[*~]wine\*q~v2|wine\*q~v2[*~]", shown)


def test_a_card_whose_runs_are_all_gone_for_good_offers_no_restore() -> None:
    """After the purge the card still said `restore <run>` brings a run back, of runs removed for good."""
    from tests.units.cleanup_contexts import cleanup_contexts

    base = cleanup_contexts("x")["cleanup_proposal"][1]
    gone = json.dumps(render("cleanup_proposal", {**base, "pending": 0, "counts": {"removed for good": 2}}).blocks)
    assert "restore" not in gone
    deleted = json.dumps(render("cleanup_proposal", {**base, "pending": 0, "counts": {"deleted": 2}}).blocks)
    assert "brings a run back for 7 days" in deleted
