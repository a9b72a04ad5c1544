"""The import rules of docs/architecture.md, read from the code: every `unbroken` import
(outside `if TYPE_CHECKING:`) must be one the table allows."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "unbroken"
DOC = ROOT / "docs" / "architecture.md"
# What the master may take from worker/: its spec and the boot nice's rules, nothing
# that imports an engine.
MASTER_MAY_USE_OF_WORKER = {"unbroken.worker.spec", "unbroken.worker.priority"}


def _rules() -> dict[str, set[str]]:
    rules = {}
    for line in DOC.read_text().splitlines():
        match = re.fullmatch(r"\| (\w+) \|\s*([\w, ]*?)\s*\|", line)
        if match and match.group(1) != "part":
            rules[match.group(1)] = {p.strip() for p in match.group(2).split(",") if p.strip()}
    return rules


def _part(module: str) -> str:
    pieces = module.split(".")
    return "package" if len(pieces) == 1 else pieces[1]


def _runtime_imports(tree: ast.Module) -> list[str]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(child) for child in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return [name for name in found if name == "unbroken" or name.startswith("unbroken.")]


def test_every_part_of_the_package_is_in_the_table() -> None:
    parts = {path.stem if path.is_file() else path.name for path in PACKAGE.iterdir()
             if not path.name.startswith("_") and (path.suffix == ".py" or path.is_dir())
             and path.name not in ("py.typed",)}
    parts.discard("__pycache__")
    assert parts - {"__main__"} <= set(_rules()), parts - set(_rules())


def test_no_part_imports_what_the_table_does_not_allow() -> None:
    rules = _rules()
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        part = relative.parts[0].removesuffix(".py") if len(relative.parts) > 1 or \
            relative.stem not in ("__init__", "__main__") else "package"
        if part in ("__main__", "package"):
            continue
        for module in _runtime_imports(ast.parse(path.read_text())):
            target = _part(module)
            if target == part:
                continue
            if target not in rules.get(part, set()):
                wrong.append(f"{relative}: {module}")
            elif part == "master" and target == "worker" and module not in \
                    MASTER_MAY_USE_OF_WORKER:
                wrong.append(f"{relative}: {module} (the master keeps to worker/spec.py "
                             "and priority.py)")
    assert wrong == [], "\n".join(wrong)


# Modules that decide: no I/O, no clock, no processes (docs/architecture.md).
PURE = ["rollout/backoff.py", "rollout/crashloop.py", "rollout/lifecycle.py",
        "rollout/planner.py", "master/policy.py", "master/events.py", "master/requests.py"]
IMPURE = {"os", "socket", "selectors", "subprocess", "time", "threading", "asyncio", "shutil",
          "tempfile", "io", "random"}


def test_the_modules_that_decide_import_no_io_and_no_clock() -> None:
    wrong = []
    for name in PURE:
        tree = ast.parse((PACKAGE / name).read_text())
        for node in ast.walk(tree):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) \
                else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            wrong += [f"{name}: {m}" for m in modules if m.split(".")[0] in IMPURE]
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("unbroken."):
                wrong += [f"{name}: {node.module}" for prefix in
                          ("unbroken.master.", "unbroken.observability.")
                          if node.module.startswith(prefix) and node.module not in
                          ("unbroken.master.events", "unbroken.master.policy",
                           "unbroken.observability.cuts")]
    assert wrong == [], "\n".join(wrong)
