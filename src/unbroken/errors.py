"""Every error unbroken raises on purpose, under one root; the CLI catches the root.

Rule: a user-facing error's message is the one line a user reads, and its class
knows the exit code; anything that is not an `UnbrokenError` reaching the CLI is a
bug, and keeps its traceback. The standard-library bases some classes also have
(ValueError, ConnectionError, OSError) are kept for the code that already catches
them, such as an ASGI app catching OSError on a disconnect.

    UnbrokenError
    ├── UsageError (exit 2)           the user's mistake: one line, no traceback
    │   ├── ConfigError               config/load.py: bad settings, all named at once
    │   ├── AddressError              sockets.py: a bind, control or probe address
    │   ├── AppNotFound               worker/loader.py: APP names nothing importable
    │   └── TLSError                  engines/core/tls.py: a certificate or key unusable
    ├── ServiceError (exit 1)         the service could not do what was asked
    │   ├── StartupFailed             master/arbiter.py: the first generation did not boot
    │   ├── ResourceError             master/arbiter.py: the --pid file, the FIFO
    │   ├── ControlUnavailable        control/client.py: no service answers
    │   └── DrillError                drill/run.py
    ├── DeployError (its own codes)   deploy/errors.py: 1, 3, 4, 75 (that tree is there)
    ├── AgentError                    deploy/hostfiles.py: a host-side step, as JSON
    ├── HTTPError                     http/errors.py: a request refused, answered 4xx/5xx
    ├── ResponseHeaderError           http/errors.py: the app's unsendable header (500)
    ├── BootError                     a worker's app failed before Ready
    │   ├── ProbeFailed               engines/probe.py
    │   └── LifespanFailed            engines/asgi/lifespan.py
    ├── ClientGone                    engines/wsgi/request.py: the client left mid-response
    ├── ClientDisconnected            engines/asgi/http.py (also an OSError, for apps)
    └── IllegalTransition             rollout/lifecycle.py, engines/core/states.py: a bug,
                                      never a user's input
"""

from __future__ import annotations

EXIT_FAILED = 1
EXIT_USAGE = 2


class UnbrokenError(Exception):
    """The root. `exit_code` is what the CLI returns when this ends a command."""

    exit_code = EXIT_FAILED


class UsageError(UnbrokenError):
    """A mistake of the user's: reported in one line, no traceback."""

    exit_code = EXIT_USAGE


class ServiceError(UnbrokenError):
    """The service could not do what was asked (exit 1, the root's)."""


class ResourceError(ServiceError):
    """A file the master must create could not be (`--pid`, `--master-fifo`): nothing it
    opened before is left behind."""


class BootError(UnbrokenError):
    """The application failed before its worker could say Ready."""
