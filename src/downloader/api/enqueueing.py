"""Each form of an enqueue body turned into queued jobs, with the checks an untrusted caller
needs: every `dest` and every file path confined to the download root before anything is
written, every job marked untrusted, and a hub repo resolved on the hub of the server's
settings (never one the caller names).

Each function answers the new items in the order the answer lists them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from downloader import hub
from downloader.api import queries
from downloader.api.context import ApiContext
from downloader.api.paths import confined, inside
from downloader.api.schemas import (
    BatchItem,
    EnqueueRequest,
    Item,
    ItemsForm,
    Part,
    PartsForm,
    SourceForm,
)
from downloader.jobs.models import RemoteModelFile


def enqueue(ctx: ApiContext, queue_id: str, body: EnqueueRequest) -> list[Item]:
    """Queue the body's one form on `queue_id`, through the context's one service. Raises
    `HTTPException` (422) for a path outside the root, `RequestValidationError` for a part
    the job model refuses, `ValueError` or `OSError` for what the service refuses,
    `hub.HubError` for the hub's."""
    admin = ctx.admin
    if isinstance(body, ItemsForm):
        return _batch(ctx, queue_id, body.items)
    dest = confined(ctx.settings.download_root, body.dest)
    if isinstance(body, SourceForm):
        dest.mkdir(parents=True, exist_ok=True)  # an API `dest` is always a directory
        return [Item.from_record(r) for r in admin.enqueue_many(queue_id, [_single(body, dest)])]
    if isinstance(body, PartsForm):
        parts = _parts(body.parts)
        _confine_parts(ctx, body.dest, parts)
        multi = admin.multifile_download(
            queue_id,
            parts,
            dest,
            body.access_token,
            priority=body.priority,
            untrusted=True,
            bandwidth=body.bandwidth,
        )
    else:
        resolved = hub.resolve_repo(
            body.repo,
            revision=body.revision,
            repo_type=body.repo_type,
            allow_patterns=body.allow_patterns,
            ignore_patterns=body.ignore_patterns,
            token=body.access_token,
            settings=ctx.settings,
        )
        _confine_parts(ctx, body.dest, resolved.files)
        multi = admin.repo_download(
            queue_id,
            resolved,
            dest,
            priority=body.priority,
            access_token=body.access_token,
            untrusted=True,
            bandwidth=body.bandwidth,
        )
    return queries.items(ctx, [multi.id, *(part.id for part in multi.download_parts)])


def _parts(parts: list[Part]) -> list[RemoteModelFile]:
    """The job model's parts; its refusals (a `..`, a partial file's name) are 422s at the
    part they concern, as the body's own validation says them."""
    made = []
    for index, part in enumerate(parts):
        try:
            made.append(RemoteModelFile(**part.model_dump()))
        except ValidationError as exc:
            at = ("body", "parts", index)
            errors = [{**error, "loc": (*at, *error["loc"])} for error in exc.errors()]
            raise RequestValidationError(errors) from exc
    return made


def _confine_parts(ctx: ApiContext, dest: str, parts: Iterable[RemoteModelFile]) -> None:
    """No part may leave the root either, through `..` or a symlink under `dest`."""
    for part in parts:
        confined(ctx.settings.download_root, str(Path(dest) / part.path), what="part path")


def _batch(ctx: ApiContext, queue_id: str, items: list[BatchItem]) -> list[Item]:
    """Many single files in one go (`download_many`: pipelined writes, one producer); the
    answer is made from the records as written, not read back."""
    root = confined(ctx.settings.download_root, ".")
    dests = {text: inside(root, text) for text in {item.dest for item in items}}
    for dest in dests.values():
        dest.mkdir(parents=True, exist_ok=True)
    # A dest just made says it is a directory by its final separator: not looked at again.
    named = {text: os.path.join(dest, "") for text, dest in dests.items()}
    records = ctx.admin.enqueue_many(queue_id, (_single(item, named[item.dest]) for item in items))
    return [Item.from_record(record) for record in records]


def _single(fields: BatchItem, dest: Path | str) -> dict[str, Any]:
    """One file's arguments for `download_many`, from the single form or a batch item."""
    return {
        "source": str(fields.source),
        "dest": dest,
        "priority": fields.priority,
        "access_token": fields.access_token,
        "sha256": fields.sha256,
        "mirrors": [str(url) for url in fields.mirrors],
        "bandwidth": fields.bandwidth,
        "untrusted": True,
    }
