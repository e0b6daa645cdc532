"""A service of your own: exposed methods, a callback into the client, and asynchronous calls.

A ``TaskService`` runs jobs for its clients and reports progress through a function the client
passes in: the server calls it back across the connection while the client's call is still in
flight. ``rpc_service.async_`` turns a remote method into one that returns at once with an
``AsyncResult``. Everything runs on 127.0.0.1 in this one process; run it with
``hatch run demo:python examples/custom_service.py``.
"""

from __future__ import annotations

from typing import Callable

import rpc_service


class TaskService(rpc_service.Service):
    """Runs small jobs; ``exposed_`` names are what clients can reach (without the prefix)."""

    def on_connect(self, conn: rpc_service.Connection) -> None:
        self.done = 0  # one service instance per connection: the class is passed to the server

    def exposed_square_all(self, numbers: list[int], progress: Callable[[int, int], None]) -> list[int]:
        results = []
        for index, number in enumerate(numbers):  # ``numbers`` is a proxy: iterating it is remote
            results.append(number * number)
            progress(index + 1, len(numbers))  # runs on the client
        self.done += 1
        return results

    def exposed_jobs_done(self) -> int:
        return self.done

    def _secret(self) -> str:  # not exposed: unreachable from the client
        return "hidden"


def main() -> None:
    with rpc_service.ThreadedServer(TaskService) as server:  # 127.0.0.1, a free port
        server.start_in_thread()
        print(f"[server] {server.service.get_service_name()} on port {server.port}")
        with rpc_service.connect("127.0.0.1", server.port) as conn:
            seen: list[str] = []

            def progress(done: int, total: int) -> None:
                seen.append(f"{done}/{total}")

            squares = conn.root.square_all([1, 2, 3, 4], progress)
            print(f"[client] squares {list(squares)}, progress reported {seen}")
            assert list(squares) == [1, 4, 9, 16] and seen == ["1/4", "2/4", "3/4", "4/4"]

            pending = rpc_service.async_(conn.root.square_all)([5, 6], lambda done, total: None)
            print(f"[client] async call sent; ready yet: {pending.ready}")
            pending.wait()
            print(f"[client] async result {list(pending.value)}; jobs done: {conn.root.jobs_done()}")
            assert list(pending.value) == [25, 36] and conn.root.jobs_done() == 2

            try:
                conn.root._secret()
            except AttributeError as exc:
                print(f"[client] private names stay private: {exc}")
            else:
                raise AssertionError("a private method was reachable")
    print("[example] done")


if __name__ == "__main__":
    main()
