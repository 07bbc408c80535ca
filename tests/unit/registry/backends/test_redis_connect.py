"""The Redis URL parser: every accepted form, and a clear ConfigurationError for each fault."""

from __future__ import annotations

import pytest

from callboard import ConfigurationError
from callboard.registry import store_from_url
from callboard.registry.backends.redis_connect import (
    RedisEndpoint,
    SentinelEndpoint,
    has_hash_tag,
    parse_redis_url,
)
from callboard.server.node import redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("rediss://u:p@h:6380/1", "rediss://u:p@h:6380/1"),
        ("unix:///tmp/r.sock?db=0", "unix:///tmp/r.sock?db=0"),
        ("valkey://h:6379/0", "redis://h:6379/0"),
        ("valkeys://h:6380/0", "rediss://h:6380/0"),
        ("VALKEY://h:6379/0", "redis://h:6379/0"),
    ],
)
def test_single_server_urls_and_valkey_aliases(url: str, expected: str) -> None:
    assert parse_redis_url(url) == RedisEndpoint(expected)


def test_sentinel_url_with_auth_hosts_master_and_db() -> None:
    endpoint = parse_redis_url("redis+sentinel://app:s%40cret@s1:26379,s2:26380,s3/mymaster/2")
    assert endpoint == SentinelEndpoint(
        sentinels=(("s1", 26379), ("s2", 26380), ("s3", 26379)),
        master_name="mymaster",
        db=2,
        username="app",
        password="s@cret",
    )


def test_sentinel_tls_and_sentinel_auth_options() -> None:
    endpoint = parse_redis_url(
        "rediss+sentinel://s1:26379/m?sentinel_password=x&sentinel_username=y&ssl_ca_certs=/ca.crt"
    )
    assert isinstance(endpoint, SentinelEndpoint)
    assert endpoint.tls and endpoint.db == 0
    assert (endpoint.sentinel_username, endpoint.sentinel_password) == ("y", "x")
    assert endpoint.tls_options == (("ssl_ca_certs", "/ca.crt"),)
    assert isinstance(parse_redis_url("valkeys+sentinel://s1/m"), SentinelEndpoint)


def test_password_stays_out_of_repr() -> None:
    assert "hunter2" not in repr(parse_redis_url("redis+sentinel://u:hunter2@s1/m"))


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://s1:26379", "names no master"),
        ("redis+sentinel://s1:26379/", "names no master"),
        ("redis+sentinel://s1:26379/m/x", "database number"),
        ("redis+sentinel://s1:26379/m/0/extra", "database number"),
        ("redis+sentinel://s1:notaport/m", "is not host:port"),
        ("redis+sentinel://s1:26379,,s2/m", "is not host:port"),
        ("redis+sentinel://s1:70000/m", "is not host:port"),
        ("redis+sentinel://s1/m?socket_timeout=1", "unknown option"),
        ("memcached://h", "unknown Redis URL scheme"),
    ],
)
def test_bad_urls_are_configuration_errors_naming_the_fault(url: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        parse_redis_url(url)


def test_errors_do_not_show_the_password() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_redis_url("redis+sentinel://u:hunter2@s1:bad/m")
    assert "hunter2" not in str(info.value)


def test_store_from_url_builds_sentinel_and_valkey_stores_without_connecting() -> None:
    for url in ("redis+sentinel://127.0.0.1:1,127.0.0.1:2/m/0", "valkey://127.0.0.1:1/0"):
        assert type(store_from_url(url)).__name__ == "RedisSessionKVStore"
    with pytest.raises(ConfigurationError, match="names no master"):
        store_from_url("rediss+sentinel://127.0.0.1:1")


def test_redact_url_hides_the_password_of_a_sentinel_url() -> None:
    assert redact_url("redis+sentinel://u:pw@a:1,b:2/m/0") == "redis+sentinel://u:***@a:1,b:2/m/0"
    assert redact_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"


@pytest.mark.parametrize(
    ("prefix", "tagged"),
    [("{callboard}:", True), ("app:{cb}:", True), ("vision_agents:", False), ("{}:", False), ("a{b:", False)],
)
def test_hash_tag_detection(prefix: str, tagged: bool) -> None:
    assert has_hash_tag(prefix) is tagged
