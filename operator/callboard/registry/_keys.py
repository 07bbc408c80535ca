"""The key layout in the store, in one place (private).

Only :mod:`callboard.registry` and its backends import this module (an import-linter
contract in ``pyproject.toml``): everything else asks the registry, so the layout can
change in one place.

The first two families are the documented Vision Agents layout and must not change: a
Vision Agents node sharing the same Redis and prefix reads and writes exactly these.
The others are callboard's own; Vision Agents nodes never look at them.

| key                                    | value                     | TTL          |
| -------------------------------------- | ------------------------- | ------------ |
| ``sessions/{call_id}/{session_id}``    | JSON SessionInfo          | ttl          |
| ``close_requests/{call_id}/{session_id}`` | empty                  | ttl          |
| ``nodes/{node_id}``                    | JSON NodeInfo             | ttl          |
| ``ended/{call_id}/{session_id}``       | JSON tombstone (reason)   | ENDED_TTL    |
| ``index/calls/{call_id}``              | set of session ids (Redis)| ttl, renewed |
| ``index/nodes/{node_id}``              | set of "call_id/session_id" (Redis) | ttl, renewed |
| ``index/digests/{node_id}``            | digest of that set's members (Redis) | ttl, renewed |
| ``index/node_ids``                     | sorted set of node ids, score 0 (Redis) | none; pruned when read |
| ``index/versions/{node_id}``           | version of that node's records and set (Redis) | ttl, renewed |
| ``start_requests/{node_id}/{request_id}`` | JSON StartRequest       | its expiry   |
| ``start_claims/{request_id}``          | claimed/started + claimant, or withdrawn | ENDED_TTL |
| ``start_results/{request_id}``         | JSON StartResult          | ENDED_TTL    |
| ``index/callboard_only``               | "1": the last scan found no foreign session | 2 scan intervals |
| ``leases/foreign_scan``                | node id of the one scanner | 2 scan intervals |
| ``drain_marks/{node_id}``              | JSON: who marked it, when | the operator's drain-mark TTL |
| ``operator/fence``                     | the leader's fencing token (an integer), only ever raised | none |

Store keys are given *without* the store's ``key_prefix`` (``vision_agents:`` by default);
the store adds it. Channel names for push notices are built here too.
"""

from __future__ import annotations

__all__ = [
    "CALL_INDEX_PREFIX",
    "CLOSE_CHANNEL_PREFIX",
    "CLOSE_PREFIX",
    "DRAIN_MARKS_PREFIX",
    "ENDED_PREFIX",
    "ENDED_TTL",
    "FENCE_KEY",
    "FOREIGN_SCAN_LEASE",
    "NODES_PREFIX",
    "NODE_DIGEST_PREFIX",
    "NODE_DIRECTORY",
    "NODE_INDEX_PREFIX",
    "NODE_VERSION_PREFIX",
    "NO_FOREIGN_MARKER",
    "SESSIONS_PREFIX",
    "START_CHANNEL_PREFIX",
    "START_CLAIMS_PREFIX",
    "START_REQUESTS_PREFIX",
    "START_RESULTS_PREFIX",
    "call_index_key",
    "close_channel",
    "close_key",
    "drain_mark_key",
    "ended_key",
    "node_digest_key",
    "node_index_key",
    "node_key",
    "node_version_key",
    "session_key",
    "split_session_key",
    "start_channel",
    "start_claim_key",
    "start_request_key",
    "start_result_key",
]

SESSIONS_PREFIX = "sessions/"
CLOSE_PREFIX = "close_requests/"
NODES_PREFIX = "nodes/"
ENDED_PREFIX = "ended/"
CALL_INDEX_PREFIX = "index/calls/"
NODE_INDEX_PREFIX = "index/nodes/"
NODE_DIGEST_PREFIX = "index/digests/"
#: A node's version: moved on (to a value it never had) by every script that writes one of
#: the node's session records or changes its index set, so the operator's sync read skips
#: the sessions of nodes whose version it already holds (``live_indexed.lua``).
NODE_VERSION_PREFIX = "index/versions/"
CLOSE_CHANNEL_PREFIX = "channels/close/"
START_CHANNEL_PREFIX = "channels/start/"
START_REQUESTS_PREFIX = "start_requests/"
START_RESULTS_PREFIX = "start_results/"
START_CLAIMS_PREFIX = "start_claims/"
#: A node the operator is about to remove (a scale-down victim): while the key lives the
#: node takes no new session (:mod:`callboard.registry.drain_marks`). Its TTL bounds how
#: long a dead operator can keep a node out of service.
DRAIN_MARKS_PREFIX = "drain_marks/"

#: Every node id that heartbeats (a Redis sorted set, score 0: ordered by id), so a paged
#: listing and the operator's sync read walk the nodes without a SCAN. The heartbeats add
#: their node at every beat; a paged or sync read prunes an entry whose node has neither a
#: record nor an index set.
NODE_DIRECTORY = "index/node_ids"

#: Set by the foreign scan when a whole scan found no session of a documented-layout
#: (Vision Agents) node, for two scan intervals. While it lives, per-call reads and limits
#: trust the indexes alone; without it (no scan yet, a scan found foreign sessions, the
#: scanner gone) they also scan the call's keys, as Vision Agents does.
NO_FOREIGN_MARKER = "index/callboard_only"
#: The lease of the one node that runs the foreign scan for the whole cluster.
FOREIGN_SCAN_LEASE = "leases/foreign_scan"

#: The fencing token of the operator's current leadership term (its Lease's
#: ``leaseTransitions``). The leader raises it before it sends anything (and again every
#: few seconds, so it comes back after a loss of data); a script only ever raises it.
#: Start and close requests carrying a lower token come from a deposed leader: nodes
#: refuse them (G8). No TTL: it must outlive any term.
FENCE_KEY = "operator/fence"

#: How long a tombstone of an ended session stays, in seconds: long enough for the operator
#: (which syncs every few seconds, or after a restart) to tell "ended" from "lost".
ENDED_TTL = 600.0


def session_key(call_id: str, session_id: str) -> str:
    return f"{SESSIONS_PREFIX}{call_id}/{session_id}"


def close_key(call_id: str, session_id: str) -> str:
    return f"{CLOSE_PREFIX}{call_id}/{session_id}"


def ended_key(call_id: str, session_id: str) -> str:
    return f"{ENDED_PREFIX}{call_id}/{session_id}"


def node_key(node_id: str) -> str:
    return f"{NODES_PREFIX}{node_id}"


def drain_mark_key(node_id: str) -> str:
    """The operator's mark on a node it is about to remove: no new session while it lives."""
    return f"{DRAIN_MARKS_PREFIX}{node_id}"


def call_index_key(call_id: str) -> str:
    return f"{CALL_INDEX_PREFIX}{call_id}"


def node_index_key(node_id: str) -> str:
    return f"{NODE_INDEX_PREFIX}{node_id}"


def node_digest_key(node_id: str) -> str:
    """The digest ("count:sum1:sum2") of a node index's members, kept by the scripts."""
    return f"{NODE_DIGEST_PREFIX}{node_id}"


def node_version_key(node_id: str) -> str:
    """The version of a node's session records and index set (see ``NODE_VERSION_PREFIX``)."""
    return f"{NODE_VERSION_PREFIX}{node_id}"


def close_channel(node_id: str) -> str:
    """The pub/sub channel on which a node receives close notices for its sessions."""
    return f"{CLOSE_CHANNEL_PREFIX}{node_id}"


def split_session_key(key: str, prefix: str = SESSIONS_PREFIX) -> tuple[str, str] | None:
    """``sessions/{call}/{session}`` → ``(call, session)``; None if the key has another shape."""
    if not key.startswith(prefix):
        return None
    parts = key[len(prefix) :].split("/")
    if len(parts) != 2 or not all(parts):
        return None
    return parts[0], parts[1]


def start_channel(node_id: str) -> str:
    """The pub/sub channel on which a node receives start requests."""
    return f"{START_CHANNEL_PREFIX}{node_id}"


def start_request_key(node_id: str, request_id: str) -> str:
    return f"{START_REQUESTS_PREFIX}{node_id}/{request_id}"


def start_result_key(request_id: str) -> str:
    return f"{START_RESULTS_PREFIX}{request_id}"


def start_claim_key(request_id: str) -> str:
    """Who claimed a start request, whether it started, or that it was withdrawn."""
    return f"{START_CLAIMS_PREFIX}{request_id}"
