"""The connection's one timer, by its table.

Timers, one at a time per connection (the `_timer` field, of kind `_timer_kind`), from
the server's `clock` (the loop, or a test's fake clock:
tests/unit/engines/core/test_connection.py):
    fresh connection, nothing received ........ header_timeout → close
    idle between requests ...................... keep_alive_timeout → close
    part of a head received .................... header_timeout from its first byte → 408, close
    body expected, not paused, app is reading .. the body clock (`body_deadline`) → 408, close
    response ended, the rest of the body ....... discard_timeout from the response's end → close
      still coming (read only to be dropped)

Three of them are armed once and look again when they fire, rather than being
cancelled and re-armed at every request or read (a call_later and a cancel each):
- The idle timer is not cancelled when a request starts: when it fires it closes only
  a connection that has been idle for the whole keep_alive_timeout since
  `_idle_since`, else re-arms for the rest.
- The body clock is armed when the body starts to be read (or is read again after a
  pause the app caused: the client is not charged for the app's slowness). Reads only
  count bytes and note the time; when the timer fires, `body_deadline` says whether
  the body is late (408) or when to look again.
- The discard timer runs from the response's end; it is not moved by reads.
The fake clock checks each at its exact instants. Any other timer (`_arm`) replaces
the one armed.

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

# What `_timer` is (compared by identity): the kinds that are armed once and look again.
NO_TIMER = "none"
IDLE_TIMER = "idle"
BODY_TIMER = "body"
DISCARD_TIMER = "discard"
# A timer may fire a hair early (the loop's clock resolution): this close is due.
EARLY = 0.001


def body_deadline(since: float, last: float, received: int, timeout: float,
                  min_rate: float) -> float:
    """When a body being read is late: Apache mod_reqtimeout's model (`body=20,
    MinRate=500`), with a gap limit beside it.

    The client has `timeout` seconds for its first bytes, extended by one second for
    every `min_rate` bytes received since `since`: so one byte every 2 s is cut soon
    after `timeout`, and a fast upload is never cut. And no gap between two reads may
    be longer than `timeout` (`last` is the latest read): the credit a fast start
    earned must not keep a stalled body open for hours.
    """
    gap = last + timeout
    if min_rate <= 0:
        return gap
    return min(gap, since + timeout + received / min_rate)


class Timers:
    if TYPE_CHECKING:
        server: ConnectionServer
        state: ConnectionState
        current: Exchange | None
        _timer: Timer | None
        _timer_kind: str
        _idle_since: float
        _head_since: float
        _body_since: float
        _body_bytes: int
        _body_last: float
        _read_pauses: set[str]
        _clock: Clock

        @property
        def closing(self) -> bool: ...

        def close(self) -> None: ...

        def _move(self, event: ConnectionEvent) -> None: ...

        def _answer_error(self, error: HTTPError) -> None: ...

        def _reject_current(self, current: Exchange, error: HTTPError) -> None: ...

    def _idle_timed_out(self) -> None:
        self._timer, self._timer_kind = None, NO_TIMER
        if self.state is not IDLE:
            return  # busy since it was armed; the next idle period arms it again
        remaining = self._idle_since + self.server.settings.keep_alive_timeout
        remaining -= self._clock.time()
        if remaining > EARLY:
            self._arm(remaining, self._idle_timed_out, IDLE_TIMER)
        else:
            self.close()

    def _enter_head_phase(self) -> None:
        if self.state is not IN_HEAD:
            self._move(HEAD_BEGAN)
            self._head_since = self._clock.time()
            self._arm(self.server.settings.header_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._answer_error(RequestTimeout("request head not received in time"))

    def refresh_timer(self) -> None:
        """Arm the body clock while the app waits for body bytes we are reading, or the
        discard timer once its response has ended; each only if not armed already."""
        current = self.current
        if (current is None or self.closing or current.request is REQUEST_COMPLETE
                or self._read_pauses):
            return
        kind = self._timer_kind
        if current.response is RESPONSE_ENDED:
            # The rest of a body nobody reads, after the response: dropped, for a while;
            # unless the client waits for a 100 that will never come.
            if kind is not DISCARD_TIMER and not current.head.expect_continue:
                self._arm(self.server.settings.discard_timeout, self.close, DISCARD_TIMER)
        elif current.request is BODY_READING and kind is not BODY_TIMER:
            self._body_since = self._body_last = self._clock.time()
            self._body_bytes = 0
            self._arm(self.server.settings.body_timeout, self._body_check, BODY_TIMER)

    def _body_check(self) -> None:
        """The body clock's timer fired: cut a late body with 408, else look again then."""
        self._timer, self._timer_kind = None, NO_TIMER
        settings = self.server.settings
        due = body_deadline(self._body_since, self._body_last, self._body_bytes,
                            settings.body_timeout, settings.body_min_rate)
        remaining = due - self._clock.time()
        if remaining > EARLY:
            self._arm(remaining, self._body_check, BODY_TIMER)
        elif self.current is not None:
            self._reject_current(self.current, RequestTimeout("request body too slow"))
        else:
            self.close()

    def _arm(self, delay: float, callback: Callable[[], None], kind: str = NO_TIMER) -> None:
        self._cancel_timer()
        self._timer = self._clock.call_later(delay, callback)
        self._timer_kind = kind

    def _cancel_timer(self) -> None:
        self._timer_kind = NO_TIMER
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
