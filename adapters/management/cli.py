"""``manifold status|list|declare|delete|purge|publish|get|users|permissions|definitions|messages|
close``: the operator's command line, a client of the management API.

``broker/cli.py`` (which owns ``manifold serve``) loads this module by name. Connection options
(``--url``, ``--user``, ``--password``, ``--vhost``, ``--format``) come from the command line,
before or after the subcommand words, else from MANIFOLD_URL, MANIFOLD_USER, MANIFOLD_PASSWORD,
MANIFOLD_VHOST, else the local broker's defaults. Exit codes: see cli_client.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from typing import Any

from .cli_client import EXIT_PARTIAL, CliError, Client, quote
from .cli_output import Output

LISTABLE = ("queues", "exchanges", "bindings", "connections", "channels", "consumers", "users",
            "vhosts", "permissions", "streams")
DEFAULTS = {"url": ("MANIFOLD_URL", "http://127.0.0.1:15672"), "user": ("MANIFOLD_USER", "guest"),
            "password": ("MANIFOLD_PASSWORD", "guest"), "vhost": ("MANIFOLD_VHOST", "/"),
            "format": ("MANIFOLD_FORMAT", "table")}


def _connection_options(parser: argparse.ArgumentParser, top: bool) -> None:
    # On subcommands the default is SUPPRESS, so a value given before the subcommand words is
    # not overwritten by the subcommand's default (options work on either side).
    def default(name: str) -> Any:
        return None if top else argparse.SUPPRESS
    group = parser.add_argument_group("connection")
    group.add_argument("--url", default=default("url"),
                       help="management API URL (MANIFOLD_URL; http://127.0.0.1:15672)")
    group.add_argument("--user", "-u", default=default("user"), help="user (MANIFOLD_USER; guest)")
    group.add_argument("--password", "-p", default=default("password"),
                       help="password (MANIFOLD_PASSWORD; guest)")
    group.add_argument("--vhost", "-V", default=default("vhost"),
                       help="virtual host (MANIFOLD_VHOST; /)")
    group.add_argument("--format", "-f", choices=("table", "json"), default=default("format"),
                       help="table for people (default), json for scripts (MANIFOLD_FORMAT)")


def build_parser(prog: str = "manifold") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Manifold operations CLI (talks to "
                                     "the management API)")
    _connection_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, parent: Any = sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_text, description=help_text)
        _connection_options(p, top=False)
        return p

    command("status", "overview of the broker: totals, rates, listeners, alarms")
    p = command("list", "list objects")
    p.add_argument("kind", choices=LISTABLE)
    p.add_argument("--all-vhosts", action="store_true", help="every vhost, not only --vhost")

    declare = sub.add_parser("declare", help="declare a queue, exchange or binding")
    dsub = declare.add_subparsers(dest="kind", required=True)
    p = command("queue", "declare a queue", dsub)
    p.add_argument("name")
    p.add_argument("--transient", action="store_true", help="not durable")
    p.add_argument("--auto-delete", action="store_true")
    p.add_argument("--type", choices=("classic", "quorum", "stream"), default=None)
    p.add_argument("--arg", action="append", default=[], metavar="KEY=JSON",
                   help="queue argument, e.g. --arg x-max-length=1000")
    p = command("exchange", "declare an exchange", dsub)
    p.add_argument("name")
    p.add_argument("--type", default="direct", choices=("direct", "fanout", "topic", "headers"))
    p.add_argument("--transient", action="store_true")
    p.add_argument("--auto-delete", action="store_true")
    p.add_argument("--internal", action="store_true")
    p = command("binding", "bind a queue (or exchange) to an exchange", dsub)
    p.add_argument("source", help="exchange")
    p.add_argument("destination", help="queue or exchange")
    p.add_argument("--routing-key", "-k", default="")
    p.add_argument("--to-exchange", action="store_true", help="destination is an exchange")

    delete = sub.add_parser("delete", help="delete a queue, exchange or binding")
    xsub = delete.add_subparsers(dest="kind", required=True)
    p = command("queue", "delete a queue", xsub)
    p.add_argument("name")
    p.add_argument("--if-empty", action="store_true")
    p.add_argument("--if-unused", action="store_true")
    p = command("exchange", "delete an exchange", xsub)
    p.add_argument("name")
    p = command("binding", "delete a binding", xsub)
    p.add_argument("source")
    p.add_argument("destination")
    p.add_argument("--routing-key", "-k", default="")
    p.add_argument("--to-exchange", action="store_true")

    purge = sub.add_parser("purge", help="delete the ready messages of a queue")
    psub = purge.add_subparsers(dest="kind", required=True)
    p = command("queue", "purge a queue", psub)
    p.add_argument("name")

    p = command("publish", "publish one message")
    p.add_argument("--exchange", "-e", default="", help="exchange (default: the default exchange)")
    p.add_argument("--routing-key", "-k", required=True)
    body = p.add_mutually_exclusive_group()
    body.add_argument("--body", "-b", help="message body (default: read stdin)")
    body.add_argument("--file", help="read the body from this file")
    p.add_argument("--content-type")
    p.add_argument("--header", "-H", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--persistent", action="store_true", help="delivery_mode 2")

    p = command("get", "fetch messages from a queue")
    p.add_argument("queue")
    p.add_argument("--count", "-n", type=int, default=1)
    p.add_argument("--ack", action="store_true", help="remove them (default: requeue)")

    users = sub.add_parser("users", help="manage users")
    usub = users.add_subparsers(dest="action", required=True)
    command("list", "list users", usub)
    p = command("add", "add a user", usub)
    p.add_argument("name")
    p.add_argument("--new-password", "-P", required=True, dest="new_password")
    p.add_argument("--tags", default="", help="comma-separated: administrator, monitoring, "
                                              "management")
    p = command("delete", "delete a user", usub)
    p.add_argument("name")
    p = command("passwd", "change a user's password (keeps the tags)", usub)
    p.add_argument("name")
    p.add_argument("--new-password", "-P", required=True, dest="new_password")

    perms = sub.add_parser("permissions", help="vhost permissions")
    msub = perms.add_subparsers(dest="action", required=True)
    command("list", "list permissions", msub)
    p = command("set", "give a user access to --vhost", msub)
    p.add_argument("name", help="user")
    for what in ("configure", "write", "read"):
        p.add_argument(f"--{what}", default=".*")

    defs = sub.add_parser("definitions", help="export or import definitions (RabbitMQ format)")
    fsub = defs.add_subparsers(dest="action", required=True)
    p = command("export", "write the definitions to FILE (- for stdout)", fsub)
    p.add_argument("file")
    p = command("import", "load definitions from FILE (- for stdin)", fsub)
    p.add_argument("file")

    msgs = sub.add_parser("messages", help="copy messages to or from JSON lines")
    gsub = msgs.add_subparsers(dest="action", required=True)
    p = command("export", "write a queue's messages to FILE as JSON lines", gsub)
    p.add_argument("queue")
    p.add_argument("file")
    p.add_argument("--remove", action="store_true",
                   help="take the messages off the queue (in batches; default: leave them)")
    p = command("import", "publish FILE's messages to QUEUE in order", gsub)
    p.add_argument("file")
    p.add_argument("queue")

    close = sub.add_parser("close", help="close a client connection")
    csub = close.add_subparsers(dest="kind", required=True)
    p = command("connection", "close a connection by name (see `manifold list connections`)", csub)
    p.add_argument("name")
    p.add_argument("--reason", default="Closed via manifold CLI")
    return parser


def resolve(args: argparse.Namespace, environ: dict) -> argparse.Namespace:
    for key, (env, fallback) in DEFAULTS.items():
        if getattr(args, key, None) is None:
            setattr(args, key, environ.get(env) or fallback)
    return args


# ====================================================================== commands
def cmd_status(c: Client, out: Output, args: argparse.Namespace) -> int:
    o = c.get("/api/overview")
    if out.json:
        out.emit_json(o)
        return 0
    stats, totals, objects = o["message_stats"], o["queue_totals"], o["object_totals"]
    try:
        alarms = c.get("/api/health/checks/alarms")
    except CliError as exc:  # 503 while an alarm is set
        alarms = {"status": f"ALARM ({exc})"}
    out.pairs(f"{o['product_name']} {o['product_version']} at {c.url}", [
        ("messages", f"{totals['messages']} ({totals['messages_ready']} ready, "
                     f"{totals['messages_unacknowledged']} unacked)"),
        ("publish", f"{stats['publish_details']['rate']:.1f} msg/s"),
        ("deliver/get", f"{stats['deliver_get_details']['rate']:.1f} msg/s"),
        ("ack", f"{stats['ack_details']['rate']:.1f} msg/s"),
        ("objects", f"{objects['queues']} queues, {objects['exchanges']} exchanges, "
                    f"{objects['connections']} connections, {objects['consumers']} consumers"),
        ("memory", f"{o['memory']['used'] / 1048576:.1f} MiB used, "
                   f"{o['memory']['message_bodies'] / 1048576:.1f} MiB message bodies"),
        ("alarms", alarms.get("status", "?")),
        ("listeners", ", ".join(f"{l['protocol']}:{l['port']}" for l in o["listeners"])),
    ])
    return 0


def cmd_list(c: Client, out: Output, args: argparse.Namespace) -> int:
    kind = args.kind
    path = {"streams": "/api/manifold/streams"}.get(kind, f"/api/{kind}")
    per_vhost = kind in ("queues", "exchanges", "bindings", "consumers", "streams")
    if per_vhost and not args.all_vhosts:
        path += f"/{quote(args.vhost)}"
    out.table(kind, c.get(path))
    return 0


def _arguments(pairs: list[str]) -> dict:
    arguments = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise CliError(f"--arg '{pair}' is not KEY=VALUE (e.g. x-max-length=1000)", 2)
        try:
            arguments[key] = json.loads(value)
        except ValueError:
            arguments[key] = value
    return arguments


def cmd_declare(c: Client, out: Output, args: argparse.Namespace) -> int:
    vh = quote(args.vhost)
    if args.kind == "queue":
        arguments = _arguments(args.arg)
        if args.type:
            arguments["x-queue-type"] = args.type
        c.request("PUT", f"/api/queues/{vh}/{quote(args.name)}",
                  {"durable": not args.transient, "auto_delete": args.auto_delete,
                   "arguments": arguments})
        out.done(f"queue '{args.name}' declared in vhost '{args.vhost}'",
                 {"name": args.name, "vhost": args.vhost})
    elif args.kind == "exchange":
        c.request("PUT", f"/api/exchanges/{vh}/{quote(args.name)}",
                  {"type": args.type, "durable": not args.transient,
                   "auto_delete": args.auto_delete, "internal": args.internal, "arguments": {}})
        out.done(f"exchange '{args.name}' ({args.type}) declared",
                 {"name": args.name, "vhost": args.vhost, "type": args.type})
    else:
        kind = "e" if args.to_exchange else "q"
        c.request("POST", f"/api/bindings/{vh}/e/{quote(args.source)}/{kind}/"
                          f"{quote(args.destination)}", {"routing_key": args.routing_key,
                                                          "arguments": {}})
        out.done(f"bound '{args.destination}' to '{args.source}' with key "
                 f"'{args.routing_key}'", {"source": args.source,
                                          "destination": args.destination,
                                          "routing_key": args.routing_key})
    return 0


def cmd_delete(c: Client, out: Output, args: argparse.Namespace) -> int:
    vh = quote(args.vhost)
    if args.kind == "queue":
        query = "&".join(f"{k}=true" for k, on in (("if-empty", args.if_empty),
                                                    ("if-unused", args.if_unused)) if on)
        c.request("DELETE", f"/api/queues/{vh}/{quote(args.name)}" + (f"?{query}" if query
                                                                       else ""))
    elif args.kind == "exchange":
        c.request("DELETE", f"/api/exchanges/{vh}/{quote(args.name)}")
    else:
        kind = "e" if args.to_exchange else "q"
        props = args.routing_key.replace("%", "%25").replace("/", "%2F") or "~"
        c.request("DELETE", f"/api/bindings/{vh}/e/{quote(args.source)}/{kind}/"
                            f"{quote(args.destination)}/{quote(props)}")
    name = getattr(args, "name", None) or f"{args.source} -> {args.destination}"
    out.done(f"{args.kind} '{name}' deleted", {"deleted": args.kind, "name": name})
    return 0


def cmd_purge(c: Client, out: Output, args: argparse.Namespace) -> int:
    path = f"/api/queues/{quote(args.vhost)}/{quote(args.name)}"
    before = c.get(path).get("messages_ready", 0)
    c.request("DELETE", path + "/contents")
    out.done(f"queue '{args.name}' purged ({before} ready messages removed)",
             {"name": args.name, "vhost": args.vhost, "message_count": before})
    return 0


def _publish_body(payload: bytes, routing_key: str, properties: dict) -> dict:
    try:
        return {"routing_key": routing_key, "properties": properties,
                "payload": payload.decode("utf-8"), "payload_encoding": "string"}
    except UnicodeDecodeError:
        return {"routing_key": routing_key, "properties": properties,
                "payload": base64.b64encode(payload).decode(), "payload_encoding": "base64"}


def cmd_publish(c: Client, out: Output, args: argparse.Namespace) -> int:
    if args.body is not None:
        payload = args.body.encode()
    elif args.file:
        with open(args.file, "rb") as fh:
            payload = fh.read()
    else:
        payload = sys.stdin.buffer.read()
    properties: dict[str, Any] = {}
    if args.content_type:
        properties["content_type"] = args.content_type
    if args.persistent:
        properties["delivery_mode"] = 2
    if args.header:
        properties["headers"] = dict(h.partition("=")[::2] for h in args.header)
    result = c.request("POST", f"/api/exchanges/{quote(args.vhost)}/"
                               f"{quote(args.exchange or 'amq.default')}/publish",
                       _publish_body(payload, args.routing_key, properties))
    if out.json:
        out.emit_json(result)
    elif result.get("routed"):
        out.done("message published")
    else:
        out.warn("message published but not routed to any queue")
    return 0


def cmd_get(c: Client, out: Output, args: argparse.Namespace) -> int:
    messages = c.request("POST", f"/api/queues/{quote(args.vhost)}/{quote(args.queue)}/get",
                         {"count": args.count, "encoding": "auto",
                          "ackmode": "ack_requeue_false" if args.ack else "ack_requeue_true"})
    out.table("messages", [{"routing_key": m["routing_key"], "exchange": m["exchange"],
                            "payload": m["payload"], "payload_encoding": m["payload_encoding"],
                            "redelivered": m["redelivered"],
                            "message_count": m["message_count"]} for m in messages]
              if not out.json else messages)
    return 0


def cmd_users(c: Client, out: Output, args: argparse.Namespace) -> int:
    if args.action == "list":
        out.table("users", c.get("/api/users"))
        return 0
    path = f"/api/users/{quote(args.name)}"
    if args.action == "delete":
        c.request("DELETE", path)
        out.done(f"user '{args.name}' deleted", {"name": args.name})
        return 0
    tags = args.tags if args.action == "add" else ",".join(c.get(path).get("tags", []))
    c.request("PUT", path, {"password": args.new_password, "tags": tags})
    out.done(f"user '{args.name}' {'added' if args.action == 'add' else 'password changed'}",
             {"name": args.name, "tags": [t for t in tags.split(",") if t]})
    return 0


def cmd_permissions(c: Client, out: Output, args: argparse.Namespace) -> int:
    if args.action == "list":
        out.table("permissions", c.get("/api/permissions"))
        return 0
    body = {"configure": args.configure, "write": args.write, "read": args.read}
    c.request("PUT", f"/api/permissions/{quote(args.vhost)}/{quote(args.name)}", body)
    out.done(f"user '{args.name}' may use vhost '{args.vhost}'",
             {"user": args.name, "vhost": args.vhost, **body})
    return 0


def cmd_definitions(c: Client, out: Output, args: argparse.Namespace) -> int:
    if args.action == "export":
        doc = c.get("/api/definitions")
        text = json.dumps(doc, indent=2) + "\n"
        if args.file == "-":
            sys.stdout.write(text)
        else:
            with open(args.file, "w") as fh:
                fh.write(text)
            out.done(f"definitions written to {args.file}: {len(doc['queues'])} queues, "
                     f"{len(doc['exchanges'])} exchanges, {len(doc['bindings'])} bindings, "
                     f"{len(doc['users'])} users", {"file": args.file})
        return 0
    try:
        raw = sys.stdin.read() if args.file == "-" else open(args.file).read()
        doc = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read definitions from {args.file}: {exc}")
    report = c.request("POST", "/api/definitions", doc)
    if out.json:
        out.emit_json(report)
    else:
        counts = ", ".join(f"{n} {k}" for k, n in report["imported"].items()) or "nothing"
        out.done(f"imported {counts}")
        for item in report["not_honoured"]:
            out.warn(f"not honoured: {item}")
    return EXIT_PARTIAL if report["not_honoured"] else 0


def cmd_messages(c: Client, out: Output, args: argparse.Namespace) -> int:
    from .cli_messages import export_messages, import_messages
    if args.action == "export":
        return export_messages(c, out, args)
    return import_messages(c, out, args)


def cmd_close(c: Client, out: Output, args: argparse.Namespace) -> int:
    c.request("DELETE", f"/api/connections/{quote(args.name)}", headers={"X-Reason": args.reason})
    out.done(f"connection '{args.name}' closed", {"name": args.name, "reason": args.reason})
    return 0


COMMANDS = {"status": cmd_status, "list": cmd_list, "declare": cmd_declare,
            "delete": cmd_delete, "purge": cmd_purge, "publish": cmd_publish, "get": cmd_get,
            "users": cmd_users, "permissions": cmd_permissions, "definitions": cmd_definitions,
            "messages": cmd_messages, "close": cmd_close}


def main(argv: list[str] | None = None, prog: str = "manifold") -> int:
    args = resolve(build_parser(prog).parse_args(argv), dict(os.environ))
    out = Output(args.format)
    client = Client(args.url, args.user, args.password)
    try:
        return COMMANDS[args.command](client, out, args)
    except CliError as exc:
        out.error(str(exc))
        return exc.code
    except KeyboardInterrupt:
        out.error("interrupted")
        return 130
