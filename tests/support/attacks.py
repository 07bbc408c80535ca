"""What another pod of the cluster tries against an agent pod (issue 14, G11): every attempt must fail.

:func:`attack_agent_pod` runs the list and returns one :class:`Attempt` per attack, ``refused``
when the target held. It needs only httpx and redis-py (both in the callboard image), so this
file also runs on its own, as the e2e "second pod attacks" test does in an attacker pod::

    python attacks.py --pod-ip 10.1.2.3 --session-port 8555 --probe-port 8556 \
        --redis-url redis://cb-callboard-redis.ns.svc:6379/0 --victim CALL_ID/SESSION_ID

Two more attacks with their own options: ``--operator-ip`` tries the session routes of an
HTTP API on the operator pod's ports (liveness 8080, metrics 9090; the chart runs no
``callboard serve``); ``--registry-url`` is the registry *with* its password (a compromised
node's view), used to take over the victim's session as another node, which the registry's
ownership check must refuse (this one imports callboard, which the callboard image has).

It prints one JSON object per attempt and exits 0 only when every attack was refused.
Attacks that need the agent's cooperation to be noticed (an app that keeps working) are the
caller's to check: run the app's own traffic before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import asdict, dataclass

import httpx
import redis.asyncio
import redis.exceptions

__all__ = ["Attempt", "attack_agent_pod"]

#: Seconds an attempt may take: a NetworkPolicy drop looks like a timeout, which is a refusal.
TIMEOUT = 3.0


@dataclass(frozen=True)
class Attempt:
    """One attack and its outcome; ``refused`` means the target held."""

    name: str
    refused: bool
    detail: str


async def _http(client: httpx.AsyncClient, name: str, method: str, url: str, **kwargs: object) -> Attempt:
    try:
        response = await client.request(method, url, **kwargs)  # type: ignore[arg-type]
    except httpx.TransportError as exc:  # refused, reset or dropped: unreachable
        return Attempt(name, True, f"unreachable: {type(exc).__name__}")
    refused = response.status_code in (401, 403, 404, 405, 422)
    return Attempt(name, refused, f"HTTP {response.status_code}")


async def _leaks(client: httpx.AsyncClient, url: str, secrets: list[str]) -> Attempt:
    name = f"read session data from {url}"
    try:
        response = await client.get(url)
    except httpx.TransportError as exc:
        return Attempt(name, True, f"unreachable: {type(exc).__name__}")
    found = [s for s in secrets if s in response.text]
    return Attempt(name, not found, f"HTTP {response.status_code}, found {found}" if found else "no ids")


async def _redis(url: str, victim: tuple[str, str] | None, key_prefix: str) -> list[Attempt]:
    attempts = []
    client = redis.asyncio.from_url(url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
    call_id, session_id = victim or ("attacker-call", "attacker-session")
    writes = {
        "forge a node record in Redis": (f"{key_prefix}nodes/attacker", b'{"node_id": "attacker"}'),
        "take over a session record in Redis": (
            f"{key_prefix}sessions/{call_id}/{session_id}",
            json.dumps({"session_id": session_id, "call_id": call_id, "node_id": "attacker"}).encode(),
        ),
        "flag a session for closing in Redis": (f"{key_prefix}close_requests/{call_id}/{session_id}", b""),
    }
    try:
        for name, (key, value) in writes.items():
            try:
                await client.set(key, value, ex=30, nx=name.startswith("forge"))
                attempts.append(Attempt(name, False, f"wrote {key}"))
            except (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError) as exc:
                attempts.append(Attempt(name, True, f"refused: {exc}"))
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                attempts.append(Attempt(name, True, f"unreachable: {type(exc).__name__}"))
    finally:
        await client.aclose()
    return attempts


async def _operator(client: httpx.AsyncClient, operator_ip: str, ports: tuple[int, ...]) -> list[Attempt]:
    host = f"[{operator_ip}]" if ":" in operator_ip else operator_ip
    attempts = []
    for port in ports:
        base = f"http://{host}:{port}"
        attempts += [
            await _http(client, f"list sessions on the operator's :{port}", "GET", f"{base}/sessions"),
            await _http(
                client,
                f"start a session on the operator's :{port}",
                "POST",
                f"{base}/sessions",
                json={"call_id": "attacker-call", "call_type": "default"},
            ),
            await _http(
                client, f"close a call on the operator's :{port}", "DELETE", f"{base}/calls/any/sessions/any"
            ),
        ]
    return attempts


async def _take_over(registry_url: str, victim: tuple[str, str], key_prefix: str) -> Attempt:
    """Register the victim's session as another node, with the registry's password."""
    from callboard.errors import CallboardError, SessionConflictError
    from callboard.registry import RedisSessionKVStore, SessionRegistry

    name = "take over the victim's session through the registry as another node"
    registry = SessionRegistry(
        RedisSessionKVStore(url=registry_url, key_prefix=key_prefix), node_id="attacker", ttl=30
    )
    try:
        await registry.start()
        await registry.register(*victim)
    except SessionConflictError as exc:
        return Attempt(name, True, f"refused: {exc}")
    except CallboardError as exc:
        return Attempt(name, True, f"refused: {type(exc).__name__}: {exc}")
    finally:
        await registry.stop()
    return Attempt(name, False, "registered the victim's session as node attacker")


async def attack_agent_pod(
    *,
    pod_ip: str,
    session_port: int,
    probe_port: int,
    redis_url: str | None = None,
    victim: tuple[str, str] | None = None,
    key_prefix: str = "vision_agents:",
    operator_ip: str | None = None,
    operator_ports: tuple[int, ...] = (8080, 9090),
    registry_url: str | None = None,
) -> list[Attempt]:
    """Try, from outside the pod, everything issue 14 found open; one :class:`Attempt` each.

    ``pod_ip`` is the agent pod's address as other pods see it; ``victim`` a live session of
    that pod (its ids must not leak, it must not end); ``redis_url`` the registry's address
    *without* credentials (what an attacker knows), or None to skip the Redis attacks;
    ``operator_ip``/``registry_url``: see the module docstring (None skips them).
    """
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    session_api = f"http://{host}:{session_port}"
    probes = f"http://{host}:{probe_port}"
    call_id, session_id = victim or ("attacker-call", "attacker-session")
    register = {"call_id": "attacker-call", "session_id": "attacker-session"}
    attempts: list[Attempt] = []
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        for base in (session_api, probes):
            where = "session port" if base == session_api else "probe port"
            attempts += [
                await _http(
                    client, f"register a session on the {where}", "POST", f"{base}/v1/sessions", json=register
                ),
                await _http(
                    client,
                    f"end the victim's session on the {where}",
                    "DELETE",
                    f"{base}/v1/calls/{call_id}/sessions/{session_id}",
                ),
                await _http(client, f"list sessions on the {where}", "GET", f"{base}/v1/sessions"),
                await _http(
                    client, f"list start requests on the {where}", "GET", f"{base}/v1/start-requests"
                ),
                await _http(
                    client,
                    f"reject a start request on the {where}",
                    "POST",
                    f"{base}/v1/start-requests/any/reject",
                    json={"reason": "attacker"},
                ),
                await _http(client, f"open the event stream on the {where}", "GET", f"{base}/v1/events"),
            ]
        secrets = [call_id, session_id] if victim else []
        for path in ("/healthz", "/readyz", "/metrics"):
            attempts.append(await _leaks(client, f"{probes}{path}", secrets))
        if operator_ip is not None:
            attempts += await _operator(client, operator_ip, operator_ports)
    if redis_url is not None:
        attempts += await _redis(redis_url, victim, key_prefix)
    if registry_url is not None and victim is not None:
        attempts.append(await _take_over(registry_url, victim, key_prefix))
    return attempts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pod-ip", required=True)
    parser.add_argument("--session-port", type=int, default=8555)
    parser.add_argument("--probe-port", type=int, default=8556)
    parser.add_argument("--redis-url")
    parser.add_argument("--victim", help="CALL_ID/SESSION_ID of a live session of the pod")
    parser.add_argument("--key-prefix", default="vision_agents:")
    parser.add_argument("--operator-ip", help="the operator pod's address (its ports 8080 and 9090)")
    parser.add_argument(
        "--registry-url",
        default=os.environ.get("CALLBOARD_ATTACK_REGISTRY_URL"),
        help="the registry with its password (default $CALLBOARD_ATTACK_REGISTRY_URL)",
    )
    args = parser.parse_args(argv)
    victim = tuple(args.victim.split("/", 1)) if args.victim else None
    attempts = asyncio.run(
        attack_agent_pod(
            pod_ip=args.pod_ip,
            session_port=args.session_port,
            probe_port=args.probe_port,
            redis_url=args.redis_url,
            victim=victim,  # type: ignore[arg-type]
            key_prefix=args.key_prefix,
            operator_ip=args.operator_ip,
            registry_url=args.registry_url,
        )
    )
    for attempt in attempts:
        print(json.dumps(asdict(attempt)))
    return 0 if all(a.refused for a in attempts) else 1


if __name__ == "__main__":
    sys.exit(main())
