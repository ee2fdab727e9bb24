"""Command line: `fanout serve`, `fanout check-config`, `fanout publish`."""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__, config, gcpolicy, logs

log = logging.getLogger("fanout.cli")

EXIT_OK = 0
EXIT_STARTUP = 1
EXIT_USAGE = 2


def _load(path: str | None) -> config.Config:
    # No file: the embedded defaults, which are also what config.toml spells out.
    return config.load(path) if path else config.Config()


def _serve(args: argparse.Namespace) -> int:
    import uvloop

    from .daemon import StartupError
    from .server import serve

    try:
        cfg = _load(args.config)
    except config.ConfigError as exc:
        print(f"fanout: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    logs.setup(args.log_level or cfg.log.level)
    gcpolicy.tune()
    try:
        uvloop.run(serve(cfg, config_path=args.config, log_level=args.log_level))
    except StartupError as exc:
        log.error("%s", exc)
        return EXIT_STARTUP
    return EXIT_OK


def _worker(args: argparse.Namespace) -> int:
    import uvloop

    from . import worker
    from .daemon import StartupError

    gcpolicy.tune()
    try:
        uvloop.run(worker.run(args.link_fd))
    except StartupError as exc:
        log.error("%s", exc)
        return EXIT_STARTUP
    return EXIT_OK


def _check_config(args: argparse.Namespace) -> int:
    try:
        config.load(args.path)
    except config.ConfigError as exc:
        print(f"fanout: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    print(f"{args.path}: ok")
    return EXIT_OK


def _publish(args: argparse.Namespace) -> int:
    import orjson

    from .client import Publisher, PublishError

    try:
        data = orjson.loads(args.data)
    except orjson.JSONDecodeError as exc:
        print(f"fanout: --data is not valid JSON: {exc}", file=sys.stderr)
        return EXIT_USAGE
    socket_path = args.socket or _load(args.config).control.socket
    try:
        with Publisher(socket_path) as publisher:
            if args.broadcast:
                result = publisher.broadcast(data, event=args.event)
            elif args.user and not args.topic:
                result = publisher.notify(args.user, data, event=args.event)
            else:
                result = publisher.publish(args.topic, data, event=args.event, user=args.user)
    except (PublishError, OSError) as exc:
        print(f"fanout: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    print(orjson.dumps(result).decode())
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fanout",
        description="Server-Sent Events fan-out daemon.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"fanout {__version__}")
    sub = p.add_subparsers(dest="command")

    serve = sub.add_parser(
        "serve",
        help="run the daemon (the default command)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    serve.add_argument("-c", "--config", help="TOML config file (default: built-in defaults)")
    serve.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error", "critical"],
        help="overrides [log] level",
    )
    serve.set_defaults(func=_serve)

    # Started by the supervisor with workers > 1; not for people.
    worker = sub.add_parser("_worker")
    worker.add_argument("--link-fd", type=int, required=True)
    worker.set_defaults(func=_worker)

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("path")
    check.set_defaults(func=_check_config)

    pub = sub.add_parser(
        "publish",
        help="publish one event over the control socket",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    pub.add_argument("--topic", help="topic to publish to")
    pub.add_argument("--event", default="message", help="SSE event name")
    pub.add_argument("--data", default="null", help="event data, as JSON")
    pub.add_argument("--user", help="only this user's connections (with --topic), or notify")
    pub.add_argument("--broadcast", action="store_true", help="send to every connection")
    pub.add_argument("--socket", help="control socket (default: from --config or built-in)")
    pub.add_argument("-c", "--config", help="config file to read the control socket from")
    pub.set_defaults(func=_publish)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.command is None:
        args = p.parse_args(["serve", *(argv if argv is not None else sys.argv[1:])])
    if args.command == "publish" and not (args.topic or args.user or args.broadcast):
        p.error("publish needs --topic, --user or --broadcast")
    code: int = args.func(args)
    return code
