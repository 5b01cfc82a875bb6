"""Property tests of what turns untrusted headers and URLs into names and byte ranges."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from downloader.engine.naming import (
    FALLBACK_NAME,
    choose_filename,
    content_disposition_filename,
    safe_filename,
)
from downloader.engine.transfer import TransferRequest, fetch, parse_content_range
from tests.origin import Origin

HOSTILE = st.text(
    alphabet=st.sampled_from(
        [
            "/",
            "\\",
            ".",
            "\x00",
            "\n",
            "\x1f",
            "\x7f",
            " ",
            "a",
            "é",
            "C",
            "O",
            "N",
            ":",
            "*",
            "%",
            "漢",
        ]
    ),
    max_size=40,
) | st.text(max_size=300)


@given(HOSTILE)
@example(". .:")  # spaces and dots alternating in front: it kept a leading dot
def test_a_safe_name_is_one_component_that_stays_inside_dest(name: str) -> None:
    safe = safe_filename(name)
    if safe is None:
        return
    assert safe and "/" not in safe and "\\" not in safe
    assert safe not in (".", "..") and not safe.startswith(".")
    assert not any(ord(c) < 32 or ord(c) == 127 for c in safe)
    assert len(safe.encode()) <= 255
    dest = Path("/srv/downloads")
    assert (dest / safe).parent == dest
    assert safe.split(".")[0].lower() not in {"con", "prn", "aux", "nul", "com1", "lpt1"}


@given(st.text(max_size=200))
def test_content_disposition_never_raises_and_the_chosen_name_is_safe(header: str) -> None:
    content_disposition_filename(header)
    name = choose_filename("http://example.com/a/b.bin?x=1", header)
    assert name == safe_filename(name)
    assert "/" not in name and name not in ("", ".", "..")


@given(st.text(max_size=80))
def test_content_range_never_raises(header: str) -> None:
    first, last, total = parse_content_range(header)
    for value in (first, last, total):
        assert value is None or value >= 0


@given(st.integers(0, 2**50), st.integers(0, 2**20), st.integers(1, 2**20))
def test_content_range_round_trips(first: int, length: int, extra: int) -> None:
    last, total = first + length, first + length + extra
    assert parse_content_range(f"bytes {first}-{last}/{total}") == (first, last, total)
    assert parse_content_range(f"bytes */{total}") == (None, None, total)
    assert parse_content_range(f"bytes {first}-{last}/*") == (first, last, None)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('attachment; filename="../../etc/passwd"', "passwd"),
        ('attachment; filename="/abs/name.bin"', "name.bin"),
        ('attachment; filename="a\\\\b.bin"', "b.bin"),
        ('attachment; filename=".."', "b.bin"),
        ('attachment; filename=""', "b.bin"),
        ('attachment; filename="CON.txt"', "_CON.txt"),
        ("attachment; filename*=UTF-8''%E6%BC%A2%20x.bin", "漢 x.bin"),
        ('attachment; filename="evil\x00.bin"', "evil.bin"),
    ],
)
def test_hostile_server_names_are_reduced(header: str, expected: str) -> None:
    assert choose_filename("http://example.com/dir/b.bin?raw=true", header) == expected


def test_names_fall_back_when_nothing_is_usable() -> None:
    assert choose_filename("http://example.com/", None) == FALLBACK_NAME
    assert choose_filename("http://example.com/%2e%2e", 'attachment; filename="/"') == FALLBACK_NAME


def test_a_hostile_name_from_a_real_server_lands_inside_dest(
    origin: Origin, tmp_path: Path
) -> None:
    origin.add("payload", os.urandom(1000))
    dest = tmp_path / "dest"
    dest.mkdir()
    result = fetch(
        TransferRequest(url=origin.url("/cd/payload?filename=../../escape.sh"), dest=dest)
    )
    assert result.download_path == dest / "escape.sh"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["dest", "escape.sh"]
