"""The session registry: stores, records and the registry itself."""

from callboard.registry.factory import store_from_url
from callboard.registry.ids import MAX_ID_LENGTH, validate_id
from callboard.registry.index import KVSessionIndex, SessionIndex
from callboard.registry.memory import InMemorySessionKVStore
from callboard.registry.models import (
    EndedInfo,
    NodeInfo,
    SessionInfo,
    SessionStatus,
    StartRequest,
    StartResult,
)
from callboard.registry.redis_store import DEFAULT_KEY_PREFIX, RedisSessionKVStore
from callboard.registry.registry import (
    CloseRequest,
    EventStream,
    SessionRegistry,
    generate_node_id,
)
from callboard.registry.store import (
    PubSubSupport,
    SessionIndexSupport,
    SessionKVStore,
    Subscription,
)

__all__ = [
    "DEFAULT_KEY_PREFIX",
    "MAX_ID_LENGTH",
    "CloseRequest",
    "EndedInfo",
    "EventStream",
    "InMemorySessionKVStore",
    "KVSessionIndex",
    "NodeInfo",
    "PubSubSupport",
    "RedisSessionKVStore",
    "SessionIndex",
    "SessionIndexSupport",
    "SessionInfo",
    "SessionKVStore",
    "SessionRegistry",
    "SessionStatus",
    "StartRequest",
    "StartResult",
    "Subscription",
    "generate_node_id",
    "store_from_url",
    "validate_id",
]
