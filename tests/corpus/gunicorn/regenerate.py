"""Rebuild this directory from a gunicorn checkout: `python regenerate.py GUNICORN_DIR`.

gunicorn's expectations are Python files that import gunicorn (its Config, its
exception classes, its `uri()` helper), so they are run once here, against stubs, and
written out as plain data: the tests then need neither gunicorn nor its code.
"""

from __future__ import annotations

import pprint
import shutil
import sys
import types
from pathlib import Path

HERE = Path(__file__).parent


class _Config:
    def __init__(self) -> None:
        self.options: dict[str, object] = {}

    def set(self, name: str, value: object) -> None:
        self.options[name] = value


class _Errors(types.ModuleType):
    """`from gunicorn.http.errors import X` gives a class whose name is all we keep."""

    def __getattr__(self, name: str) -> type:
        return type(name, (Exception,), {})


def _load(path: Path) -> tuple[object, dict[str, object]]:
    config = types.ModuleType("gunicorn.config")
    config.Config = _Config  # type: ignore[attr-defined]
    sys.modules.update({
        "gunicorn": types.ModuleType("gunicorn"),
        "gunicorn.config": config,
        "gunicorn.http": types.ModuleType("gunicorn.http"),
        "gunicorn.http.errors": _Errors("gunicorn.http.errors"),
    })  # fmt: skip
    namespace: dict[str, object] = {"uri": lambda raw: raw, "cfg": _Config()}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    cfg = namespace["cfg"]
    assert isinstance(cfg, _Config)
    return namespace["request"], cfg.options


def _plain(expected: object) -> object:
    if isinstance(expected, type):
        return expected.__name__
    requests = expected if isinstance(expected, list) else [expected]
    plain = []
    for request in requests:
        assert isinstance(request, dict)
        major, minor = request["version"]
        plain.append({
            "method": request["method"],
            "target": request["uri"],
            "version": f"{major}.{minor}",
            "headers": [tuple(pair) for pair in request["headers"]],
            "body": request["body"],
            "trailers": [tuple(pair) for pair in request.get("trailers", [])],
        })  # fmt: skip
    return plain


def main(gunicorn: Path) -> None:
    shutil.copy(gunicorn / "LICENSE", HERE / "LICENSE")
    expectations: dict[str, dict[str, object]] = {"valid": {}, "invalid": {}}
    options: dict[str, dict[str, object]] = {}
    for kind in ("valid", "invalid"):
        (HERE / kind).mkdir(exist_ok=True)
        for http in sorted((gunicorn / "tests" / "requests" / kind).glob("*.http")):
            shutil.copy(http, HERE / kind / http.name)
            expected, set_options = _load(http.with_suffix(".py"))
            name = f"{kind}/{http.stem}"
            expectations[kind][http.stem] = _plain(expected)
            if set_options:
                options[name] = set_options
    text = (
        '"""gunicorn\'s expectations for each .http file, as plain data (regenerate.py).\n\n'
        "VALID: name -> the requests it holds (headers upper-cased as gunicorn reports them);\n"
        "INVALID: name -> the gunicorn exception; OPTIONS: name -> the gunicorn settings the\n"
        'case needs (such cases are not black-box tests).\n"""\n\n'
        "# ruff: noqa: E501\n\n"
        f"VALID = {pprint.pformat(expectations['valid'], width=100)}\n\n"
        f"INVALID = {pprint.pformat(expectations['invalid'], width=100)}\n\n"
        f"OPTIONS = {pprint.pformat(options, width=100)}\n"
    )
    (HERE / "expectations.py").write_text(text)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
