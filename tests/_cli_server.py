"""A fork server for the ``landscape`` command in the README test: ``import torch`` once.

Every README example runs in bash as written; ``landscape`` on its PATH is a small client
(:func:`client`) that hands its argv, working directory, environment and its standard
streams (as file descriptors) to this server over a Unix socket. The server has imported
torch and the package once; for each request it forks a child that takes the client's
streams, directory and environment and runs ``landscape.cli.main`` with that argv, then
reports the exit status. A command then costs its own work, not the ~2.5 s of importing
torch again (about 60 commands in the README).

Run as ``python tests/_cli_server.py SOCKET`` (server) or ``python -S _cli_server.py
--client SOCKET ARGS...`` (what the shim on PATH execs).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import traceback

_MAX_MESSAGE = 1 << 20  # bytes of argv + cwd + environment


def client(path: str, argv: list[str]) -> int:
    """Send one command to the server at ``path``; return its exit status."""
    message = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(path)
        socket.send_fds(conn, [message], [0, 1, 2])
        conn.shutdown(socket.SHUT_WR)
        reply = conn.recv(16)
    return int(reply) if reply else 70  # no reply: the child died (EX_SOFTWARE)


def _run_child(conn: socket.socket) -> None:
    """In the forked child: take over the client's streams, directory and environment, run
    the command, send its exit status back, and leave without returning to the server loop."""
    code = 70
    try:
        message, fds, _, _ = socket.recv_fds(conn, _MAX_MESSAGE, 3)
        request = json.loads(message)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["landscape", *request["argv"]]
        from landscape.cli import main

        try:
            main()
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            if isinstance(stop.code, str):
                print(stop.code, file=sys.stderr)
        except BaseException:  # what the interpreter would print on an uncaught exception
            traceback.print_exc()
            code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        conn.sendall(str(code).encode())
        os._exit(0)


def serve(path: str) -> None:
    """Import the heavy modules once, then fork a child per connection (forever)."""
    import h5py  # noqa: F401
    import matplotlib.pyplot  # noqa: F401
    import scipy.optimize  # noqa: F401
    import torch  # noqa: F401

    import landscape.cli  # noqa: F401
    import landscape.plot  # noqa: F401
    import landscape.study  # noqa: F401

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reaped by the kernel
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(8)
        print("ready", flush=True)
        while True:
            conn, _ = server.accept()
            if os.fork() == 0:
                server.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _run_child(conn)
            conn.close()


if __name__ == "__main__":
    if sys.argv[1] == "--client":
        sys.exit(client(sys.argv[2], sys.argv[3:]))
    serve(sys.argv[1])
