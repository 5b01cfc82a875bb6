"""The layers keep to their rooms: only the store package spells a Redis key (everything else
asks `store.keys.Keys`) or reads a job record by field name (everything else uses
`JobRecord`'s attributes)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from downloader.jobs.record import JobRecord
from downloader.store.scripts import key_templates

SRC = Path(__file__).resolve().parents[1] / "src" / "downloader"
STORE = SRC / "store"

_RECORD_BY_NAME = re.compile(
    r"""\b(?P<name>\w*record\w*|r|parent|culprit|part)\s*"""
    r"""(?:\[\s*["']|\.get\(\s*["'])"""
)
"""`record["status"]`, `parent.get("part_ids")`, `r["id"]`: a record read as a dict."""


_SEGMENTS = (
    "job|job-events|queue|path|paused|client|worker|workers|queues|stats|running|dispatched"
    "|events|sweep|next_id|job_sequence|redis-marker|cli|celery"
)
_KEY_SPELLED = re.compile(
    r"\{[^{}]*namespace[^{}]*\}[:.]"  # f"{keys.namespace}:queue:..." or f"{namespace}.q"
    r"|namespace\s*\+"  # namespace + ":..."
    rf"|[\"'](?:[^\"'\s]*:)?(?:{_SEGMENTS}):[^\s\"']"  # "cli:resumable", ":job:"
    r"|\.\.\s*':|redis\.call\("  # Lua: script text belongs in store/lua
)
"""A key (or script) spelled outside the store."""


def outside_the_store() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if STORE not in p.parents)


def offences(pattern: re.Pattern[str], paths: list[Path]) -> list[str]:
    found = []
    for path in paths:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                found.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    return found


def test_no_redis_key_or_script_is_spelled_outside_the_store() -> None:
    assert offences(_KEY_SPELLED, outside_the_store()) == []


@pytest.mark.parametrize(
    "line",
    [
        'return f"{runtime.keys.namespace}:queue:{queue_id}:paused"',
        'RESUME_KEY = "cli:resumable"',
        'prefix = f"{app.runtime.keys.namespace}."',
        "local key = NS .. ':job:' .. id",
        "redis.call('DEL', key)",
    ],
)
def test_the_key_check_sees_a_spelled_key(line: str) -> None:
    assert _KEY_SPELLED.search(line)


def test_the_scripts_build_keys_only_from_the_python_definitions() -> None:
    scripts = sorted((STORE / "lua").glob("*.lua"))
    used = {name for path in scripts for name in re.findall(r"\bkey\('(\w+)'", path.read_text())}
    assert used and used <= set(key_templates())
    spelled = re.compile(rf"['\"][^'\"]*:(?:{_SEGMENTS})\b|NS\s*\.\.")
    assert [p.name for p in scripts if spelled.search(p.read_text())] == []


def test_no_record_is_read_by_field_name_outside_the_store() -> None:
    assert offences(_RECORD_BY_NAME, outside_the_store()) == []


@pytest.mark.parametrize(
    "line",
    ['status = record["status"]', 'ids = parent.get("part_ids", [])', 'r["id"] for r in x'],
)
def test_the_record_check_sees_a_dict_read(line: str) -> None:
    assert _RECORD_BY_NAME.search(line)


def test_a_record_cannot_be_read_as_a_dict() -> None:
    record = JobRecord(id=1, dest=Path("/d"))
    with pytest.raises(TypeError):
        record["status"]  # type: ignore[index]
    assert not hasattr(record, "get")
