"""The printed tables: reads (server x concurrency), migval as ratios to the floors,
and writes."""

import os
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
# Above this, CPU taken by processes outside the benchmark is called out.
NOISY_CORES = 0.2
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
            f"{w.ratio:.2f}x",  # one decimal would show 1.44x as the 1.4x target
            str(w.runs),
        ]
        for w in results
    ]
    head = ("database", "discrepancies", "GraphQL ms", "raw ms", "GraphQL / raw", "runs")
    return _table(head, body)


def render(
    context: Mapping[str, str],
    results: Sequence[LoadResult],
    statements: Mapping[str, float | None],
    notes: Sequence[str],
    write_results: Sequence[WriteResult],
) -> str:
    """The whole report: context, reads, ratios, writes, notes and warnings."""
    table = rows(results, statements)
    out = ["\n== context", *(f"  {key}: {value}" for key, value in context.items())]
    out += [
        "\n== reads: the dashboard query (sessions(first: 50) with nested results, "
        "20 discrepancies and tests each)",
        reads_table(table),
        "\n== migval as a ratio of the floors (migval figure / floor figure; "
        "req/s < 1 and the others > 1 mean migval costs more)",
        ratio_table(table),
    ]
    if write_results:
        out += [
            "\n== writes: recordValidationResult with N discrepancies (median ms)",
            writes_table(write_results),
        ]
    out += ["\n== notes", *(f"  {note}" for note in notes)]
    out += [
        f"  WARNING: {r.server} c={r.concurrency}: {r.errors} failed requests "
        "(non-2xx or socket errors, timeouts included)"
        for r in results
        if r.errors
    ]
    noisy = max((r.other_cores for r in results), default=0.0)
    if noisy > NOISY_CORES:
        out.append(
            f"  WARNING: other processes used up to {noisy:.2f} of {os.cpu_count()} cores "
            "during the measurements: the figures are disturbed (see 'other load')"
        )
    return "\n".join(out)
