"""The command line and the REST API use the service's public interface (its methods and
`service.admin`), never its insides: no `.app.store`, `.app.redis`, `ctx.store`,
`store.redis`, `.celery`, nor a `_` member of the service or any other object."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import downloader

PACKAGE = Path(downloader.__file__).parent
FRONT_ENDS = sorted(
    [*PACKAGE.joinpath("cli").rglob("*.py"), *PACKAGE.joinpath("api").rglob("*.py")]
)


def reaches_through(source: str) -> list[str]:
    """Each place in `source` that reaches through the facade, as `line: expression`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        inner = node.value
        why = None
        if isinstance(inner, ast.Attribute) and inner.attr == "app":
            if not (isinstance(inner.value, ast.Name) and inner.value.id == "request"):
                why = "the service's runtime"
        elif node.attr == "celery":
            why = "the service's Celery app"
        elif node.attr == "store" and isinstance(inner, ast.Name) and inner.id == "ctx":
            why = "the API's store"
        elif node.attr == "redis" and "store" in (
            getattr(inner, "id", ""),
            getattr(inner, "attr", ""),
        ):
            why = "the store's Redis"
        elif _is_private(node.attr) and not (
            isinstance(inner, ast.Name) and inner.id in ("self", "cls")
        ):
            why = "a private member of another object"
        if why:
            found.append((node.lineno, f"{node.lineno}: {ast.unparse(node)} ({why})"))
    return [text for _, text in sorted(found)]


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_the_checker_finds_each_kind_of_reach() -> None:
    source = (
        "queue.app.store.record(1)\n"
        "queue.app.redis.hset('k', 'f', 1)\n"
        "ctx.store.remove('q', [])\n"
        "store.redis.zrange('k', 0, -1)\n"
        "control.pause(queue.celery, 'q')\n"
        "ctx.service._download_many('q', [])\n"
        "service._enqueuer.download_many('q', [])\n"
        "request.app.state.context\n"
    )
    assert [line.split(":")[0] for line in reaches_through(source)] == [
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
        "7",
    ]


@pytest.mark.parametrize("module", FRONT_ENDS, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_front_ends_use_the_public_interface(module: Path) -> None:
    assert reaches_through(module.read_text()) == []
