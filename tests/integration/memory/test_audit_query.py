"""ListAuditEvents over a real channel, on SQLite and PostgreSQL: filters, time bounds, keyset pages, tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from techno.memory.v1 import memory_pb2, memory_pb2_grpc
from techno_core.timestamps import to_timestamp

from .test_api_keys import reason_of, violated_fields
from .test_audit_trail import T0, append, audit_event, new_trace_id, trail

Stub = memory_pb2_grpc.MemoryServiceStub


async def list_page(stub: Stub, **fields: Any) -> memory_pb2.ListAuditEventsResponse:
    for name in ("start_time", "end_time"):
        if isinstance(fields.get(name), datetime):
            fields[name] = to_timestamp(fields[name])
    response: memory_pb2.ListAuditEventsResponse = await stub.ListAuditEvents(
        memory_pb2.ListAuditEventsRequest(**fields), timeout=10
    )
    return response


async def walk(stub: Stub, **fields: Any) -> tuple[list[str], int]:
    """Every page of a query: the event ids in order, and how many pages it took."""
    ids: list[str] = []
    token, pages = "", 0
    while True:
        page = await list_page(stub, page_token=token, **fields)
        pages += 1
        ids += [event.event_id for event in page.events]
        token = page.next_page_token
        if not token:
            return ids, pages
        assert len(page.events) == fields.get("page_size", 100)  # only the last page may be short


async def refused(stub: Stub, **fields: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await list_page(stub, **fields)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return raised.value


async def test_pages_walk_every_matching_event_once_in_append_order(stub: Stub) -> None:
    traces = [new_trace_id(), new_trace_id()]
    stored: list[memory_pb2.AuditEvent] = []
    # Out of occurred_at order on purpose: pages follow the append order, not the writer's clock.
    for n in range(60):
        offset = (n * 37) % 60
        event = audit_event(traces[n % 2], event_id=f"e{n:02}", offset=offset, principal_id=f"key_{n % 3}")
        stored.append(event)
    for start in range(0, 60, 7):  # several appends, so ids come from several transactions
        await append(stub, *stored[start : start + 7])

    def matching(event: memory_pb2.AuditEvent, lo: int, hi: int) -> bool:
        occurred = event.occurred_at.ToDatetime(tzinfo=UTC)
        return T0 + timedelta(seconds=lo) <= occurred < T0 + timedelta(seconds=hi)

    # Principal and time range together.
    expected = [e.event_id for e in stored if e.principal_id == "key_1" and matching(e, 10, 50)]
    ids, pages = await walk(
        stub,
        principal_id="key_1",
        start_time=T0 + timedelta(seconds=10),
        end_time=T0 + timedelta(seconds=50),
        page_size=3,
    )
    assert ids == expected
    assert len(expected) > 6
    assert pages > 2

    # Trace, principal and time range together.
    expected = [
        e.event_id for e in stored if e.trace_id == traces[0] and e.principal_id == "key_2" and matching(e, 0, 45)
    ]
    ids, pages = await walk(
        stub, trace_id=traces[0], principal_id="key_2", end_time=T0 + timedelta(seconds=45), page_size=2
    )
    assert ids == expected
    assert pages > 2

    # No filter: everything, in append order.
    ids, pages = await walk(stub, page_size=25)
    assert ids == [e.event_id for e in stored]
    assert pages == 3
    assert [e.event_id for e in (await list_page(stub)).events] == ids  # default page size 100: one page


async def test_time_bounds_are_start_inclusive_and_end_exclusive(stub: Stub) -> None:
    tick = timedelta(microseconds=1)
    at = {
        "before": T0 - tick,
        "start": T0,
        "middle": T0 + timedelta(seconds=1),
        "last": T0 + timedelta(seconds=2) - tick,
        "end": T0 + timedelta(seconds=2),
    }
    principal = "key_bounds"
    events = [
        audit_event(new_trace_id(), event_id=name, principal_id=principal, occurred_at=to_timestamp(moment))
        for name, moment in at.items()
    ]
    await append(stub, *events)
    page = await list_page(stub, principal_id=principal, start_time=T0, end_time=T0 + timedelta(seconds=2))
    assert [event.event_id for event in page.events] == ["start", "middle", "last"]
    page = await list_page(stub, principal_id=principal, start_time=T0 + timedelta(seconds=2))
    assert [event.event_id for event in page.events] == ["end"]
    page = await list_page(stub, principal_id=principal, end_time=T0)
    assert [event.event_id for event in page.events] == ["before"]


async def test_events_carry_the_services_recorded_at(stub: Stub) -> None:
    before = datetime.now(UTC)
    trace_id = new_trace_id()
    # A writer's recorded_at is ignored: the service stamps its own.
    await append(stub, audit_event(trace_id, event_id="recorded", recorded_at=to_timestamp(T0 - timedelta(days=365))))
    after = datetime.now(UTC)
    [listed] = (await list_page(stub, trace_id=trace_id)).events
    [traced] = await trail(stub, trace_id)
    for event in (listed, traced):
        assert event.HasField("recorded_at")
        assert before <= event.recorded_at.ToDatetime(tzinfo=UTC) <= after


async def test_events_appended_while_paging_come_in_later_pages(stub: Stub) -> None:
    principal = "key_live"
    await append(stub, *(audit_event(new_trace_id(), event_id=f"a{n}", principal_id=principal) for n in range(4)))
    first = await list_page(stub, principal_id=principal, page_size=3)
    await append(stub, audit_event(new_trace_id(), event_id="late", principal_id=principal))
    second = await list_page(stub, principal_id=principal, page_size=3, page_token=first.next_page_token)
    assert [e.event_id for e in first.events] == ["a0", "a1", "a2"]
    assert [e.event_id for e in second.events] == ["a3", "late"]
    assert second.next_page_token == ""


async def test_tokens_are_refused_when_garbled_or_used_with_other_filters(stub: Stub) -> None:
    principal = "key_tokens"
    await append(stub, *(audit_event(new_trace_id(), principal_id=principal) for _ in range(3)))
    first = await list_page(stub, principal_id=principal, page_size=1)
    token = first.next_page_token
    assert token

    for garbled in ("garbage", token[:-2], token + "AA", "%%%%", token.swapcase()):
        error = await refused(stub, principal_id=principal, page_size=1, page_token=garbled)
        assert reason_of(error) == "INVALID_PAGE_TOKEN"
        assert violated_fields(error) == ["page_token"]

    for other in ({"principal_id": "key_other"}, {}, {"principal_id": principal, "start_time": T0}):
        error = await refused(stub, page_size=1, page_token=token, **other)
        assert reason_of(error) == "INVALID_PAGE_TOKEN"
        assert violated_fields(error) == ["page_token"]
        assert "other filters" in (error.details() or "")

    # The page size is not a filter: it may change between pages.
    rest = await list_page(stub, principal_id=principal, page_size=10, page_token=token)
    assert len(rest.events) == 2


async def test_invalid_queries_are_refused_with_field_violations(stub: Stub) -> None:
    error = await refused(stub, page_size=-1)
    assert reason_of(error) == "INVALID_AUDIT_QUERY"
    assert violated_fields(error) == ["page_size"]

    for start, end in ((T0, T0), (T0 + timedelta(seconds=1), T0)):
        error = await refused(stub, start_time=start, end_time=end)
        assert violated_fields(error) == ["end_time"]

    error = await refused(stub, trace_id="ABC", principal_id="p" * 200)
    assert violated_fields(error) == ["trace_id", "principal_id"]

    out_of_range = memory_pb2.ListAuditEventsRequest()
    out_of_range.start_time.seconds = -(10**12)  # before year 1: not a time protobuf defines
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListAuditEvents(out_of_range, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(raised.value) == ["start_time"]


async def test_a_large_page_size_is_capped(stub: Stub) -> None:
    principal = "key_cap"
    await append(stub, *(audit_event(new_trace_id(), principal_id=principal) for _ in range(3)))
    page = await list_page(stub, principal_id=principal, page_size=1_000_000)
    assert len(page.events) == 3
    assert page.next_page_token == ""
