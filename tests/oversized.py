"""A caller that sends far more than a service allows: 200 MB to a real server on
loopback, with a declared Content-Length or chunked, stopping as soon as the server
answers or closes; and the memory the server's processes hold before and after."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

import psutil

MB = 2**20
CHUNK = b"x" * MB


@dataclass(frozen=True)
class Refusal:
    status: int | None  # None: the server closed without an answer
    sent: int  # bytes of body sent before the answer


def send_oversized(
    url: str,
    *,
    total: int = 200 * MB,
    chunked: bool = False,
    headers: dict[str, str] | None = None,
    declared: str | None = None,
) -> Refusal:
    """POST (or PUT, for a path under /models/) `total` bytes to `url`, with
    Content-Length `declared` (default: `total`) unless chunked."""
    parts = urlsplit(url)
    method = "PUT" if "/models/" in parts.path else "POST"
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines.append(
        "Transfer-Encoding: chunked"
        if chunked
        else f"Content-Length: {total if declared is None else declared}"
    )
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = bytearray()
        reader = threading.Thread(target=_read_answer, args=(sock, answer))
        reader.start()
        sent = 0
        try:
            while sent < total and not answer:
                frame = f"{MB:x}\r\n".encode() + CHUNK + b"\r\n" if chunked else CHUNK
                sock.sendall(frame)
                sent += MB
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the server stopped reading, or closed the connection
        reader.join(timeout=30)
    status = answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/") else None
    return Refusal(int(status) if status else None, sent)


def _read_answer(sock: socket.socket, answer: bytearray) -> None:
    """The server's status line, as soon as it answers."""
    try:
        while b"\r\n" not in answer:
            more = sock.recv(65536)
            if not more:
                return
            answer.extend(more)
    except (OSError, TimeoutError):
        return


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its children (a BentoML server is a
    process tree)."""
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
