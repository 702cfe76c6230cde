"""Which suites and targets may be run from chat: suite files inside the configured folders only, and
MLflow model targets only unless labmate.toml allows more for the suite. Shared by the bot (which
refuses before anything is stored) and the workers (which re-check the file they are given)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from labmate.errors import NotFoundError, UsageError
from labmate.quoting import MAX_MODEL_VERSION
from labmate.settings import RegressConfig, RegressSuiteRules

SUFFIXES = (".yaml", ".yml")
SUITE_NAME = re.compile(r"^suite:\s*['\"]?(?P<name>[^'\"#\s]+)", re.MULTILINE)
MODEL_SCHEMES = ("models:/", "runs:/")
MODEL_EXAMPLES = "`models:/sales-agent@candidate`, `models:/sales-agent/3` or `runs:/<run id>/model`"
MODEL_URI = re.compile(r"models:/[^/@\s]+(?:@[^/@\s]+|/[^/@\s]+)|runs:/[^/\s]+/\S+")
"""The shapes MLflow loads: a registered model by alias, version or stage; a run's artifact path."""


@dataclass(frozen=True)
class Found:
    name: str
    path: Path
    folder: Path

    @property
    def shown(self) -> str:
        return str(PurePosixPath(self.folder.name) / self.path.relative_to(self.folder).as_posix())


def folders(config: RegressConfig) -> list[Path]:
    """The suites folders, resolved."""
    return _folders(config)


def _folders(config: RegressConfig) -> list[Path]:
    return [Path(folder).expanduser().resolve() for folder in config.folders]


def _shown_folders(config: RegressConfig) -> str:
    return ", ".join(f"`{folder.rstrip('/')}/`" for folder in config.folders)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _name_of(path: Path) -> str:
    try:
        with path.open("rb") as file:
            head = file.read(4000).decode("utf-8", errors="replace")
    except OSError:
        return path.stem
    match = SUITE_NAME.search(head)
    return match.group("name") if match else path.stem


def available(config: RegressConfig) -> list[Found]:
    """Every suite file in the folders (symlinks that lead outside a folder are left out)."""
    found: list[Found] = []
    for folder in _folders(config):
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.rglob("*") if p.suffix in SUFFIXES and p.is_file()):
            real = path.resolve()
            if _inside(real, folder):
                found.append(Found(_name_of(path), path, folder))
    return found


def _inside_path(found: Found) -> str:
    """The suite's path inside its folder, as `regress` takes it."""
    return found.path.relative_to(found.folder).as_posix()


def _listing(config: RegressConfig) -> str:
    suites = available(config)
    if not suites:
        return (f"There are no suites in {_shown_folders(config)} (relative to the directory labmate runs in; "
                "labmate.toml `[regress] folders` names others).")
    return "Suites you can run: " + ", ".join(f"`{s.name}` ({s.shown})" for s in suites) + "."


def _file_in(folder: Path, pure: PurePosixPath, word: str, where: str, config: RegressConfig) -> Found | None:
    """The suite file `pure` names inside `folder` (with or without its suffix), if there is one."""
    for candidate in (folder / pure, *(folder / pure.with_name(pure.name + s) for s in SUFFIXES)):
        if candidate.suffix not in SUFFIXES or not (candidate.is_file() or candidate.is_symlink()):
            continue
        if not _inside(candidate.resolve(), folder):
            raise UsageError(
                f"`{word[:80]}` is a link that leads outside the suites folder ({where}); only suites in it can "
                "be run.", hint=_listing(config))
        return Found(_name_of(candidate), candidate, folder)
    return None


def _file_in_named(folder: Path, pure: PurePosixPath, word: str, where: str, config: RegressConfig) -> Found | None:
    """`conversations/sales_agent.yaml`: a path that starts with the folder's own name, as the listing shows
    it and as it is typed from the directory that holds the folder."""
    if len(pure.parts) < 2 or pure.parts[0] != folder.name:
        return None
    return _file_in(folder, PurePosixPath(*pure.parts[1:]), word, where, config)


def find(word: str, config: RegressConfig) -> Found:
    """The suite named `word` (its `suite:` name, its file name, or its path inside a folder)."""
    where = _shown_folders(config)
    pure = PurePosixPath(word.replace("\\", "/"))
    if pure.is_absolute() or word.startswith("~") or re.match(r"^[A-Za-z]:", word):
        raise UsageError(f"`{word[:80]}` is an absolute path; from chat only suites in {where} can be run.",
                         hint=_listing(config))
    if ".." in pure.parts:
        raise UsageError(f"`{word[:80]}` leads outside the suites folder ({where}); only suites in it can be run.",
                         hint=_listing(config))
    if not pure.name:
        shown = f"`{word[:80]}`" if word.strip() else "An empty name"
        raise UsageError(f"{shown} is not a suite: name one by its `suite:` name, its file name or its path "
                         f"inside {where}.", hint=_listing(config))
    by_path = [found for folder in _folders(config) if (found := _file_in(folder, pure, word, where, config)
                                                        or _file_in_named(folder, pure, word, where, config))]
    if len(by_path) > 1:
        files = ", ".join(f"`{f.shown}` (suite `{f.name}`)" for f in by_path)
        raise UsageError(f"`{word[:80]}` is a file in {len(by_path)} suite folders: {files}. Name the suite by its "
                         "`suite:` name instead (rename one if they share it).")
    if by_path:
        return by_path[0]
    everything = available(config)
    matches = [s for s in everything if s.name == word] or [s for s in everything if s.path.stem == word]
    if len(matches) > 1:
        files = ", ".join(f"`{s.shown}`" for s in matches)
        raise UsageError(f"`{word[:80]}` is ambiguous: {len(matches)} suites are named so ({files}). Name the file "
                         f"instead, e.g. `regress {_inside_path(matches[0])}`.")
    if matches:
        return matches[0]
    raise NotFoundError(f"There is no suite `{word[:80]}` in {where}.", hint=_listing(config))


def recheck(path: str, config: RegressConfig) -> Path:
    """A worker's check of a stored suite file: still inside a folder (a link may have changed since)."""
    real = Path(path).resolve()
    if not any(_inside(real, folder) for folder in _folders(config)):
        raise UsageError(f"The suite file `{path}` is no longer inside the suites folder ({_shown_folders(config)}).")
    return real


def kind(uri: str) -> str:
    if uri.startswith(("http://", "https://")):
        return "http"
    if uri.startswith(MODEL_SCHEMES):
        return "mlflow"
    return "other"


def check_target(role: str, uri: str, suite: str, rules: RegressSuiteRules) -> None:
    """A target named in chat: an MLflow model, or what labmate.toml allows for this suite."""
    found = kind(uri)
    if found == "mlflow":
        version = uri.rsplit("/", 1)[-1] if uri.startswith("models:/") and "@" not in uri else ""
        if version.isdigit() and int(version) > MAX_MODEL_VERSION:
            raise UsageError(f"`{uri[:120]}` names version {version[:40]}, and no model has that many: MLflow counts "
                             f"versions from 1. Name one that exists, or an alias: {MODEL_EXAMPLES}.")
        if MODEL_URI.fullmatch(uri):
            return
        raise UsageError(f"`{uri[:120]}` is not a model MLflow can load: the {role} is written like {MODEL_EXAMPLES}.")
    if found == "http":
        if rules.allow_http:
            return
        raise UsageError(
            f"`{uri[:120]}` is an HTTP endpoint; from chat the {role} must be an MLflow model ({MODEL_EXAMPLES}). "
            f"labmate.toml can allow HTTP targets for this suite: `[regress.suites.{suite}]` `allow_http = true`."
        )
    if rules.allow_callables and re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$", uri):
        return
    allowed = " or a callable (`package.module:function`)" if rules.allow_callables else ""
    raise UsageError(f"`{uri[:120]}` is not a target I can run from chat: the {role} must be an MLflow model "
                     f"({MODEL_EXAMPLES}){allowed}.")
