"""Iterating proxies: builtin containers in batches, everything else one item at a time.

Reading ahead is only done where it cannot change what the caller observes (the builtin
containers); a remote generator or a custom iterable runs its code exactly as far as the
caller has iterated.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

import rpc_service
from tests.service.conftest import ConnectTo
from tests.service.helpers import count_requests


class Countdown:
    """A custom iterable: its __iter__ is user code, so no batching."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.n, 0, -1))


class IterService(rpc_service.Service):
    def __init__(self) -> None:
        self.produced: list[int] = []

    def exposed_numbers(self, n: int) -> list[int]:
        return list(range(n))

    def exposed_mapping(self) -> dict[str, int]:
        return {"a": 1, "b": 2, "c": 3}

    def exposed_generator(self, n: int) -> Iterator[int]:
        for i in range(n):
            self.produced.append(i)
            yield i

    def exposed_countdown(self, n: int) -> Countdown:
        return Countdown(n)

    def exposed_produced(self) -> tuple[int, ...]:
        return tuple(self.produced)


@pytest.mark.parametrize("n", [0, 1, 255, 256, 257, 10_000])
def test_a_remote_list_iterates_completely_in_a_few_round_trips(
    connect_to: ConnectTo, n: int
) -> None:
    conn = connect_to(IterService)
    remote: Any = conn.root.numbers(n)
    counter = count_requests(conn)
    assert list(remote) == list(range(n))
    assert counter[0] <= 9  # len() (list() presizes), __iter__, then batches of 256, 512, ... 8192


def test_dicts_and_their_views_iterate_in_batches(connect_to: ConnectTo) -> None:
    conn = connect_to(IterService)
    remote: Any = conn.root.mapping()
    counter = count_requests(conn)
    assert [key for key in remote] == ["a", "b", "c"]
    assert sorted(remote.__iter__()) == ["a", "b", "c"]
    assert counter[0] == 4  # (__iter__ + one batch) twice


def test_a_remote_generator_runs_only_as_far_as_iterated(connect_to: ConnectTo) -> None:
    conn = connect_to(IterService)
    generator: Any = conn.root.generator(100)
    iterator = iter(generator)
    assert [next(iterator) for _ in range(3)] == [0, 1, 2]
    assert conn.root.produced() == (0, 1, 2)  # no read-ahead: the side effects are exactly these


def test_a_custom_iterable_is_iterated_one_item_per_round_trip(
    connect_to: ConnectTo
) -> None:
    conn = connect_to(IterService)
    remote: Any = conn.root.countdown(5)
    counter = count_requests(conn)
    assert list(remote) == [5, 4, 3, 2, 1]
    assert counter[0] == 1 + 6  # __iter__, then __next__ per item and the final StopIteration
