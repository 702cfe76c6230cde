"""labmate's own Python for the processes it starts, as uWSGI's embedded interpreter reports itself."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from labmate import interpreter


def test_inside_uwsgi_the_virtualenvs_python_is_used_not_the_base_one(monkeypatch: pytest.MonkeyPatch) -> None:
    if sys.prefix == sys.base_prefix:
        pytest.skip("the tests run outside a virtualenv")
    own = interpreter.python()
    assert Path(own).parent == Path(sys.prefix) / "bin"
    monkeypatch.setattr(sys, "executable", str(Path(sys.base_prefix) / "bin" / "python3"))  # as uWSGI sets it
    assert Path(interpreter.python()).parent == Path(sys.prefix) / "bin"
    monkeypatch.setattr(sys, "prefix", sys.base_prefix)  # no virtualenv: the interpreter itself
    assert interpreter.python() == sys.executable
