"""The stability window the integration services use (tests/integration/conftest.py).

Every reload there parks the old workers, as by default, but for 0.5 s instead of 3 s:
most tests reload for another reason, and the window would add 2.5 s to each reload.
The window's own tests give their own value (a later flag wins).
"""

STABLE_FOR = ("--reload-stable-for", "0.5")
