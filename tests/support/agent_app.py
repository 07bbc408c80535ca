"""A Python agent app for the sidecar tests, built on :class:`callboard.sidecar.SidecarClient`.

Run as ``python -m tests.support.agent_app --sidecar URL [options]`` from the
repository root. It follows the event stream and reacts as a real agent server would
(close → end the session; start → accept or reject; drain → end or keep its sessions), takes
commands as JSON lines on stdin (``{"op": "register", "call_id": ..., "session_id": ...}``,
``end``, ``metrics``), and reports everything as JSON lines on stdout. With
``--health-port`` it also serves ``GET /health`` (200) for the sidecar's app probe.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from callboard.errors import CallboardError
from callboard.sidecar import SidecarClient, SidecarEvent


def out(kind: str, **fields: Any) -> None:
    print(json.dumps({"kind": kind, **fields}), flush=True)


async def serve_health(port: int) -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", port)


async def on_event(client: SidecarClient, event: SidecarEvent, args: argparse.Namespace) -> None:
    out("event", type=event.type, data=event.data, id=event.id)
    if event.type == "close_requested" and args.on_close == "end":
        assert event.call_id is not None and event.session_id is not None
        known = await client.end(event.call_id, event.session_id, reason=args.close_reason)
        out("ended", call_id=event.call_id, session_id=event.session_id, known=known)
    elif event.type == "start_requested":
        try:
            if args.on_start == "accept":
                await asyncio.sleep(args.accept_delay)  # e.g. it joins the call before registering
                session = await client.accept(event)
                out("accepted", request_id=event.request_id, session_id=session["session_id"])
            else:
                await client.reject(event, args.reject_reason)
                out("rejected", request_id=event.request_id)
        except CallboardError as exc:
            out("error", op="start", request_id=event.request_id, error=type(exc).__name__, detail=str(exc))
    elif event.type == "drain" and args.on_drain == "end":
        for live in client.live_sessions:
            await client.end(live.call_id, live.session_id, reason="drained")
            out("ended", call_id=live.call_id, session_id=live.session_id, known=True)


async def follow(client: SidecarClient, args: argparse.Namespace) -> None:
    async for event in client.events():
        await on_event(client, event, args)


async def command(client: SidecarClient, cmd: dict[str, Any]) -> None:
    op = cmd.pop("op")
    try:
        if op == "register":
            session = await client.register(cmd["call_id"], cmd["session_id"], metrics=cmd.get("metrics"))
            out("registered", **session)
        elif op == "end":
            known = await client.end(cmd["call_id"], cmd["session_id"], reason=cmd.get("reason", "finished"))
            out("ended", call_id=cmd["call_id"], session_id=cmd["session_id"], known=known)
        elif op == "metrics":
            await client.update_metrics(cmd["call_id"], cmd["session_id"], cmd["metrics"])
            out("metrics", call_id=cmd["call_id"], session_id=cmd["session_id"])
        else:
            out("error", op=op, error="UnknownCommand", detail=op)
    except CallboardError as exc:
        out("error", op=op, error=type(exc).__name__, detail=str(exc), **cmd)


async def read_commands(client: SidecarClient) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async for line in reader:
        if line.strip():
            await command(client, json.loads(line))


async def main(args: argparse.Namespace) -> None:
    health = await serve_health(args.health_port) if args.health_port else None
    instance = {} if args.instance_id == "process" else {"instance_id": None}
    async with SidecarClient(
        args.sidecar, retry_timeout=30, reconnect_base=0.05, reconnect_cap=0.5, **instance
    ) as client:
        out("started")
        try:
            await asyncio.gather(follow(client, args), read_commands(client))
        finally:
            if health is not None:
                health.close()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sidecar", required=True, help="the sidecar's base URL")
    parser.add_argument("--health-port", type=int, default=0, help="serve GET /health here")
    parser.add_argument(
        "--instance-id",
        choices=["process", "none"],
        default="process",
        help="send this process's app instance id (a new process is a restarted app), or none "
        "(a second reader of the same app, which must not count as a restart)",
    )
    parser.add_argument("--on-start", choices=["accept", "reject"], default="accept")
    parser.add_argument("--reject-reason", default="not-today")
    parser.add_argument("--accept-delay", type=float, default=0.0, help="seconds before accepting a start")
    parser.add_argument("--on-close", choices=["end", "ignore"], default="end")
    parser.add_argument("--close-reason", default="closed-by-request")
    parser.add_argument("--on-drain", choices=["end", "ignore"], default="ignore")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse(sys.argv[1:])))
