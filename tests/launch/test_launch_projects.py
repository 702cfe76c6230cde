"""Projects, parameters and the command line, without a worker: what the bot checks before storing a
launch, and the exact argv the worker runs (never through a shell)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from msgspec.structs import replace

from labmate import projects
from labmate.errors import UsageError
from labmate.settings import ParameterDeclaration, ProjectConfig, Settings
from tests.launch.conftest import PROJECT

SALES = Path(__file__).resolve().parents[2] / "examples" / "sales_agent"


def entry(name: str = "train", directory: Path = PROJECT) -> projects.EntryPoint:
    return projects.read_entry_points(directory)[name]


@pytest.mark.parametrize("directory", [PROJECT, SALES])
def test_entry_points_are_read_as_mlflow_reads_them(directory: Path) -> None:
    from mlflow.projects._project_spec import load_project

    theirs = load_project(str(directory))
    ours = projects.read_entry_points(directory)
    assert set(ours) == set(theirs._entry_points)
    for name, point in ours.items():
        real = theirs.get_entry_point(name)
        assert point.command == real.command
        assert {k: (p.type, p.default) for k, p in point.parameters.items()} == {
            k: (p.type, None if p.default is None else str(p.default)) for k, p in real.parameters.items()
        }


def test_defaults_fill_in_and_given_values_are_kept_as_typed() -> None:
    resolved = projects.resolve("quick", entry(), [("epochs", "7"), ("lr", "1e-3"), ("note", "two words")])
    assert resolved.params == {
        "epochs": "7", "lr": "1e-3", "sleep": "0.0", "spin": "0.0", "note": "two words", "fail": "0",
        "data": "data/rows.txt",
    }
    assert resolved.given == ("epochs", "lr", "note")


LISTING = (
    "Parameters of `quick:train`: epochs (int, default 3), lr (float, default 0.1), sleep (float, default 0.0), "
    "spin (float, default 0.0), note (string, default none), fail (int, default 0), data (path, default data/rows.txt)."
)


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ([("lr", "1; id")], "`1; id` is not a valid float for `lr`: write a plain number, e.g. `lr=0.001`."),
        ([("lr", "$(id)")], "`$(id)` is not a valid float for `lr`: write a plain number, e.g. `lr=0.001`."),
        ([("lr", "0.1\nid")], "`0.1\\nid` is not a valid float for `lr`: it contains a line break (U+000A)."),
        ([("lr", "nan")], "`nan` is not a valid float for `lr`"),
        ([("epochs", "1.5")], "`1.5` is not a valid int for `epochs`: write a whole number, e.g. `epochs=5`."),
        ([("epochs", "")], "`epochs=` has no value: say the int after `=`, e.g. `epochs=5`, or leave `epochs` out for "
                           "its default (3)."),
        ([("x;id", "3")], "`x;id` is not a parameter of `quick:train`."),
        ([("epoch", "3")], "`epoch` is not a parameter of `quick:train`. Did you mean `epochs`?"),
        ([("lr", "0.1"), ("lr", "0.2")], "`lr` is given twice; give each parameter once."),
        ([(None, "id")], "I can't read `id`: parameters are written `name=value`"),
        ([("data", "../secrets")], "`../secrets` is not a valid path for `data`: a path is relative to the project"),
        ([("data", "/etc/passwd")], "`/etc/passwd` is not a valid path for `data`"),
        ([("note", "--help")], "a value may not start with `-` (the training script would read it as an option)"),
        ([("note", "x" * 501)], "The value of `note` is 501 characters; the most is 500."),
    ],
)
def test_each_bad_value_is_refused_with_the_parameter_list(pairs, message) -> None:
    with pytest.raises(UsageError) as caught:
        projects.resolve("quick", entry(), pairs)
    assert message in caught.value.message
    assert caught.value.hint == LISTING


INVISIBLE = "A value can't contain line breaks, control or invisible formatting characters"


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ([("epochs", "٣")], "`٣` is not a valid int for `epochs`: `٣` (U+0663 ARABIC-INDIC DIGIT THREE) is not one of "
         "the digits 0-9; e.g. `epochs=5`."),
        ([("epochs", "３")], "`３` is not a valid int for `epochs`: `３` (U+FF13 FULLWIDTH DIGIT THREE) is not one of the "
         "digits 0-9; e.g. `epochs=5`."),
        ([("lr", "0.٥")], "`0.٥` is not a valid float for `lr`: `٥` (U+0665 ARABIC-INDIC DIGIT FIVE) is not one of the "
         "digits 0-9; e.g. `lr=0.001`."),
        ([("lr", "1e999")], "`1e999` is not a valid float for `lr`: it is beyond what a float can hold (about ±1.8e308); "
         "write a finite number, e.g. `lr=0.001`."),
        ([("lr", "-1e999")], "`-1e999` is not a valid float for `lr`: it is beyond what a float can hold (about "
         "±1.8e308); write a finite number, e.g. `lr=0.001`."),
        ([("epochs", "99999999999999999999999")], "`99999999999999999999999` is too large for `epochs`: an int must fit "
         "in 64 bits, so it is at most 9223372036854775807; e.g. `epochs=5`."),
        ([("epochs", "9223372036854775808")], "`9223372036854775808` is too large for `epochs`: an int must fit in 64 "
         "bits, so it is at most 9223372036854775807; e.g. `epochs=5`."),
        ([("fail", "-9223372036854775809")], "`-9223372036854775809` is too small for `fail`: an int must fit in 64 "
         "bits, so it is at least -9223372036854775808; e.g. `fail=5`."),
        ([("note", "a\x85b")], f"`a\\u0085b` is not a valid string for `note`: it contains a line break (U+0085). "
         f"{INVISIBLE}; e.g. `note=baseline`."),
        ([("note", "a\u2028b")], f"`a\\u2028b` is not a valid string for `note`: it contains a line break (U+2028 LINE "
         f"SEPARATOR). {INVISIBLE}; e.g. `note=baseline`."),
        ([("note", "a\u2029b")], f"`a\\u2029b` is not a valid string for `note`: it contains a line break (U+2029 "
         f"PARAGRAPH SEPARATOR). {INVISIBLE}; e.g. `note=baseline`."),
        ([("note", "gpj.\u202eexe")], f"`gpj.\\u202eexe` is not a valid string for `note`: it contains an invisible "
         f"formatting character (U+202E RIGHT-TO-LEFT OVERRIDE). {INVISIBLE}; e.g. `note=baseline`."),
        ([("note", "a\x1bb")], f"`a\\u001bb` is not a valid string for `note`: it contains a control character "
         f"(U+001B). {INVISIBLE}; e.g. `note=baseline`."),
    ],
)
def test_numbers_are_ascii_and_in_range_and_no_value_hides_characters(pairs, message) -> None:
    with pytest.raises(UsageError) as caught:
        projects.resolve("quick", entry(), pairs)
    assert caught.value.message == message
    assert caught.value.hint == LISTING


def test_the_largest_values_that_fit_are_accepted_and_a_huge_total_shows_no_bar() -> None:
    given = [("epochs", "9223372036854775807"), ("fail", "-9223372036854775808"), ("lr", "1e308")]
    assert projects.resolve("quick", entry(), given).params["epochs"] == "9223372036854775807"
    demo = Settings().projects["sales-agent"]
    # the launches table keeps the total in an SQL INTEGER (32 bits): a larger one is not stored, no bar is shown
    assert projects.total_steps(demo, {"epochs": "2147483647"}) == 2147483647
    assert projects.total_steps(demo, {"epochs": "2147483648"}) is None
    assert projects.total_steps(demo, {"epochs": "٣"}) is None


def test_a_missing_required_parameter_is_named() -> None:
    with pytest.raises(UsageError, match=r"`quick:needs_value` needs a value for `rows` \(path\)"):
        projects.resolve("quick", entry("needs_value"), [])


def test_values_become_exactly_one_argument_each_and_no_shell_reads_them(tmp_path: Path) -> None:
    hostile = "$(touch pwned); `touch pwned2` && touch pwned3 | cat > x 'q' \"dq\" *"
    params = projects.resolve("quick", entry(), [("note", hostile), ("lr", "-0.5")]).params
    argv = projects.command_argv(entry(), params, PROJECT)
    assert argv[:2] == ["python", "quick.py"]
    assert argv[argv.index("--note") + 1] == hostile
    assert argv[argv.index("--lr") + 1] == "-0.5"
    assert argv[argv.index("--data") + 1] == str(PROJECT / "data" / "rows.txt")
    echo = [sys.executable, "-c", "import sys; print(sys.argv[1])", argv[argv.index("--note") + 1]]
    work = tmp_path / "work"
    work.mkdir()
    out = subprocess.run(echo, cwd=work, capture_output=True, text=True, check=True).stdout
    assert out.strip() == hostile
    assert list(work.iterdir()) == []  # nothing touched: no shell read the value


def test_a_command_that_needs_a_shell_is_refused_not_run_through_one() -> None:
    with pytest.raises(projects.ProjectError, match=r"needs a shell \(its command uses `&`\)"):
        projects.command_argv(entry("needs_shell"), {"epochs": "1"}, PROJECT)


def test_a_path_must_exist_in_the_project() -> None:
    with pytest.raises(UsageError, match="there is no such file in the project"):
        projects.command_argv(entry(), {**projects.resolve("quick", entry(), []).params, "data": "data/nope.txt"}, PROJECT)


def test_unknown_project_and_entry_point_say_what_exists() -> None:
    settings = Settings(projects={"quick": ProjectConfig(uri=str(PROJECT), entry_points=["train"], experiment="q")})
    with pytest.raises(UsageError) as caught:
        projects.lookup(settings, "qiuck")
    assert caught.value.message == "There is no project `qiuck` that I may launch. Launchable projects: `quick`."
    with pytest.raises(UsageError) as caught:
        projects.entry_point_name("quick", settings.projects["quick"], "needs_shell")
    assert caught.value.message == "`quick` has no launchable entry point `needs_shell`. Try `quick:train`."


def test_a_git_project_is_checked_against_what_labmate_toml_declares() -> None:
    remote = ProjectConfig(
        uri="https://example.com/ml/quick.git", version="v1", entry_points=["train"], experiment="q",
        parameters={"train": {"lr": ParameterDeclaration("float", 0.1), "rows": ParameterDeclaration("path")}},
    )
    point = projects.entry_point("quick", remote, "train")
    assert point.command is None and point.listing() == "lr (float, default 0.1), rows (path)"
    with pytest.raises(UsageError, match="`abc` is not a valid float for `lr`"):
        projects.resolve("quick", point, [("lr", "abc"), ("rows", "x.csv")])
    undeclared = replace(remote, parameters={})
    with pytest.raises(projects.ProjectError, match=r"doesn't declare the parameters of its entry point `train`"):
        projects.entry_point("quick", undeclared, "train")


def test_a_version_is_only_for_git_projects() -> None:
    with pytest.raises(ValueError, match="`version` is for a git URI"):
        ProjectConfig(uri=str(PROJECT), version="main", experiment="q")


def test_the_demo_project_is_configured_by_default() -> None:
    demo = Settings().projects["sales-agent"]
    assert (demo.entry_points, demo.experiment) == (["train"], "sales-agent")
    assert (demo.local_path() / "MLproject").is_file()
    assert projects.total_steps(demo, {"epochs": "8"}) == 8
