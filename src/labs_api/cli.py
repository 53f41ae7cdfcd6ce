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
    commands = parser.add_subparsers(dest="command", metavar="serve")
    serve = commands.add_parser(
        "serve", help="serve (what plain labs-api does); with --ray, on a Ray cluster",
        description="Serve the AI Labs API; with --ray, on a Ray cluster through Ray Serve "
        "(needs the 'ray' extra; see the README's 'Scaling out').",
    )
    serve.add_argument("--host", default=argparse.SUPPRESS, help="address to bind (LABS_HOST)")
    serve.add_argument("--port", type=int, default=argparse.SUPPRESS, help="port (LABS_PORT)")
    serve.add_argument("--ray", action="store_true",
                       help="deploy on a Ray cluster: one deployment per model, replicas and "
                       "resources from LABS_RAY_*")
    serve.add_argument("--address", help="the Ray cluster (e.g. 10.0.0.5:6379); default "
                       "$RAY_ADDRESS, else one started here by 'ray start', else a new local one")
    serve.add_argument("--detach", action="store_true",
                       help="with --ray: deploy on a running cluster, leave it serving, and exit")
    args = parser.parse_args(argv)
    if args.command == "serve" and not args.ray and (args.address or args.detach):
        parser.error("--address and --detach need --ray")
    return args


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
    if getattr(args, "ray", False):
        from labs_api.ray_serve.launcher import serve_on_ray

        # Detached, the app must outlive this process: only on a cluster that already runs.
        address = args.address or ("auto" if args.detach else None)
        serve_on_ray(settings, address=address, detach=args.detach)
        return
    import uvicorn

    from labs_api.app import create_app
    from labs_api.ops.connections import check_file_limit, guarded_protocol

    check_file_limit(settings.max_connections)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        root_path=settings.root_path,
        log_level=settings.log_level,
        access_log=False,  # labs_api.access writes one line per request, with its id
        timeout_graceful_shutdown=5,
        # Connection bounds (labs_api.ops.connections): a deadline for each request head and
        # a cap on open connections; uvicorn closes keep-alive connections idle past its timeout.
        http=guarded_protocol(settings.header_timeout, settings.max_connections),
        timeout_keep_alive=settings.keep_alive_timeout,
        ws="none",  # no WebSocket routes: an Upgrade request is served as plain HTTP
    )
