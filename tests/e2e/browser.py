"""Headless Chromium (Debian's ``chromium``) driven by Playwright, with the network cut: every
request to a host other than the server under test is refused and recorded."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--disable-dev-shm-usage",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    # the page may play audio and record without a gesture or a prompt (fake devices)
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
]


def playwright_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if CHROMIUM is None:
        return "chromium is not installed (apt-get install chromium; .ci/run does)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (the dev extra has it)"
    return None


@dataclass
class Browsing:
    """A page on the server under test, and what it did that it should not have."""

    page: object
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def assert_clean(self) -> None:
        assert self.refused == [], f"the page tried to reach other hosts: {self.refused}"
        assert self.errors == [], f"the page raised: {self.errors}"


@contextlib.contextmanager
def browsing(base_url: str, bypass_csp: bool = False,
             microphone: Path | None = None) -> Iterator[Browsing]:
    """A fresh Chromium profile with one page; only ``base_url``'s origin is reachable.
    ``bypass_csp`` lets a test inject a script (axe-core) past the page's policy;
    ``microphone`` is a WAV file the fake microphone plays (in a loop)."""
    from playwright.sync_api import sync_playwright

    origin = urlsplit(base_url)
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_FLAGS + ([f"--use-file-for-fake-audio-capture={microphone}"]
                                   if microphone else []),
            viewport={"width": 1280, "height": 860}, accept_downloads=True,
            bypass_csp=bypass_csp)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            session = Browsing(page)

            def only_the_server(route) -> None:
                url = urlsplit(route.request.url)
                if url.scheme in ("blob", "data") or (
                        url.hostname == origin.hostname and url.port == origin.port):
                    route.continue_()
                else:
                    session.refused.append(route.request.url)
                    route.abort("blockedbyclient")

            context.route("**/*", only_the_server)
            page.on("pageerror", lambda error: session.errors.append(str(error)))
            page.set_default_timeout(60_000)
            yield session
        finally:
            context.close()
