"""A `requests` session that reads the environment's proxy settings once per origin.

With `trust_env` (the default), requests works out each request's proxies from the
environment: `urllib`'s `getproxies` walks every variable of `os.environ`, twice per request
(once for the proxies, once for `no_proxy`): about 0.2 ms of CPU per GET, more with a large
environment, for a small file a thirtieth of the job (benchmarks/README.md, issue 22). A
worker's environment does not change while it runs, so what it says for an origin (scheme,
host and port: all that `no_proxy` looks at) is kept. Everything else requests takes from the
environment (the CA bundle, `.netrc`) it still takes per request, as it does.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.sessions import merge_setting
from requests.utils import get_environ_proxies


class EnvironmentOnceSession(requests.Session):
    """A session whose environment proxies are looked up once per origin and `no_proxy`
    (a request's own `proxies` may name one). One per thread, like any requests session."""

    def __init__(self) -> None:
        super().__init__()
        self._environment_proxies: dict[tuple[str, str, str | None], dict[str, str]] = {}

    def merge_environment_settings(
        self,
        url: str,
        proxies: dict[str, str] | None,
        stream: bool | None,
        verify: Any,
        cert: Any,
    ) -> dict[str, Any]:
        if not self.trust_env or proxies is None:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        # requests' own steps (Session.merge_environment_settings), the proxies kept.
        no_proxy = proxies.get("no_proxy")
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc, no_proxy)
        found = self._environment_proxies.get(key)
        if found is None:
            found = self._environment_proxies[key] = get_environ_proxies(url, no_proxy=no_proxy)
        for name, value in found.items():
            proxies.setdefault(name, value)
        if verify is True or verify is None:  # the CA bundle: two lookups, no walk
            verify = (
                os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or verify
            )
        return {
            "proxies": merge_setting(proxies, self.proxies),
            "stream": merge_setting(stream, self.stream),
            "verify": merge_setting(verify, self.verify),
            "cert": merge_setting(cert, self.cert),
        }
