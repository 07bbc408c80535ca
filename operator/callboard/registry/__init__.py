"""The session registry: stores, records and the registry itself.

Layout (each file's name says what changes there):

- ``models.py`` records on the wire and the wire vocabulary (``EndReason``,
  ``StartRejection``); ``admission.py`` the admission check; ``ids.py`` id rules;
- ``registry.py`` :class:`SessionRegistry`, assembled from ``records.py`` (records and
  heartbeat), ``push.py`` (close requests, push streams), ``start_requests.py`` and
  ``fencing.py`` (the operator leader's fence) and ``foreign.py`` (the foreign scan),
  over the shared state in ``_core.py``; ``paging.py`` the paged listing's order, cursor and
  semantics;
- ``store.py`` the store interface; ``index.py`` the multi-key operations; ``backends/``
  the stores (``memory.py``, ``redis.py``, ``redis_index.py`` + ``lua/``); ``factory.py``
  the URL factory; ``_keys.py`` the private key layout.
"""

from callboard.registry.admission import admission_error, check_admission, rejection_for
from callboard.registry.backends.memory import InMemorySessionKVStore
from callboard.registry.backends.redis import DEFAULT_KEY_PREFIX, RedisSessionKVStore
from callboard.registry.factory import store_from_url
from callboard.registry.ids import MAX_ID_LENGTH, validate_id
from callboard.registry.index import KVSessionIndex, SessionIndex
from callboard.registry.models import (
    EndedInfo,
    EndReason,
    FleetMode,
    NodeInfo,
    SessionInfo,
    SessionStatus,
    StartClaim,
    StartRejection,
    StartRequest,
    StartResult,
)
from callboard.registry.paging import SessionPage
from callboard.registry.registry import (
    CloseRequest,
    EventStream,
    SessionRegistry,
    generate_node_id,
)
from callboard.registry.start_requests import SeenRequests, StartProgress, StartRef
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
    "EndReason",
    "EndedInfo",
    "EventStream",
    "FleetMode",
    "InMemorySessionKVStore",
    "KVSessionIndex",
    "NodeInfo",
    "PubSubSupport",
    "RedisSessionKVStore",
    "SeenRequests",
    "SessionIndex",
    "SessionIndexSupport",
    "SessionInfo",
    "SessionKVStore",
    "SessionPage",
    "SessionRegistry",
    "SessionStatus",
    "StartClaim",
    "StartProgress",
    "StartRef",
    "StartRejection",
    "StartRequest",
    "StartResult",
    "Subscription",
    "admission_error",
    "check_admission",
    "generate_node_id",
    "rejection_for",
    "store_from_url",
    "validate_id",
]
