"""/docs (Swagger UI) and /redoc served from files installed with the server, so the pages work
on a machine with no network. FastAPI's own pages load their scripts from a CDN.

The assets are the Swagger UI and ReDoc bundles shipped in the ``fastapi-offline`` package; only
its files are used, not its app factory.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"
DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
REQUIRED_ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js",
                   "favicon.png")


def assets_directory() -> Path:
    """The folder of Swagger UI and ReDoc files; fails at start-up if one is missing."""
    directory = Path(str(files("fastapi_offline").joinpath("static")))
    missing = [name for name in REQUIRED_ASSETS if not (directory / name).is_file()]
    if missing:
        raise RuntimeError(f"fastapi-offline at {directory} lacks {', '.join(missing)}; "
                           "reinstall it")
    return directory


def install_docs(app: FastAPI) -> None:
    """Serve the docs pages on ``app``, which must be built with ``docs_url=None`` and
    ``redoc_url=None`` (so FastAPI adds no CDN pages of its own)."""
    app.mount(ASSETS_URL, StaticFiles(directory=assets_directory()), name="docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_URL}",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
