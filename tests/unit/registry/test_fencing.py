"""Pure logic of the operator's fence (:mod:`callboard.registry.fencing`): how a close flag
carries a fencing token and when a token is fenced (G8)."""

from __future__ import annotations

import pytest

from callboard.registry import StartRequest
from callboard.registry.index import close_flag, flag_token, is_fenced


def test_g8_a_close_flag_holds_the_token_or_stays_empty_as_documented() -> None:
    assert close_flag(None) == b""  # the documented Vision Agents flag
    assert close_flag(7) == b"7"
    assert flag_token(close_flag(7)) == 7
    assert flag_token(close_flag(None)) is None


@pytest.mark.parametrize("value", [None, b"", b"yes", b"1.5", b"\xff"])
def test_g8_a_flag_without_a_plain_integer_carries_no_token(value: bytes | None) -> None:
    assert flag_token(value) is None


@pytest.mark.parametrize(
    ("token", "fence", "fenced"),
    [
        (None, None, False),  # no token, no fence
        (None, 5, False),  # requests without a token are accepted as before
        (3, None, False),  # no fence published (yet, or lost): nothing to compare with
        (5, 5, False),  # the current term
        (6, 5, False),  # a newer term, before it published its fence
        (4, 5, True),  # a deposed leader
    ],
)
def test_g8_only_a_token_below_the_fence_is_fenced(
    token: int | None, fence: int | None, fenced: bool
) -> None:
    assert is_fenced(token, fence) is fenced


def test_g8_a_start_request_carries_its_fencing_token_on_the_wire() -> None:
    request = StartRequest(request_id="r", node_id="n", call_id="c", session_id="s", fencing_token=4)
    assert StartRequest.from_json(request.to_json()).fencing_token == 4
    older = b'{"request_id":"r","node_id":"n","call_id":"c","session_id":"s"}'
    assert StartRequest.from_json(older).fencing_token is None
