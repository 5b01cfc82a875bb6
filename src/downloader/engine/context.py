"""What the attempts of one `transfer.fetch` share, built once per call."""

from __future__ import annotations

from dataclasses import dataclass

import requests

from downloader.engine.request import TransferHooks, TransferRequest
from downloader.engine.sources import Sources
from downloader.engine.versions import Versions
from downloader.engine.watchdog import Watchdog


@dataclass(frozen=True)
class FetchContext:
    """The request, its hooks, the watchdog of its connections, the URLs it asks and its
    version policy."""

    request: TransferRequest
    hooks: TransferHooks
    watchdog: Watchdog
    sources: Sources
    versions: Versions

    @classmethod
    def of(
        cls, request: TransferRequest, session: requests.Session, hooks: TransferHooks
    ) -> FetchContext:
        watchdog = Watchdog(hooks.check, request.lowest_speed, request.speed_window)
        versions = Versions(request)
        sources = Sources(request, session, watchdog, versions)
        return cls(request, hooks, watchdog, sources, versions)
