from __future__ import annotations

import sys
from pathlib import Path

import pytest

from unbroken.worker.loader import AppNotFound, load_app

APP = '''
def app(environ, start_response):
    return []

def create_app():
    return app

not_callable = 3
'''


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    package = tmp_path / "proj"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "wsgi.py").write_text(APP)
    (tmp_path / "standalone.py").write_text(APP)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in ("proj", "proj.wsgi", "standalone"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return tmp_path


def test_module_attr(project: Path) -> None:
    assert load_app("proj.wsgi:app").__name__ == "app"


def test_factory(project: Path) -> None:
    assert load_app("proj.wsgi:create_app()").__name__ == "app"


def test_file_path(project: Path) -> None:
    assert load_app("standalone.py:app").__name__ == "app"


@pytest.mark.parametrize("spec, message", [
    ("proj.wsgi", "expected module:attr"),
    ("nothere:app", "app module 'nothere' not found"),
    ("proj.wsgi:missing", "has no attribute 'missing'"),
    ("proj.wsgi:not_callable", "is not callable"),
    ("missing.py:app", "does not exist"),
])
def test_mistakes_are_named(project: Path, spec: str, message: str) -> None:
    with pytest.raises(AppNotFound, match=message):
        load_app(spec)
