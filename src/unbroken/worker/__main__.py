"""`python -m unbroken.worker`: lower the boot priority and patch for gevent first, then run.

Two things must happen before the worker's own imports, so this file reads the spec
with nothing but `json` and `os` (and priority.py's `os` and `resource`):

- The boot nice (--boot-nice, worker/priority.py). Importing the worker (asyncio, the
  engines, the parser) is about 70 ms of CPU; at the master's priority, each new worker
  of a reload took that from the serving ones at the reload's first moment, where the
  bench's spike was (issue 15, item 4). Usually the master has niced this process
  already, from before the interpreter started; here it learns what to go back to.
- gevent's monkey patching, before any module imports socket, threading, selectors or
  asyncio, or those modules keep blocking references (gevent's docs: "patch as early as
  possible").
"""

import json
import os

from unbroken.worker.priority import lower_for_boot


def _spec_fields() -> dict[str, object]:
    try:
        fields = json.loads(os.environ.get("UNBROKEN_WORKER", "{}"))
    except ValueError:
        return {}  # main() reports a bad spec
    return fields if isinstance(fields, dict) else {}


def _patch_for_gevent(worker_class: object) -> None:
    if worker_class == "gevent":
        from gevent import monkey

        monkey.patch_all()


_fields = _spec_fields()
_boot_nice = _fields.get("boot_nice", 0)
_niced_from = _fields.get("niced_from")
# First, while this process is a single thread (a thread inherits its creator's nice).
_priority = lower_for_boot(_boot_nice if isinstance(_boot_nice, int) else 0,
                           _niced_from if isinstance(_niced_from, int) else None)
_patch_for_gevent(_fields.get("worker_class"))

from unbroken.worker.main import main  # noqa: E402 -- must follow the two steps above

main(_priority)
