"""The browser tests' Chromium: Debian's (`make test` installs it), driven by
Playwright; screenshots land in reports/browser/ (the docs' images are copied from
there)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import REPO, system_package_missing

CHROMIUM = "/usr/bin/chromium"
# Offline machine: no Google services, no sandbox as root (what Debian's package and
# the probe of this machine kind use for headless runs).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = REPO / "reports" / "browser"


def require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        system_package_missing(
            f"{CHROMIUM} not found: `make test` installs Debian's chromium",
            "EDGELOOP_REQUIRE_CHROMIUM",
        )


@contextmanager
def chromium() -> Iterator[object]:
    """A headless Chromium (playwright.sync_api.Browser), closed after."""
    from playwright.sync_api import sync_playwright

    require_chromium()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()
