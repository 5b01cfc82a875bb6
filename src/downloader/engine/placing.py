"""Which final name a download takes: the one its job names, or one chosen from the answer.

A job for a file path, or a retry of a job that already chose its name, knows its final path
before anything is asked, and may resume at once. A job for a directory takes the name the
server gives (`Content-Disposition`), else the URL's, made safe (see `naming`); when that name
is another source's file, or another unfinished job holds it, it takes the next free one as
browsers do, `model (1).bin`. A name is reserved for the job before the disk is looked at
(see `TransferRequest.reserve`): a job renames its file into place before it lets go of its
name, so what the disk shows then is final for that name.
"""

from __future__ import annotations

from pathlib import Path

import requests

from downloader.engine.destdir import DestDir
from downloader.engine.disk import Spot
from downloader.engine.errors import DestinationBusyError, UnsafeDestinationError
from downloader.engine.naming import choose_filename, distinct_name
from downloader.engine.reading import header
from downloader.engine.request import TransferRequest

MAX_DISTINCT_NAMES = 1000


def known_path(request: TransferRequest) -> Path | None:
    """The final path before any answer: an earlier attempt's, or an explicit file path.

    Returns:
        The path, or None when the file is to be named from the answer (`dest` is a
        directory, as the request says or, when it does not say, as the disk shows).
    """
    if request.download_path is not None:
        return request.download_path
    is_dir = request.dest_is_dir
    if is_dir is None:
        is_dir = request.dest.is_dir()
    return None if is_dir else request.dest


def choose_spot(folder: DestDir, response: requests.Response, request: TransferRequest) -> Spot:
    """The server's (or URL's) name in `folder`, made distinct from files of other sources
    and from names other unfinished jobs hold.

    Args:
        folder: the destination directory, open.
        response: the answer that names the file.
        request: the transfer's request: its URL (a file stamped with it is this job's to
            replace), and `reserve`/`release` for names.

    Returns:
        The spot, its name reserved for this job.

    Raises:
        UnsafeDestinationError: a link where the file or the engine's files would go.
        DestinationBusyError: every one of the distinct names is taken.
    """
    name = choose_filename(request.url, header(response, "Content-Disposition"))
    for number in range(MAX_DISTINCT_NAMES):
        spot = Spot(folder, distinct_name(name, number))
        # Reserve first, then look: a job renames its file into place before it lets go of
        # the name, so what the disk shows now is final for this name.
        if not request.reserve(spot.path):
            continue
        if folder.stat(spot.name) is not None and spot.origin_url() != request.url:
            request.release(spot.path)
            continue  # someone else's file (or link): never overwrite it
        try:
            spot.refuse_links()
        except UnsafeDestinationError:
            request.release(spot.path)
            raise
        return spot
    raise DestinationBusyError(
        f"{MAX_DISTINCT_NAMES} files named like {name} already exist in {request.dest}; choose "
        "another destination"
    )
