"""TUF's network layer for a device: httpx with the device token on every request,
and a download whose connection breaks resumes where it stopped (HTTP Range)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
from tuf.api import exceptions as tuf_errors
from tuf.ngclient.fetcher import FetcherInterface


class ResumingFetcher(FetcherInterface):
    """`cut(url)`: after how many bytes a download's connection breaks (None: it
    does not); `on_cut(url)` then raises what the break is (a simulator's faults;
    a real device's broken connections arrive as httpx's transport errors)."""

    def __init__(
        self,
        http: httpx.Client,
        token: str,
        *,
        attempts: int = 5,
        cut: Callable[[str], int | None] | None = None,
        on_cut: Callable[[str], None] | None = None,
    ) -> None:
        self.http, self.token, self.attempts = http, token, attempts
        self.cut, self.on_cut = cut, on_cut
        self.bytes_received = 0
        self.resumes = 0

    def _fetch(self, url: str) -> Iterator[bytes]:
        received, failures = 0, 0
        cut_at = self.cut(url) if self.cut else None
        while True:
            headers = {"Authorization": f"Bearer {self.token}"}
            if received:
                headers["Range"] = f"bytes={received}-"
            try:
                with self.http.stream("GET", url, headers=headers) as reply:
                    self._check(url, reply, resumed=bool(received))
                    for chunk in reply.iter_bytes(16384):
                        if cut_at is not None and received + len(chunk) > cut_at:
                            part = chunk[: cut_at - received]
                            received += len(part)
                            self.bytes_received += len(part)
                            cut_at = None
                            if part:
                                yield part
                            self._break(url)
                        received += len(chunk)
                        self.bytes_received += len(chunk)
                        yield chunk
                return
            except httpx.TransportError as exc:
                failures += 1
                if failures >= self.attempts:
                    raise tuf_errors.DownloadError(
                        f"{url}: {failures} broken connections"
                    ) from exc
                self.resumes += 1

    @staticmethod
    def _check(url: str, reply: httpx.Response, *, resumed: bool) -> None:
        if reply.status_code >= 400:
            raise tuf_errors.DownloadHTTPError(
                f"{url}: HTTP {reply.status_code}", reply.status_code
            )
        if resumed and reply.status_code != 206:
            raise tuf_errors.DownloadError(f"{url}: range not honoured")

    def _break(self, url: str) -> None:
        if self.on_cut is not None:
            self.on_cut(url)
        raise httpx.ReadError(f"{url}: connection broken")
