"""How a figure reads in the table: shared by every case's rows, so they all look alike."""

from __future__ import annotations

from typing import Any


def num(value: float | None, unit: str) -> str:
    return f"{value:,.1f} {unit}" if isinstance(value, int | float) else "n/a"


def times(value: float | None, what: str) -> str:
    """A ratio cell: `0.93x aria2c`, or empty when there is no ratio."""
    return f"{value:.2f}x {what}" if isinstance(value, int | float) else ""


def why_not(result: dict[str, Any] | None) -> str:
    """The note of a measurement that did not happen: skipped or failed, shortened."""
    if not result:
        return "not measured"
    return str(result.get("skipped") or result.get("error") or "")[:80]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
