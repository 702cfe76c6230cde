"""Every command shown in README.md and docs/ is run here, or, where it can't run on this machine,
checked to resolve to a real entry point (and the test says which and why):

- `labmate …` and `pytest conversations/ …` lines run for real, in a home with the demo loaded (one
  for the README, one for the guides in docs/).
- `.venv/bin/python bench/…` lines: benchmarks take minutes to hours, so the script must exist and
  accept every option the docs show (`--help` lists them); `-c` one-liners run.
- `/lab …` lines (in shell blocks, or in text blocks with an explanation column) are what a person
  types in Slack: each must parse with the real grammar (running them would start training runs;
  the same commands run through `labmate say` in their own tests).
- Commands written inline in prose (`labmate serve --socket-mode`, `bench/bench_ack.py --profile
  summary`) must name a real labmate command or benchmark script and options it has.
- A `labmate regress` or `pytest conversations/` line may exit 1 only as a failed gate after a full
  run (the demo's candidate fails its p0 conversations on purpose), not as a usage error.
- `docker run … labmate:latest <args>` lines: the args must resolve to a real `labmate` command.
- Slack and Docker lines (`export SLACK_…`, the `.env` heredoc, `docker compose up`) can't run
  here: no Slack workspace, no Docker engine. The compose file must render with the `.env` they
  write (tests/deploy/ runs each service's command); the exports must name settings labmate reads.
- The two setup lines at the top of the README create the venv this suite runs in;
  tests/deploy/test_image_install.py runs the same `pip install` in a throwaway venv.

A command that fits none of these fails the test, so a new one in the docs needs a check here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BIN = Path(sys.executable).parent
SETUP = re.compile(r"^python3 -m venv \.venv && \.venv/bin/pip install -e ")


def _commands() -> list[tuple[str, str]]:
    """(file, command) for each command line of each shell block (bash, sh, console, or an
    untyped block whose lines start like commands); `\\` continuations joined, `$ ` and trailing
    `  # comments` dropped, heredoc bodies kept with their command."""
    found = []
    for path in DOCS:
        for lang, body in re.findall(r"```(\w*)\n(.*?)```", path.read_text(), re.S):
            if lang not in ("bash", "sh", "console", ""):
                # a text block listing what people type in Slack: `/lab …` then an explanation column
                found += [(path.name, re.split(r"\s{2,}", line.strip())[0])
                          for line in body.splitlines() if line.strip().startswith("/lab ")]
                continue
            lines = body.replace("\\\n", " ").splitlines()
            heredoc: list[str] | None = None
            end = ""
            for raw in lines:
                line = raw.strip()
                if heredoc is not None:
                    heredoc.append(line)
                    if line == end:
                        found.append((path.name, "\n".join(heredoc)))
                        heredoc = None
                    continue
                line = re.sub(r"\s{2,}#\s.*$", "", line.removeprefix("$ ")).strip()
                if not line or line.startswith("#"):
                    continue
                if not lang and not line.startswith((".venv/bin/", "labmate ", "pytest ")):
                    continue  # a diagram or printed output, not a command
                marker = re.search(r"<<'?(\w+)'?", line)
                if marker:
                    heredoc, end = [line], marker.group(1)
                    continue
                found.append((path.name, line))
    return found


COMMANDS = _commands()
INLINE = re.compile(r"`((?:\.venv/bin/python |python )?bench/[\w/]+\.py[^`]*|labmate [^`]*)`")


def _inline() -> list[tuple[str, str]]:
    """(file, command) for each command written inline in prose: `labmate …` and `bench/…` spans."""
    return [(path.name, span) for path in DOCS for span in INLINE.findall(path.read_text())]


def _options(argv: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in argv if a.startswith("--")]


def _kind(command: str) -> str:
    if SETUP.match(command):
        return "setup"
    if command.startswith(("labmate ", "pytest conversations/")):
        return "run"
    if command.startswith(".venv/bin/python bench/"):
        return "bench"
    if command.startswith(".venv/bin/python -c "):
        return "python-c"
    if command.startswith(("export SLACK_", "cat > .env")) or command == "docker compose up --build":
        return "slack-or-docker"
    if command.startswith("/lab "):
        return "slash"
    if re.fullmatch(r"""\.venv/bin/pip install -e ["']\.\[\w+\]["']""", command):
        return "pip-extra"
    if command.startswith("docker run ") and " labmate:latest " in command:
        return "docker-run"
    return "unknown"


def test_every_documented_command_has_a_check():
    unknown = [c for c in COMMANDS if _kind(c[1]) == "unknown"]
    assert not unknown, f"commands in the docs that no test runs or checks: {unknown}"
    assert len(COMMANDS) > 20  # the extraction found the docs' commands


def test_the_setup_lines_are_the_readmes_first_two():
    setup = [c for _, c in COMMANDS if _kind(c) == "setup"]
    assert len(setup) == 2 and "labmate demo" in setup[0] and "pytest" in setup[1]


def test_benchmark_commands_name_real_scripts_and_options():
    for _, command in COMMANDS:
        if _kind(command) != "bench":
            continue
        argv = shlex.split(command.replace('"$PWD', f'"{ROOT}'))
        script = ROOT / argv[1]
        assert script.is_file(), command
        shown = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        for option in (a.split("=", 1)[0] for a in argv[2:] if a.startswith("--")):
            assert option in shown.stdout, f"{command}: {script.name} has no {option}"


def test_python_one_liners_run():
    for _, command in COMMANDS:
        if _kind(command) == "python-c":
            argv = shlex.split(command)
            result = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, result.stderr


def test_slack_and_docker_commands_resolve():
    """Not run: they need a Slack workspace or a Docker engine. What they rely on is checked."""
    import yaml

    from labmate.settings import settings_env_names
    from tests.deploy.compose import COMPOSE_FILE, interpolate, rendered

    for _, command in COMMANDS:
        if _kind(command) != "slack-or-docker":
            continue
        if command.startswith("export "):
            names = re.findall(r"(\w+)=", command)
            assert names and set(names) <= settings_env_names(), command
        elif command.startswith("cat > .env"):
            env = dict(line.split("=", 1) for line in command.splitlines()[1:-1])
            required = set(re.findall(r"\$\{(\w+):\?", COMPOSE_FILE.read_text()))
            assert set(env) == required, "the .env the README writes holds exactly what compose requires"
            stack = interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), env)  # nothing else set
            assert stack["services"]["bot"]["environment"]["SLACK_BOT_TOKEN"] == env["SLACK_BOT_TOKEN"]
            assert stack["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == env["POSTGRES_PASSWORD"]
        else:
            assert COMPOSE_FILE.is_file()
            assert all("build" in rendered()["services"][s] for s in ("bot", "worker", "beat", "mlflow"))


def test_slash_commands_parse():
    from bot import grammar
    from labmate.errors import UsageError

    checked = 0
    for source, command in COMMANDS:
        if _kind(command) == "slash":
            try:
                grammar.parse(grammar.strip_prefix(command))
            except UsageError as exc:
                pytest.fail(f"{source}: {command!r} does not parse: {exc}")
            checked += 1
    assert checked >= 5


def test_pip_extras_exist():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for _, command in COMMANDS:
        if _kind(command) == "pip-extra":
            assert re.search(r"\[(\w+)\]", command).group(1) in extras, command


def test_docker_run_lines_name_real_commands():
    from tests.deploy.test_deploy_files import _resolve

    for _, command in COMMANDS:
        if _kind(command) == "docker-run":
            args = shlex.split(command.split(" labmate:latest ", 1)[1])
            assert _resolve(args)[0].name == args[0], command


@pytest.mark.slow
@pytest.mark.parametrize("readme", [True, False], ids=["README", "docs"])
def test_labmate_and_pytest_commands_run(tmp_path, readme):
    """In the order the docs show them, in one home with the demo loaded, from the repository root
    (the docs' relative paths are the checkout's). Outputs go to tmp_path. The README's commands and
    the guides' run in two homes, so two pytest processes share what took one a minute."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABMATE_", "MLFLOW_", "SLACK_"))}
    env.update(LABMATE_HOME=str(tmp_path / "home"), LABMATE_CONFIG=str(tmp_path / "labmate.toml"))
    (tmp_path / "labmate.toml").touch()
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    subprocess.run([str(BIN / "labmate"), "demo"], env=env, check=True, capture_output=True, timeout=600)
    outputs = {"report.html", "report.json", "junit.xml"}
    ran = 0
    for source, command in COMMANDS:
        if _kind(command) != "run" or (source == "README.md") != readme:
            continue
        argv = shlex.split(command)
        argv = [str(tmp_path / a) if a in outputs else a for a in argv]  # reports land in tmp_path
        if argv[0] == "pytest":
            argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *argv[1:]]
        if "conversations/*.yaml" in argv:
            index = argv.index("conversations/*.yaml")
            argv[index : index + 1] = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "conversations").glob("*.yaml"))
        verdict = tmp_path / f"verdict-{ran}.json"
        if argv[:2] == ["labmate", "regress"] and "--json" not in argv:
            argv += ["--json", str(verdict)]  # to tell a failed gate from a command that didn't run
        result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        shown = f"{source}: {command}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        if result.returncode == 1 and argv[:2] == ["labmate", "regress"]:
            # the gate failed, as the demo's candidate does on purpose (its p0 failures), after a full run
            report = json.loads(Path(argv[argv.index("--json") + 1]).read_text())
            assert report["verdict"]["passed"] is False and report["conversations"], shown
        elif result.returncode == 1 and "pytest" in argv:
            # some conversations failed (the candidate's p0s), but the suite ran: the others passed
            summary = result.stdout.strip().splitlines()[-1]
            assert re.search(r"\d+ passed", summary) and "error" not in summary, shown
        else:
            assert result.returncode == 0, shown
        assert "Traceback" not in result.stderr, shown
        ran += 1
    assert ran >= (8 if readme else 10)
    assert (tmp_path / "report.html").is_file()


def _parses(source: str, span: str, command, args: list[str]) -> None:
    """The CLI itself parses what the span gives: `labmate health bogus` names a real command but no
    service. A span that leaves out a value the reader supplies (`labmate say`) is not wrong."""
    if hasattr(command, "get_command"):  # `labmate <tool> --help`: only the group is named
        return
    try:
        command.make_context("labmate", list(args))
    except Exception as exc:  # typer ships its own click: its exceptions are told apart by name
        if type(exc).__name__ not in ("MissingParameter", "Exit"):
            raise AssertionError(f"{source}: `{span}`: {exc}") from None


def test_commands_written_inline_name_real_commands_and_options():
    """Prose mentions commands too (`labmate serve --socket-mode`, `bench/bench_ack.py --profile summary`):
    each must name a real labmate command or benchmark script, and options it has. Placeholders
    (`<service>`, `…`) end what is checked."""
    from tests.deploy.test_deploy_files import _cli

    checked = 0
    for source, span in _inline():
        words = re.split(r"\s+", span.strip())
        words = words[: next((i for i, w in enumerate(words) if re.search(r"[<…\"']", w)), len(words))]
        if words[0] == "labmate":
            command = _cli()
            args = words[1:]
            while hasattr(command, "get_command") and args and not args[0].startswith("-"):
                command = command.get_command(command.context_class(command), args[0])
                assert command is not None, f"{source}: `{span}` names no labmate command"
                args = args[1:]
            known = {opt for param in command.params for opt in getattr(param, "opts", []) + getattr(param, "secondary_opts", [])}
            unknown = [o for o in _options(args) if o not in known]
            _parses(source, span, command, args)
        else:
            script = ROOT / next(w for w in words if w.startswith("bench/"))
            assert script.is_file(), f"{source}: `{span}`"
            shown = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60).stdout
            unknown = [o for o in _options(words) if o not in shown]
        assert not unknown, f"{source}: `{span}`: no such option {unknown}"
        checked += 1
    assert checked > 40
