"""The printed tables: reads (server x concurrency), migval as ratios to the floors,
and writes."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.load import LoadResult
from bench.writes import WriteResult

# (migval server, floor server) pairs the ratio table compares.
RATIO_PAIRS = (
    ("migval-pg", "floorA-pg"),
    ("migval-pg", "floorB-pg"),
    ("migval-sqlite", "floorC-sqlite"),
)
HEADERS = ("req/s", "p50 ms", "p99 ms", "server CPU ms/req", "DB CPU ms/req", "statements/req")
# Not a figure of the server: CPU taken meanwhile by processes outside the benchmark.
NOISE = "other load (cores)"


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    concurrency: int
    values: tuple[float | None, ...]  # in HEADERS order
    other_cores: float = 0.0


def rows(results: Sequence[LoadResult], statements: Mapping[str, float | None]) -> list[Row]:
    return [
        Row(
            r.server,
            r.concurrency,
            (r.rps, r.p50_ms, r.p99_ms, r.server_cpu_ms, r.db_cpu_ms, statements.get(r.server)),
            r.other_cores,
        )
        for r in results
    ]


def num(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}x"


def _table(head: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(head), rule, *(line(r) for r in body)])


def reads_table(table: Sequence[Row]) -> str:
    body = [
        [r.name, str(r.concurrency), *(num(v) for v in r.values), f"{r.other_cores:.2f}"]
        for r in table
    ]
    return _table(("server", "conc", *HEADERS, NOISE), body)


def ratio_table(table: Sequence[Row]) -> str:
    by_key = {(r.name, r.concurrency): r for r in table}
    body = []
    for migval, floor in RATIO_PAIRS:
        for conc in sorted({r.concurrency for r in table}):
            mine, theirs = by_key.get((migval, conc)), by_key.get((floor, conc))
            if mine is None or theirs is None:
                continue
            body.append(
                [
                    f"{migval} / {floor}",
                    str(conc),
                    *(_ratio(a, b) for a, b in zip(mine.values, theirs.values, strict=True)),
                ]
            )
    return _table(("migval / floor", "conc", *HEADERS), body)


def writes_table(results: Sequence[WriteResult]) -> str:
    body = [
        [
            f"{w.backend}",
            f"{w.size:,}",
            f"{w.graphql_ms:,.1f}",
            f"{w.raw_ms:,.1f}",
            f"{w.ratio:.1f}x",
            str(w.runs),
        ]
        for w in results
    ]
    head = ("database", "discrepancies", "GraphQL ms", "raw ms", "GraphQL / raw", "runs")
    return _table(head, body)
