"""Find the application object a user named: `module:attr`, `file.py:attr`, `module:factory()`.

Runs only inside a worker (or a throwaway check process): the master never imports
user code, so a broken release can never take the master down.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any

from unbroken.errors import UsageError


class AppNotFound(UsageError, ValueError):
    """The app spec is malformed or names something that does not exist."""


def load_app(spec: str) -> Any:
    """Import and return the app; import errors from user code propagate unchanged."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise AppNotFound(f"app {spec!r}: expected module:attr or path/to/file.py:attr")
    call = attr.endswith("()")
    name = attr[:-2] if call else attr
    module = _import(target)
    try:
        app = getattr(module, name)
    except AttributeError:
        raise AppNotFound(f"app {spec!r}: module {target!r} has no attribute {name!r}") from None
    if call:
        app = app()
    if not callable(app):
        raise AppNotFound(f"app {spec!r}: {name!r} is not callable")
    return app


def _import(target: str) -> Any:
    if target.endswith(".py"):
        path = os.path.abspath(target)
        if not os.path.isfile(path):
            raise AppNotFound(f"app file {target!r} does not exist")
        directory = os.path.dirname(path)
        if directory not in sys.path:
            sys.path.insert(0, directory)
        module_name = os.path.splitext(os.path.basename(path))[0]
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise AppNotFound(f"app file {target!r} cannot be imported")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        module_spec.loader.exec_module(module)
        return module
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as error:
        if error.name and target.split(".")[0] == error.name.split(".")[0]:
            raise AppNotFound(f"app module {target!r} not found (in {os.getcwd()})") from None
        raise
