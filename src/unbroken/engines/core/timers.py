"""The connection's one timer, by its table.

Timers, one at a time per connection (the `_timer` field), from the server's `clock`
(the loop, or a test's fake clock: tests/unit/engines/core/test_connection.py):
    fresh connection, nothing received ........ header_timeout → close
    idle between requests ...................... keep_alive_timeout → close
    part of a head received .................... header_timeout from its first byte → 408, close
    body expected, not paused, app is reading .. body_timeout between arrivals → 408/close

The idle timer is not cancelled when a request starts: it stays armed, and when it
fires it closes only a connection that has been idle for the whole keep_alive_timeout
since `_idle_since`, else re-arms for the rest. A keep-alive connection so pays one
timer per timeout period instead of a call_later and a cancel per request: a shortcut
of this table, which the fake clock checks at its exact instants. Any other timer
(`_arm`) replaces it.

A part of `HTTPConnection`, like routing.py's `Pipeline`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from unbroken.engines.core.states import (
    BODY_READING,
    HEAD_BEGAN,
    IDLE,
    IN_HEAD,
    REQUEST_COMPLETE,
    RESPONSE_ENDED,
    ConnectionState,
)
from unbroken.http.errors import HTTPError, RequestTimeout

if TYPE_CHECKING:
    from unbroken.engines.core.connection import Clock, Timer
    from unbroken.engines.core.exchange import Exchange
    from unbroken.engines.core.server import ConnectionServer
    from unbroken.engines.core.states import ConnectionEvent


class Timers:
    if TYPE_CHECKING:
        server: ConnectionServer
        state: ConnectionState
        current: Exchange | None
        _timer: Timer | None
        _timer_is_idle: bool
        _idle_since: float
        _read_pauses: set[str]
        _clock: Clock

        @property
        def closing(self) -> bool: ...

        def close(self) -> None: ...

        def _move(self, event: ConnectionEvent) -> None: ...

        def _answer_error(self, error: HTTPError) -> None: ...

        def _reject_current(self, current: Exchange, error: HTTPError) -> None: ...

    def _idle_timed_out(self) -> None:
        self._timer, self._timer_is_idle = None, False
        if self.state is not IDLE:
            return  # busy since it was armed; the next idle period arms it again
        remaining = self._idle_since + self.server.settings.keep_alive_timeout
        remaining -= self._clock.time()
        if remaining > 0.001:
            self._timer = self._clock.call_later(remaining, self._idle_timed_out)
            self._timer_is_idle = True
        else:
            self.close()

    def _enter_head_phase(self) -> None:
        if self.state is not IN_HEAD:
            self._move(HEAD_BEGAN)
            self._arm(self.server.settings.header_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._answer_error(RequestTimeout("request head not received in time"))

    def refresh_timer(self) -> None:
        """(Re)arm the body timer while the app waits for body bytes we are reading."""
        current = self.current
        if (current is None or self.closing or current.request is REQUEST_COMPLETE
                or self._read_pauses):
            return
        if current.request is BODY_READING or (
                # The rest of a body nobody reads, after the response: discarded under
                # the timer; unless the client waits for a 100 that will never come.
                current.response is RESPONSE_ENDED and not current.head.expect_continue):
            self._arm(self.server.settings.body_timeout, self._body_timed_out)

    def _body_timed_out(self) -> None:
        if self.current is not None:
            self._reject_current(self.current, RequestTimeout("request body stalled"))
        else:
            self.close()

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        self._timer = self._clock.call_later(delay, callback)

    def _cancel_timer(self) -> None:
        self._timer_is_idle = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
