"""Parsers for setting values: each raises ValueError with a message a user can act on."""

from __future__ import annotations

import shlex
import signal

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
CERT_REQS = ("none", "optional", "required")
ACCESS_LOG_FORMATS = ("combined", "json")


def explain(error: ValueError) -> str:
    """A parser's message; Python's own for a bad number (`invalid literal for int() with
    base 10: 'x'`) becomes one a user reads."""
    message = str(error)
    if message.startswith("invalid literal for int()"):
        return "is not a whole number"
    if message.startswith("could not convert string to float"):
        return "is not a number"
    return message


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"must not be negative, got {value}")
    return value


_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def byte_size(text: str) -> int:
    """Bytes, with an optional K, M or G (binary: 1K is 1024); 0 means no limit."""
    number, unit = str(text).strip(), ""
    if number[-1:].lower() in ("k", "m", "g"):
        number, unit = number[:-1], number[-1].lower()
    try:
        value = int(number) * _SIZE_UNITS[unit]
    except ValueError:
        raise ValueError(f"must be a number of bytes such as 1048576, 10M or 1G, got "
                         f"{text!r}") from None
    if value < 0:
        raise ValueError(f"must not be negative, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"must be more than 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError(f"must not be negative, got {text}")
    return value


LOOPS = ("auto", "asyncio", "uvloop")


def event_loop(text: str) -> str:
    loop = text.lower()
    if loop not in LOOPS:
        raise ValueError(f"must be one of {', '.join(LOOPS)}")
    return loop


def log_level(text: str) -> str:
    level = text.lower()
    if level not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return level


def worker_class(text: str) -> str:
    # Imported here so that `config` stays free of engine imports at module load.
    from unbroken.config.worker_classes import ALIASES, normalise, refusal
    from unbroken.engines import ENGINES

    refused = refusal(text)
    if refused:
        raise ValueError(refused)
    if text not in ENGINES and text != "auto" and normalise(text) not in ALIASES:
        raise ValueError(f"unknown worker class (known: auto, {', '.join(sorted(ENGINES))}; "
                         "and gunicorn's sync, gthread, uvicorn.workers.UvicornWorker)")
    return text  # an alias stays as given until load_config, which notes it


def signal_name(text: str) -> str:
    name = text.upper().removeprefix("SIG")
    if not hasattr(signal, f"SIG{name}") or name.startswith("_") or "_" in name:
        raise ValueError("is not a signal name (e.g. TERM, INT, QUIT)")
    return name


def command(text: str) -> str:
    try:
        argv = shlex.split(text)
    except ValueError as error:
        raise ValueError(f"cannot be split into arguments: {error}") from None
    if not argv:
        raise ValueError("is empty")
    return text


def cert_reqs(text: str) -> str:
    value = text.lower()
    if value not in CERT_REQS:
        raise ValueError(f"must be one of {', '.join(CERT_REQS)}")
    return value


def access_log_format(text: str) -> str:
    value = text.lower()
    if value not in ACCESS_LOG_FORMATS:
        raise ValueError(f"must be one of {', '.join(ACCESS_LOG_FORMATS)}")
    return value


def octal(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise ValueError("is not an octal mode such as 022") from None
    if not 0 <= value <= 0o777:
        raise ValueError("must be between 000 and 777")
    return value


SWITCH_VALUES = {"on": True, "true": True, "yes": True, "1": True,
                 "off": False, "false": False, "no": False, "0": False}


def switch(text: str) -> bool:
    try:
        return SWITCH_VALUES[text.lower()]
    except KeyError:
        raise ValueError("must be on or off") from None


def address_list(text: str) -> str:
    """Comma-separated IPs/networks or `*`; kept as text (engines parse it again)."""
    from unbroken.http.forwarded import parse_trusted_proxies

    parse_trusted_proxies(text)
    return ",".join(entry.strip() for entry in text.split(",") if entry.strip())
