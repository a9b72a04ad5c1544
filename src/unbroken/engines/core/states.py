"""The states of a connection and of an exchange, and the only moves between them.

Rules:
1. Every change of `HTTPConnection.state`, `Exchange.request` or `Exchange.response`
   is a lookup in one of the tables below, keyed by (state, event), as in h11's
   `_state.py`: `state = TABLE[state, event]`. A pair that is not in its table is a
   bug in the core: the lookup raises `IllegalTransition`, and the state does not
   change. (A plain subscript, not a function call: the core makes three moves per
   keep-alive request, and a call would cost more than the move.)
2. No I/O and no connection here: the tables are data, and are tested as data
   (tests/unit/engines/core/test_states.py).
3. A *shortcut* is one event that stands for several in a row, taken by a fast path
   (a whole response in one write). `SHORTCUTS` names what each stands for, and the
   tests hold each table entry to the composition it names.

What is not a state, and so stays beside these as a plain field: which timer is
armed (connection.py's timer table), why reading is paused (a set of reasons, each
undone on its own), whether the client half-closed (it can happen in any state), and
whether a response keeps the connection alive (a verdict taken with its head, rule 4
of connection.py, not a step of the cycle).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TypeVar

from unbroken.errors import UnbrokenError


class IllegalTransition(UnbrokenError, RuntimeError):
    """The core asked for a move its table does not have: a bug, never a client's doing."""


StateT = TypeVar("StateT", bound=enum.Enum)
EventT = TypeVar("EventT", bound=enum.Enum)


class Transitions(dict[tuple[StateT, EventT], StateT]):
    """A transition table: (state, event) → the new state; a move not in it raises."""

    def __missing__(self, key: tuple[StateT, EventT]) -> StateT:
        state, event = key
        raise IllegalTransition(f"{event.name} is not a move from {state.name}")


class _IdentityEnum(enum.Enum):
    # Members are singletons, so identity is equality. Hash them in C rather than
    # through Enum.__hash__ (a Python call): every transition hashes a (state, event) pair.
    __hash__ = object.__hash__


class ConnectionState(_IdentityEnum):
    FRESH = "fresh"  # accepted; not a byte of a request yet
    IN_HEAD = "in head"  # part of a head here, no request running
    SERVING = "serving"  # a request is running (`current`); later ones wait, parsed
    IDLE = "idle"  # kept alive between requests
    UPGRADED = "upgraded"  # after 101: the bytes belong to an UpgradedStream
    CLOSING = "closing"  # we closed: flushing, perhaps swallowing input (lingering)
    CLOSED = "closed"  # the transport is gone


class ConnectionEvent(_IdentityEnum):
    HEAD_BEGAN = "head began"  # the first bytes of a head, no request running
    REQUEST_STARTED = "request started"  # a whole head parsed: its exchange begins
    ALL_ANSWERED = "all answered"  # nothing running, nothing parsed waits: wait for more
    SWITCHED_PROTOCOLS = "switched protocols"  # 101 written: the connection is the stream's
    CLOSE_BEGAN = "close began"  # we close (after flushing)
    TRANSPORT_LOST = "transport lost"  # the transport reports the connection gone


S, E = ConnectionState, ConnectionEvent
_OPEN = (S.FRESH, S.IN_HEAD, S.SERVING, S.IDLE, S.UPGRADED)

CONNECTION: Transitions[ConnectionState, ConnectionEvent] = Transitions({
    (S.FRESH, E.HEAD_BEGAN): S.IN_HEAD,
    (S.FRESH, E.REQUEST_STARTED): S.SERVING,
    # No (FRESH, ALL_ANSWERED): bytes that end no request begin a head, even empty
    # lines (the parser counts them as one begun, RFC 9112 §2.2); a test feeds the
    # connection random bytes to hold it to that.
    (S.IDLE, E.HEAD_BEGAN): S.IN_HEAD,
    (S.IDLE, E.REQUEST_STARTED): S.SERVING,
    # A request answered inside `handle` (WSGI inline, or an error) went idle already
    # when the routing that started it looks again: still idle, the period restarted.
    (S.IDLE, E.ALL_ANSWERED): S.IDLE,
    (S.IN_HEAD, E.REQUEST_STARTED): S.SERVING,
    (S.SERVING, E.REQUEST_STARTED): S.SERVING,  # the next pipelined request, parsed already
    (S.SERVING, E.HEAD_BEGAN): S.IN_HEAD,  # the response ended on part of the next head
    (S.SERVING, E.ALL_ANSWERED): S.IDLE,
    (S.SERVING, E.SWITCHED_PROTOCOLS): S.UPGRADED,
    **{(state, E.CLOSE_BEGAN): S.CLOSING for state in _OPEN},
    **{(state, E.TRANSPORT_LOST): S.CLOSED for state in (*_OPEN, S.CLOSING)},
})


class RequestState(_IdentityEnum):
    """The request's side of an exchange: where its body is."""

    # A body is to come and nobody reads it yet; or the client sent `Expect:
    # 100-continue` and waits for the 100 we have not said.
    BODY_WAITING = "body waiting"
    BODY_READING = "body reading"  # the app reads and the client sends (100 said if asked)
    REQUEST_COMPLETE = "request complete"  # all of it is here, or there was none


class RequestEvent(_IdentityEnum):
    READ_ASKED = "read asked"  # the app wants the body (and a 100 went out if asked for)
    BODY_ENDED = "body ended"  # the parser saw the end of the message


R, RE = RequestState, RequestEvent

REQUEST: Transitions[RequestState, RequestEvent] = Transitions({
    (R.BODY_WAITING, RE.READ_ASKED): R.BODY_READING,
    (R.BODY_WAITING, RE.BODY_ENDED): R.REQUEST_COMPLETE,  # the client sent it before we asked
    (R.BODY_READING, RE.BODY_ENDED): R.REQUEST_COMPLETE,
})


class ResponseState(_IdentityEnum):
    """The response's side of an exchange."""

    NOT_STARTED = "not started"  # nothing written (a 100 Continue aside)
    STREAMING = "streaming"  # the head is out, the body goes on
    RESPONSE_ENDED = "response ended"  # complete, aborted, switched or lost: nothing more goes out


class ResponseEvent(_IdentityEnum):
    HEAD_SENT = "head sent"
    END_SENT = "end sent"  # the last body bytes (or the last chunk) are written
    WHOLE_SENT = "whole sent"  # shortcut: head, body and end in one write
    ABORTED = "aborted"  # it cannot be completed: the connection closes
    UPGRADE_SENT = "upgrade sent"  # a 101 head, after which HTTP is over
    CLIENT_LEFT = "client left"  # the client left first


P, PE = ResponseState, ResponseEvent

RESPONSE: Transitions[ResponseState, ResponseEvent] = Transitions({
    (P.NOT_STARTED, PE.HEAD_SENT): P.STREAMING,
    (P.STREAMING, PE.END_SENT): P.RESPONSE_ENDED,
    (P.NOT_STARTED, PE.WHOLE_SENT): P.RESPONSE_ENDED,
    (P.NOT_STARTED, PE.UPGRADE_SENT): P.RESPONSE_ENDED,
    **{(state, PE.ABORTED): P.RESPONSE_ENDED for state in (P.NOT_STARTED, P.STREAMING)},
    **{(state, PE.CLIENT_LEFT): P.RESPONSE_ENDED for state in (P.NOT_STARTED, P.STREAMING)},
})

# Rule 3: each shortcut event and the plain events it stands for, in order.
SHORTCUTS: Mapping[_IdentityEnum, tuple[_IdentityEnum, ...]] = {
    PE.WHOLE_SENT: (PE.HEAD_SENT, PE.END_SENT),
}

del S, E, R, RE, P, PE

# The members as names of this module, as h11 has its states: in Python 3.11
# `ConnectionState.IDLE` is a lookup through the enum's metaclass (about 70 ns, and
# the core reads a dozen per request); a module global is a plain dict read. Member
# names are unique across the six enums so that each global is named as its member.
FRESH, IN_HEAD, SERVING, IDLE, UPGRADED, CLOSING, CLOSED = ConnectionState
HEAD_BEGAN, REQUEST_STARTED, ALL_ANSWERED, SWITCHED_PROTOCOLS, CLOSE_BEGAN, TRANSPORT_LOST = (
    ConnectionEvent)
BODY_WAITING, BODY_READING, REQUEST_COMPLETE = RequestState
READ_ASKED, BODY_ENDED = RequestEvent
NOT_STARTED, STREAMING, RESPONSE_ENDED = ResponseState
HEAD_SENT, END_SENT, WHOLE_SENT, ABORTED, UPGRADE_SENT, CLIENT_LEFT = ResponseEvent
