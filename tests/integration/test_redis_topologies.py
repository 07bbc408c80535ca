"""The Redis topologies of tests/support/redis_topology.py start, answer and leave nothing behind."""

from __future__ import annotations

import pytest
import redis

from tests.support.redis_server import RedisServer
from tests.support.redis_topology import MASTER_NAME, ClusterTopology, SentinelTopology, create_acl_user


def _ping(port: int) -> bool:
    with redis.Redis(host="127.0.0.1", port=port, socket_timeout=2) as client:
        return bool(client.ping())


def test_sentinel_topology_fails_over_and_stops_clean() -> None:
    with SentinelTopology() as topology:
        procs = topology.processes()
        assert len(procs) == 5
        assert all(_ping(p) for p in [topology.master.port, topology.replica.port, *topology.sentinel_ports])
        assert topology.master_addr() == ("127.0.0.1", topology.master.port)
        assert topology.url().endswith(f"/{MASTER_NAME}/0")
        old = topology.master.port
        topology.kill_master()
        host, port = topology.wait_for_promotion(old)
        assert (host, port) == ("127.0.0.1", topology.master.port)
        assert port != old
        with redis.Redis(host=host, port=port, socket_timeout=2) as client:
            assert client.set("after-failover", b"1")
    assert all(p.poll() is not None for p in procs)


def test_cluster_topology_splits_slots_and_stops_clean() -> None:
    with ClusterTopology() as cluster:
        procs = cluster.processes()
        assert len(procs) == 3
        assert all(_ping(p) for p in cluster.ports)
        with redis.RedisCluster(host="127.0.0.1", port=cluster.ports[0]) as client:
            assert len({client.keyslot(k) for k in ("a", "b", "c")}) > 1
            for key in ("a", "b", "c"):
                assert client.set(key, b"1")
            assert len(client.get_primaries()) == 3
    assert all(p.poll() is not None for p in procs)


def test_acl_user_without_channel_rights_cannot_publish() -> None:
    with RedisServer() as server:
        full = redis.Redis.from_url(create_acl_user(server, "full", "pw-1"))
        bare = redis.Redis.from_url(create_acl_user(server, "bare", "pw-2", channel_pattern=None))
        try:
            assert full.set("vision_agents:x", b"1")
            assert full.publish("vision_agents:channel", b"hi") == 0
            assert bare.set("vision_agents:y", b"1")
            with pytest.raises(redis.exceptions.NoPermissionError):
                bare.publish("vision_agents:channel", b"hi")
            with pytest.raises(redis.exceptions.NoPermissionError):
                full.set("other:z", b"1")
        finally:
            full.close()
            bare.close()
    assert server.proc is None
