"""discrepancyStats over HTTP: grouping by key combinations and time buckets (a
Sunday, month ends), filters, ordering, the totals row, the group cap, bad input."""

import itertools
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from graph.ids import to_global_id
from persistence.database import DatabaseManager
from persistence.enums import MetricPeriod
from persistence.repositories import discrepancy_stats
from persistence.services.metrics import period_floor
from tests.operations.conftest import Gql, Rows

STATS = """
query($groupBy: [DiscrepancyGroupBy!]!, $filter: DiscrepancyFilterInput,
      $bucket: TimeBucket, $from: DateTime, $to: DateTime) {
  discrepancyStats(groupBy: $groupBy, filter: $filter, bucket: $bucket, from: $from, to: $to) {
    severity discrepancyType componentType sourceTechnology targetTechnology scope
    bucketStart count resolvedCount
  }
}
"""
KEYS = (
    "severity",
    "discrepancyType",
    "componentType",
    "sourceTechnology",
    "targetTechnology",
    "scope",
    "bucketStart",
)
GROUP_FIELD = {
    "SEVERITY": "severity",
    "DISCREPANCY_TYPE": "discrepancyType",
    "COMPONENT_TYPE": "componentType",
    "SOURCE_TECHNOLOGY": "sourceTechnology",
    "TARGET_TECHNOLOGY": "targetTechnology",
    "SCOPE": "scope",
}
BUCKET_PERIOD = {
    "DAY": MetricPeriod.DAILY,
    "WEEK": MetricPeriod.WEEKLY,
    "MONTH": MetricPeriod.MONTHLY,
}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def dataset() -> Rows:
    rows = Rows()
    s0 = rows.session(utc(2026, 2, 1))
    s1 = rows.session(
        utc(2026, 2, 1), source="PYTHON_DJANGO", target="TYPESCRIPT_REACT", scope="UI_LAYOUT"
    )
    s2 = rows.session(utc(2026, 2, 1), target="TYPESCRIPT_REACT", scope="UI_LAYOUT")
    rows.discrepancy(s0, utc(2026, 3, 1, 10), "CRITICAL", "layout", "button", resolved=True)
    rows.discrepancy(s0, utc(2026, 3, 1, 23, 59, 59, 999999), "WARNING", "layout")  # Sunday
    rows.discrepancy(s1, utc(2026, 3, 2), "CRITICAL", "logic", "form")  # Monday
    rows.discrepancy(
        s1, utc(2026, 3, 31, 23, 59, 59, 999999), "INFO", "logic", "form", resolved=True
    )  # month end
    rows.discrepancy(s2, utc(2026, 4, 1), "CRITICAL", "layout", "button")
    rows.discrepancy(s2, utc(2026, 2, 28, 12), "WARNING", "style", resolved=True)
    return rows


@pytest.fixture
async def seeded(db: DatabaseManager) -> tuple[Rows, list[int]]:
    rows = dataset()
    return rows, await rows.write(db)


async def stats(gql: Gql, group_by: list[str], **variables: Any) -> list[dict[str, Any]]:
    body = await gql(STATS, {"groupBy": group_by, **variables})
    assert "errors" not in body, body["errors"]
    result = body["data"]["discrepancyStats"]
    assert isinstance(result, list)
    return result


def row(count: int, resolved: int, **keys: Any) -> dict[str, Any]:
    return {**dict.fromkeys(KEYS), **keys, "count": count, "resolvedCount": resolved}


async def test_group_by_one_key(gql: Gql, seeded: Any) -> None:
    assert await stats(gql, ["SEVERITY"]) == [
        row(3, 1, severity="CRITICAL"),
        row(1, 1, severity="INFO"),
        row(2, 1, severity="WARNING"),
    ]
    # duplicates are ignored
    assert await stats(gql, ["SEVERITY", "SEVERITY"]) == await stats(gql, ["SEVERITY"])
    # a null component type is a group of its own, sorted last
    assert await stats(gql, ["COMPONENT_TYPE"]) == [
        row(2, 1, componentType="button"),
        row(2, 1, componentType="form"),
        row(2, 1, componentType=None),
    ]


async def test_totals_row(gql: Gql, seeded: Any) -> None:
    assert await stats(gql, []) == [row(6, 3)]
    nothing = {"filter": {"discrepancyType": ["nope"]}}
    assert await stats(gql, [], **nothing) == [row(0, 0)]
    assert await stats(gql, ["SEVERITY"], **nothing) == []


async def test_group_by_session_keys(gql: Gql, seeded: Any) -> None:
    assert await stats(gql, ["SOURCE_TECHNOLOGY", "SCOPE"]) == [
        row(2, 1, sourceTechnology="PYTHON_DJANGO", scope="UI_LAYOUT"),
        row(2, 1, sourceTechnology="PYTHON_FLASK", scope="FULL_SYSTEM"),
        row(2, 1, sourceTechnology="PYTHON_FLASK", scope="UI_LAYOUT"),
    ]


async def test_weekly_buckets_put_sunday_in_the_week_of_monday(gql: Gql, seeded: Any) -> None:
    assert await stats(gql, ["DISCREPANCY_TYPE"], bucket="WEEK") == [
        row(2, 1, discrepancyType="layout", bucketStart="2026-02-23T00:00:00+00:00"),
        row(1, 1, discrepancyType="style", bucketStart="2026-02-23T00:00:00+00:00"),
        row(1, 0, discrepancyType="logic", bucketStart="2026-03-02T00:00:00+00:00"),
        row(1, 0, discrepancyType="layout", bucketStart="2026-03-30T00:00:00+00:00"),
        row(1, 1, discrepancyType="logic", bucketStart="2026-03-30T00:00:00+00:00"),
    ]


async def test_monthly_and_daily_buckets(gql: Gql, seeded: Any) -> None:
    assert await stats(gql, [], bucket="MONTH") == [
        row(1, 1, bucketStart="2026-02-01T00:00:00+00:00"),
        row(4, 2, bucketStart="2026-03-01T00:00:00+00:00"),  # incl. 03-31 23:59:59.999999
        row(1, 0, bucketStart="2026-04-01T00:00:00+00:00"),
    ]
    critical = {"filter": {"severity": ["CRITICAL"]}, "bucket": "DAY"}
    assert await stats(gql, ["COMPONENT_TYPE", "TARGET_TECHNOLOGY"], **critical) == [
        row(
            1,
            1,
            componentType="button",
            targetTechnology="JAVA_SPRING",
            bucketStart="2026-03-01T00:00:00+00:00",
        ),
        row(
            1,
            0,
            componentType="form",
            targetTechnology="TYPESCRIPT_REACT",
            bucketStart="2026-03-02T00:00:00+00:00",
        ),
        row(
            1,
            0,
            componentType="button",
            targetTechnology="TYPESCRIPT_REACT",
            bucketStart="2026-04-01T00:00:00+00:00",
        ),
    ]


async def test_filters_and_time_range(gql: Gql, seeded: tuple[Rows, list[int]]) -> None:
    march = {"from": "2026-03-01T00:00:00Z", "to": "2026-04-01T00:00:00+00:00"}
    assert await stats(gql, ["SEVERITY"], filter={"resolved": True}, **march) == [
        row(1, 1, severity="CRITICAL"),
        row(1, 1, severity="INFO"),
    ]
    s2 = to_global_id("ValidationSession", seeded[1][2])
    assert await stats(gql, ["SEVERITY"], filter={"sessionId": s2}) == [
        row(1, 0, severity="CRITICAL"),
        row(1, 1, severity="WARNING"),
    ]


def oracle(data: Rows, group_by: tuple[str, ...], bucket: str | None) -> Counter[Any]:
    sessions = data.sessions
    counts: Counter[Any] = Counter()
    for d in data.discrepancies:
        s = sessions[d["session"]]
        values = {
            "severity": d["severity"],
            "discrepancyType": d["discrepancy_type"],
            "componentType": d["component_type"],
            "sourceTechnology": s["source_technology"],
            "targetTechnology": s["target_technology"],
            "scope": s["validation_scope"],
        }
        key = dict.fromkeys(KEYS)
        for g in group_by:
            key[GROUP_FIELD[g]] = values[GROUP_FIELD[g]]
        if bucket is not None:
            key["bucketStart"] = period_floor(d["created_at"], BUCKET_PERIOD[bucket]).isoformat()
        frozen = tuple(key.items())
        counts[frozen, "count"] += 1
        counts[frozen, "resolvedCount"] += d["is_resolved"]
    return +counts  # without zero entries


async def test_every_pair_of_keys_and_bucket_matches_python(gql: Gql, seeded: Any) -> None:
    data = seeded[0]
    combos = [()] + [(k,) for k in GROUP_FIELD] + list(itertools.combinations(GROUP_FIELD, 2))
    for group_by in combos:
        for bucket in (None, "DAY", "WEEK", "MONTH"):
            variables = {} if bucket is None else {"bucket": bucket}
            got: Counter[Any] = Counter()
            for r in await stats(gql, list(group_by), **variables):
                frozen = tuple((k, r[k]) for k in KEYS)
                got[frozen, "count"] += r["count"]
                got[frozen, "resolvedCount"] += r["resolvedCount"]
            assert +got == oracle(data, group_by, bucket), (group_by, bucket)


async def test_group_cap_and_bad_input(
    gql: Gql, seeded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discrepancy_stats, "MAX_STATS_ROWS", 3)
    assert len(await stats(gql, ["SEVERITY"])) == 3  # exactly at the cap
    too_many = await gql(STATS, {"groupBy": ["SEVERITY"], "bucket": "DAY"})
    assert too_many["data"] is None
    error = too_many["errors"][0]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "groupBy"}
    assert "more than 3 groups" in error["message"]

    naive = await gql(STATS, {"groupBy": [], "from": "2026-03-01T00:00:00"})
    assert naive["errors"][0]["extensions"]["field"] == "from"
    bad_session = await gql(STATS, {"groupBy": [], "filter": {"sessionId": "nope"}})
    assert bad_session["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    unknown = await gql(STATS, {"groupBy": ["COLOUR"]})
    assert unknown["data"] is None
    assert "COLOUR" in unknown["errors"][0]["message"]
