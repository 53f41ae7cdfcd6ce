"""The ``labs-api`` command: read the settings, then serve the app with uvicorn."""

from __future__ import annotations

import argparse
import logging

from labs_api.settings import load_settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="labs-api",
        description="Serve the AI Labs API. Every option is also an environment variable "
        "(LABS_HOST, LABS_PORT, LABS_MODEL, ...); see the README.",
    )
    parser.add_argument("--host", help="address to bind (LABS_HOST)")
    parser.add_argument("--port", type=int, help="TCP port (LABS_PORT)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    settings = load_settings()
    if args.host:
        settings.host = args.host
    if args.port:
        settings.port = args.port
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    import uvicorn

    from labs_api.app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # labs_api.access writes one line per request, with its id
        timeout_graceful_shutdown=5,
    )
