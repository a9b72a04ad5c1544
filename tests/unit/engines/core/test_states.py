"""The transition tables as data: illegal moves raise, shortcuts are what they stand for."""

from __future__ import annotations

import enum
import itertools
from collections.abc import Mapping

import pytest

from unbroken.engines.core import states
from unbroken.engines.core.states import (
    CONNECTION,
    REQUEST,
    RESPONSE,
    SHORTCUTS,
    ConnectionEvent,
    ConnectionState,
    IllegalTransition,
    RequestEvent,
    RequestState,
    ResponseEvent,
    ResponseState,
)

Table = Mapping[tuple[enum.Enum, enum.Enum], enum.Enum]
TABLES: list[tuple[str, Table, type[enum.Enum], type[enum.Enum], list[enum.Enum]]] = [
    ("connection", CONNECTION, ConnectionState, ConnectionEvent, [ConnectionState.FRESH]),
    ("request", REQUEST, RequestState, RequestEvent,
     [RequestState.BODY_WAITING, RequestState.REQUEST_COMPLETE]),
    ("response", RESPONSE, ResponseState, ResponseEvent, [ResponseState.NOT_STARTED]),
]
IDS = [name for name, *_ in TABLES]


@pytest.mark.parametrize(("name", "table", "state_type", "event_type", "starts"), TABLES, ids=IDS)
def test_every_move_is_between_members_of_its_own_enums(
        name: str, table: Table, state_type: type[enum.Enum], event_type: type[enum.Enum],
        starts: list[enum.Enum]) -> None:
    for (state, event), new in table.items():
        assert type(state) is state_type and type(new) is state_type
        assert type(event) is event_type


@pytest.mark.parametrize(("name", "table", "state_type", "event_type", "starts"), TABLES, ids=IDS)
def test_a_move_not_in_the_table_raises(
        name: str, table: Table, state_type: type[enum.Enum], event_type: type[enum.Enum],
        starts: list[enum.Enum]) -> None:
    illegal = [(s, e) for s, e in itertools.product(state_type, event_type) if (s, e) not in table]
    assert illegal
    for state, event in illegal:
        message = f"{event.name} is not a move from {state.name}"
        with pytest.raises(IllegalTransition, match=message):
            table[state, event]


@pytest.mark.parametrize(("name", "table", "state_type", "event_type", "starts"), TABLES, ids=IDS)
def test_every_state_is_reachable_and_every_event_is_used(
        name: str, table: Table, state_type: type[enum.Enum], event_type: type[enum.Enum],
        starts: list[enum.Enum]) -> None:
    seen, frontier = set(starts), list(starts)
    while frontier:
        state = frontier.pop()
        for (source, _), new in table.items():
            if source is state and new not in seen:
                seen.add(new)
                frontier.append(new)
    assert seen == set(state_type)
    assert {event for _, event in table} == set(event_type)


def test_the_connection_always_ends_closed_and_stays_there() -> None:
    for state in ConnectionState:
        if state is not ConnectionState.CLOSED:
            assert CONNECTION[state, ConnectionEvent.TRANSPORT_LOST] is ConnectionState.CLOSED
    assert not [key for key in CONNECTION if key[0] is ConnectionState.CLOSED]


def test_a_shortcut_leads_where_its_plain_moves_lead() -> None:
    for shortcut, plain in SHORTCUTS.items():
        table: Table = RESPONSE if isinstance(shortcut, ResponseEvent) else CONNECTION
        starts = {state for state, event in table if event is shortcut}
        assert starts
        for start in starts:
            state = start
            for event in plain:
                state = table[state, event]
            assert table[start, shortcut] is state


def test_each_member_is_a_module_global_of_its_own_name() -> None:
    for enum_type in (ConnectionState, ConnectionEvent, RequestState, RequestEvent,
                      ResponseState, ResponseEvent):
        for member in enum_type:
            assert getattr(states, member.name) is member
