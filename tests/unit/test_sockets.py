from __future__ import annotations

import socket
import time

from unbroken.sockets import listen_queue


def test_listen_queue_counts_connections_waiting_to_be_accepted() -> None:
    with socket.create_server(("127.0.0.1", 0), backlog=7) as listener:
        assert listen_queue(listener) == (0, 7)
        clients = [socket.create_connection(listener.getsockname()) for _ in range(3)]
        try:
            deadline = time.monotonic() + 2
            while listen_queue(listener) != (3, 7) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert listen_queue(listener) == (3, 7)
            listener.accept()[0].close()
            assert listen_queue(listener) == (2, 7)
        finally:
            for client in clients:
                client.close()


def test_listen_queue_is_none_for_unix_sockets(tmp_path: object) -> None:
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(f"{tmp_path}/s.sock")
        listener.listen()
        assert listen_queue(listener) is None
