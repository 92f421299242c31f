"""``manifold``: the command line. ``manifold serve`` runs the daemon on embedded defaults.

The operations subcommands (``status``, ``list``, ``declare``, ...) are a client of the management
API and live in the management adapter; like broker/service.py, this module finds that package by
name, so the core never imports an adapter.
"""
from __future__ import annotations

import argparse
import asyncio
import getpass
import importlib
import importlib.util
import sys
from typing import Any

from manifold.config.settings import ConfigError, load

from .access import hash_password
from .logs import configure_logging
from .service import Service


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="manifold", description="Manifold message broker",
        epilog="Operations (a client of the management API): manifold status | list | declare "
               "| delete | purge | publish | get | users | permissions | definitions | "
               "messages | close; see manifold COMMAND --help.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the broker daemon")
    serve.add_argument("--config", metavar="FILE", help="TOML configuration file")
    serve.add_argument("--data-dir", metavar="DIR", help="where durable data lives "
                       "(default ./manifold-data)")
    serve.add_argument("--bind", metavar="ADDR", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--amqp-port", type=int, metavar="PORT", help="AMQP 0-9-1 port (5672)")
    serve.add_argument("--mqtt-port", type=int, metavar="PORT", help="MQTT port (1883)")
    serve.add_argument("--stomp-port", type=int, metavar="PORT", help="STOMP port (61613)")
    serve.add_argument("--http-port", type=int, metavar="PORT",
                       help="AWS APIs: SQS, SNS, Kinesis, Firehose, S3 (4566; 0 disables)")
    serve.add_argument("--management-port", type=int, metavar="PORT",
                       help="management API, /metrics and dashboard (15672; 0 disables)")
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    serve.add_argument("--smtp-url", metavar="URL",
                       help="SMTP relay for SNS email subscriptions, smtp://HOST:PORT")
    serve.add_argument("--log-format", choices=("text", "json"), default="text",
                       help="json: one JSON object per line, with the fields of each event")
    serve.add_argument("--tls-cert", metavar="FILE", help="PEM certificate (chain): opens the "
                       "TLS listeners beside the plaintext ones")
    serve.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    serve.add_argument("--tls-ca", metavar="FILE", help="PEM CA bundle client certificates are "
                       "verified against")
    for name, default in (("amqps", 5671), ("mqtts", 8883), ("stomps", 61614), ("wss", 15676)):
        serve.add_argument(f"--{name}-port", type=int, metavar="PORT",
                           help=f"{name} port with a certificate ({default}; 0 disables)")
    serve.add_argument("--ws-port", type=int, metavar="PORT",
                       help="MQTT and STOMP over WebSocket (15675; 0 disables)")
    sub.add_parser("hash-password", help="print a password hash for [[users]] password_hash "
                   "(prompts on a terminal, else reads one line from stdin)")
    return parser


def hash_password_command() -> int:
    """Prompt (or read stdin), print the scrypt hash as the last word on stdout."""
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("manifold: the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("manifold: empty password", file=sys.stderr)
        return 1
    print(f"password_hash: {hash_password(password)}")
    return 0


OPS_MODULE = "manifold.adapters.management.cli"
#: options of the operations CLI that take a value (to find the first subcommand word)
_OPS_VALUE_OPTIONS = {"--url", "--user", "-u", "--password", "-p", "--vhost", "-V", "--format",
                      "-f"}


def operations_cli() -> Any | None:
    if importlib.util.find_spec(OPS_MODULE) is None:
        return None
    return importlib.import_module(OPS_MODULE)


def first_word(argv: list[str]) -> str | None:
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in _OPS_VALUE_OPTIONS:
            skip = True
        elif not token.startswith("-"):
            return token
    return None


def settings_from_args(args: argparse.Namespace):
    settings = load(args.config)
    server = {k: v for k, v in (("data_dir", args.data_dir), ("bind", args.bind),
                                ("log_level", args.log_level)) if v is not None}
    if server:
        settings = settings.replace("server", **server)
    for listener in ("amqp", "mqtt", "stomp"):
        port = getattr(args, f"{listener}_port")
        if port is not None:
            settings = settings.replace(listener, port=port)
    tls = {k: v for k, v in (("cert_file", args.tls_cert), ("key_file", args.tls_key),
                             ("ca_file", args.tls_ca)) if v is not None}
    tls.update({f"{name}_port": getattr(args, f"{name}_port")
                for name in ("amqps", "mqtts", "stomps", "wss")
                if getattr(args, f"{name}_port") is not None})
    if tls:
        settings = settings.replace("tls", **tls)
    if args.ws_port is not None:
        settings = settings.replace("websocket", port=args.ws_port, enabled=args.ws_port != 0)
    if args.smtp_url is not None:
        settings = settings.replace("sns", smtp_url=args.smtp_url)
    for listener in ("http", "management"):  # port 0 here disables, as in the docs
        port = getattr(args, f"{listener}_port")
        if port is not None:
            settings = settings.replace(listener, port=port, enabled=port != 0)
    return settings


def install_event_loop_policy() -> None:
    try:
        import uvloop
    except ImportError:  # uvloop is optional where it cannot be built
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = first_word(argv)
    if command is not None and command != "serve":
        ops = operations_cli()
        if ops is not None and command in ops.COMMANDS:
            return ops.main(argv)
    args = build_parser().parse_args(argv)
    if args.command == "hash-password":
        return hash_password_command()
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        print(f"manifold: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.server.log_level, args.log_format)
    install_event_loop_policy()
    try:
        asyncio.run(Service(settings).run_until_signal())
    except OSError as exc:
        print(f"manifold: cannot start: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:  # found while starting (user table, TLS files)
        print(f"manifold: configuration error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
