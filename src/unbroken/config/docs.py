"""Generate docs/settings.md from the declarations (`python -m unbroken.config.docs`).

A unit test fails when the committed page and the declarations disagree.
"""

from __future__ import annotations

from unbroken.config.load import env_name
from unbroken.config.settings import declarations


def render() -> str:
    lines = [
        "# Settings",
        "",
        "Generated from `src/unbroken/config/settings.py` by `python -m unbroken.config.docs`.",
        "Each setting can be given as a flag of `unbroken serve` or as an environment variable;",
        "flags win. Repeatable settings take a comma-separated list in the environment.",
        "",
        "| setting | flags | environment | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for field, declaration in declarations():
        flags = ", ".join(f"`{flag}`" for flag in declaration.flags) or "(positional)"
        default = field.default
        if isinstance(default, tuple):
            default = ",".join(default)
        lines.append(f"| {field.name} | {flags} | `{env_name(field.name)}` | `{default}` | "
                     f"{declaration.help} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
