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


def _bound_mode(path: str, umask: int) -> int:
    import os
    import stat

    from unbroken.sockets import UnixAddress, bind
    old = os.umask(umask)
    try:
        sock = bind(UnixAddress(path), 8)
        assert os.umask(umask) == umask  # the caller's umask is back as it was
    finally:
        os.umask(old)
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    finally:
        sock.close()
        os.unlink(path)


def test_a_unix_socket_is_open_to_its_group_whatever_the_umask_says(tmp_path: object) -> None:
    import os
    path = os.path.join(str(tmp_path), "app.sock")
    # 022 (the usual) would give 0755: only the owner could connect, nginx gets 502.
    assert {umask: _bound_mode(path, umask) for umask in (0o022, 0o007, 0o077, 0o027)} == \
        dict.fromkeys((0o022, 0o007, 0o077, 0o027), 0o660)
    # A umask that lets others write lets them connect, as gunicorn's 0777 does.
    assert _bound_mode(path, 0o000) == 0o666
    assert _bound_mode(path, 0o020) == 0o666
