"""The SSE reader of the Python client."""

from __future__ import annotations

from callboard.sidecar.sse import RawEvent, SSEDecoder


def feed(decoder: SSEDecoder, text: str) -> list[RawEvent]:
    events = [decoder.feed(line) for line in text.split("\n")]
    return [e for e in events if e is not None]


def test_events_ids_comments_and_retry() -> None:
    decoder = SSEDecoder()
    stream = (
        ": callboard sidecar node-1\n"
        "retry: 500\n"
        "\n"
        "id: 17\n"
        "event: close_requested\n"
        'data: {"call_id":"c"}\n'
        "\n"
        ": ping\n"
        "event: drain\n"
        "data:{}\n"
        "\n"
    )
    events = feed(decoder, stream)
    assert events == [
        RawEvent(event="close_requested", data='{"call_id":"c"}', id="17"),
        RawEvent(event="drain", data="{}", id=None),
    ]
    assert decoder.retry == 500
    assert decoder.last_event_id == "17"  # persists across events, as in EventSource


def test_multi_line_data_and_default_type() -> None:
    assert feed(SSEDecoder(), "data: a\ndata: b\n\n") == [RawEvent(event="message", data="a\nb", id=None)]


def test_an_event_without_data_is_not_dispatched() -> None:
    decoder = SSEDecoder()
    assert feed(decoder, "event: drain\nid: 3\n\n") == []
    assert decoder.last_event_id == "3"
    assert feed(decoder, "data: x\n\n") == [RawEvent(event="message", data="x", id=None)]


def test_bad_retry_and_nul_id_are_ignored() -> None:
    decoder = SSEDecoder()
    assert feed(decoder, "retry: soon\nid: a\0b\ndata: x\n\n") == [RawEvent("message", "x", None)]
    assert decoder.retry is None and decoder.last_event_id is None
