"""Serving the playground: ``/`` is its page, ``/ui/...`` its files.

Only these two paths are taken, so the API (/v1), /docs, /health, /ready, /metrics and
/openapi.json keep their routes. The page is revalidated on every load (``no-cache``); the
scripts and styles under /ui/assets/ carry a content hash in their names, so a browser keeps
them for a year. The page's Content-Security-Policy lets it load and call this server only.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

UI_URL = "/ui"
PAGE = "index.html"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; connect-src 'self'; media-src 'self' blob:; img-src 'self' data: blob:; "
    "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'self'; frame-ancestors 'self'"
)


def static_directory() -> Path:
    """The built playground; fails at start-up if the build is missing."""
    directory = Path(str(files("labs_api.ui").joinpath("static")))
    if not (directory / PAGE).is_file():
        raise RuntimeError(f"the playground build is missing from {directory}: run "
                           "'npm ci && npm run build' in ui/, or set LABS_UI=false")
    return directory


class PlaygroundFiles(StaticFiles):
    """Static files with explicit content types and caching headers."""

    def file_response(self, full_path, stat_result, scope: Scope, status_code: int = 200):
        response = super().file_response(full_path, stat_result, scope, status_code)
        path = Path(str(full_path))
        content_type = CONTENT_TYPES.get(path.suffix)
        if content_type:
            response.headers["content-type"] = content_type
        hashed = "assets" in path.parts[-2:-1]
        response.headers["cache-control"] = IMMUTABLE if hashed else REVALIDATE
        response.headers["x-content-type-options"] = "nosniff"
        return response


def install_ui(app: FastAPI) -> None:
    """Serve the playground page at / and its files under /ui."""
    directory = static_directory()
    page = directory / PAGE
    app.mount(UI_URL, PlaygroundFiles(directory=directory), name="playground")

    @app.get("/", include_in_schema=False)
    async def playground() -> FileResponse:
        return FileResponse(page, headers={
            "content-type": CONTENT_TYPES[".html"],
            "cache-control": REVALIDATE,
            "content-security-policy": CONTENT_SECURITY_POLICY,
            "x-content-type-options": "nosniff",
        })
