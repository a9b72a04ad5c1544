"""`python -m unbroken.worker`: patch for gevent first when asked, then run the worker.

gevent's monkey patching must happen before any module imports socket, threading,
selectors or asyncio, or those modules keep blocking references (gevent's docs:
"patch as early as possible"). So this file reads the worker class from the spec
with nothing but `json` and `os`, and imports the worker only afterwards.
"""

import json
import os


def _patch_for_gevent() -> None:
    try:
        worker_class = json.loads(os.environ.get("UNBROKEN_WORKER", "{}")).get("worker_class")
    except (ValueError, AttributeError):
        return  # main() reports a bad spec
    if worker_class == "gevent":
        from gevent import monkey

        monkey.patch_all()


_patch_for_gevent()

from unbroken.worker.main import main  # noqa: E402 -- must follow the patching above

main()
