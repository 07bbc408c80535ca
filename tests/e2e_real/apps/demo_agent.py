"""The demo's simulated agent as a real agent app, for the real-node tier's agent pods.

It runs in the agent container of the chart's agent pool, beside the real ``callboard
sidecar``, and talks to it only through the sidecar API (``CALLBOARD_SIDECAR_URL``, set by
the chart), as a user's agent server would:

- ``start_requested`` → accept, and put a :class:`~callboard.demo.agent.SimulatedAgent` on
  the call (``DEMO_CALL_SECONDS`` ends it by itself; default: until closed);
- ``close_requested`` → stop that agent and end its session (reason ``closed``);
- ``drain`` → nothing by default: calls finish where they are (``DEMO_END_ON_DRAIN=1`` ends
  them at once);
- a restart needs nothing of it: :class:`SidecarClient` sends this process's instance id
  (``Callboard-App-Instance``), so the sidecar removes the sessions of the previous run
  (reason ``app_restarted``) at the restarted container's first call;
- SIGTERM → end every live session through the sidecar (reason ``shutdown``), then exit 0:
  the last ``DELETE`` must reach a live sidecar, which is what the pod's container order
  is for.

With ``DEMO_HEALTH_PORT`` it answers ``GET /health`` there (the sidecar's app probe, chart
value ``agentPool.agent.health.port``), so a killed agent container is noticed.

Every step is one JSON line on stdout, so ``kubectl logs <pod> -c agent`` shows it and the
tests read it from there.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from typing import Any

from callboard.demo.agent import SimulatedAgent
from callboard.errors import CallboardError
from callboard.sidecar import SidecarClient, SidecarEvent


def say(kind: str, **fields: Any) -> None:
    print(json.dumps({"kind": kind, "t": round(time.time(), 3), **fields}), flush=True)


class DemoAgentApp:
    """One agent server: many calls, one simulated agent each."""

    def __init__(self, client: SidecarClient) -> None:
        self.client = client
        self.calls: dict[tuple[str, str], asyncio.Task[None]] = {}
        call_seconds = os.environ.get("DEMO_CALL_SECONDS")
        self.call_seconds = float(call_seconds) if call_seconds else None
        self.end_on_drain = os.environ.get("DEMO_END_ON_DRAIN") == "1"

    async def on_event(self, event: SidecarEvent) -> None:
        say("event", type=event.type, data=event.data)
        if event.type == "start_requested":
            try:
                session = await self.client.accept(event)
            except CallboardError as exc:
                say("start-failed", request_id=event.request_id, error=type(exc).__name__, detail=str(exc))
                return
            call_id, session_id = session["call_id"], session["session_id"]
            say("accepted", call_id=call_id, session_id=session_id, request_id=event.request_id)
            agent = SimulatedAgent(call_duration=self.call_seconds, agent_id=session_id)
            task = asyncio.create_task(self._on_call(agent, call_id, session_id), name=f"call-{call_id}")
            self.calls[(call_id, session_id)] = task
        elif event.type == "close_requested" and event.call_id and event.session_id:
            await self.end(event.call_id, event.session_id, "closed")
        elif event.type == "drain" and self.end_on_drain:
            for call_id, session_id in list(self.calls):
                await self.end(call_id, session_id, "drained")

    async def _on_call(self, agent: SimulatedAgent, call_type_id: str, session_id: str) -> None:
        await agent.run("default", call_type_id)
        say("call-over", call_id=call_type_id, session_id=session_id, metrics=agent.metrics)
        self.calls.pop((call_type_id, session_id), None)
        await self._end_session(call_type_id, session_id, "completed")

    async def end(self, call_id: str, session_id: str, reason: str) -> None:
        task = self.calls.pop((call_id, session_id), None)
        if task is not None:
            task.cancel()
        await self._end_session(call_id, session_id, reason)

    async def _end_session(self, call_id: str, session_id: str, reason: str) -> None:
        try:
            known = await self.client.end(call_id, session_id, reason=reason)
        except CallboardError as exc:
            say("end-failed", call_id=call_id, session_id=session_id, error=type(exc).__name__)
            return
        say("ended", call_id=call_id, session_id=session_id, reason=reason, known=known)

    async def shutdown(self) -> None:
        say("sigterm", live=len(self.calls))
        for call_id, session_id in list(self.calls):
            await self.end(call_id, session_id, "shutdown")
        say("exiting")

    async def follow(self) -> None:
        async for event in self.client.events():
            await self.on_event(event)


async def serve_health(port: int) -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", port)


async def main() -> int:
    url = os.environ.get("CALLBOARD_SIDECAR_URL", "http://127.0.0.1:8555")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    health_port = int(os.environ.get("DEMO_HEALTH_PORT") or 0)
    health = await serve_health(health_port) if health_port else None
    async with SidecarClient(url, retry_timeout=60, reconnect_base=0.1, reconnect_cap=1.0) as client:
        app = DemoAgentApp(client)
        say("started", sidecar=url, pod=os.environ.get("HOSTNAME", ""), instance=client.instance_id)
        follower = asyncio.create_task(app.follow(), name="follow")
        stopper = asyncio.create_task(stop.wait(), name="stop")
        done, _ = await asyncio.wait({follower, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if follower in done:
            follower.result()  # the stream ended: raise what ended it
            return 1
        await app.shutdown()
        follower.cancel()
    if health is not None:
        health.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
