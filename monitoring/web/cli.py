"""`lsq monitor`: the web monitor on its own over the data directory. aiohttp is imported only when it runs, so
`lsq status` and the other commands stay quick."""

from __future__ import annotations

import argparse
import sys

from lsq.config import load_config


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("monitor", help="serve the web monitor (default http://127.0.0.1:8080)")
    parser.add_argument("--host", help="interface to bind (default monitor.host); beyond loopback needs a token")
    parser.add_argument("--port", type=_port, help="port (default monitor.port)")
    parser.set_defaults(func=run_monitor)


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 1 to 65535, got {text!r}")
    return int(text)


def run_monitor(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    host = args.host or settings.monitor.host
    port = args.port if args.port is not None else settings.monitor.port
    monitor = settings.monitor.model_copy(update={"host": host, "port": port})
    token = monitor.token.get_secret_value() if monitor.token else ""
    if not monitor.loopback_only and not token:
        print(
            f"lsq monitor: binding {host} (beyond loopback) needs a token: set LSQ_MONITOR_TOKEN or monitor.token",
            file=sys.stderr,
        )
        return 2
    from aiohttp import web

    from monitoring.web.app import AccessLogger, build_app

    app = build_app(settings, token=token)
    print(f"lsq monitor: http://{host}:{port}/ over {settings.data_dir}" + (" (token required)" if token else ""))
    try:
        web.run_app(app, host=host, port=port, print=None, access_log_class=AccessLogger)
    except OSError as exc:
        print(f"lsq monitor: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
