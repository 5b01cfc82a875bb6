"""What counts as one origin (scheme, host, port) of a URL, and which token may go there.

Two decisions hinge on it and must agree: which token may be sent to a URL (only the origin
it was made for), and whether an answer came from somewhere a source redirected to (a CDN's
signed URL, which expires). requests drops `Authorization` when a redirect changes the host,
or the port or scheme, except from `http://host` to `https://host`; `BearerAuth` drops it on
that one too, so a token never reaches an origin it was not made for.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.auth import AuthBase

_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?")
"""An ASCII host name as a URL carries it (an IDN in its `xn--` form)."""
_NOT_A_HOST = "it is not a host name (ASCII letters, digits, '-' and '.'; or an IP address)"

Origin = tuple[str, str, int | None]


def origin(url: str) -> Origin:
    """The origin of a URL, the unit a token is bound to.

    Args:
        url: any URL.

    Returns:
        `(scheme, host, port)`, lower-cased, with the scheme's default port filled in (None
        for an unknown scheme without a port).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme)


def configured_origin(key: str) -> Origin:
    """The origin a configured key names (`DOWNLOADER_HOST_TOKENS`).

    Args:
        key: a bare host (`huggingface.co`, `10.0.0.5`, `[fd00::1]`), which means that host
            over https on port 443; or `https://host:8443`, `http://host:8080`, which names
            one explicitly: only such a key lets a token go over plain http.

    Returns:
        The origin.

    Raises:
        ValueError: saying what is wrong with the key (a path, a user, a port on a bare
            host, not a host name).
    """
    if not key.isprintable() or any(char.isspace() for char in key):
        raise ValueError(_NOT_A_HOST)
    explicit = "://" in key
    try:
        parts = urlsplit(key if explicit else f"https://{key}")
    except ValueError:  # a netloc that NFKC normalisation changes
        raise ValueError(_NOT_A_HOST) from None
    if explicit and parts.scheme.lower() not in _DEFAULT_PORTS:
        raise ValueError("an origin starts with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise ValueError("an origin has no user or password")
    if parts.path not in ("", "/") or parts.query or parts.fragment or key.endswith(("?", "#")):
        raise ValueError("an origin has no path, query or fragment: scheme://host[:port]")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError("the port is not a number from 1 to 65535 (an IPv6 host goes in [])")
    if not explicit and (port is not None or parts.netloc.endswith(":")):
        raise ValueError(
            "a bare host means https on port 443: to name another port, write the origin, "
            f"e.g. https://{parts.hostname}:{port or 8443}"
        )
    host = parts.hostname
    if not host:
        raise ValueError("it names no host")
    if not _is_ip(host) and not _HOST_NAME.fullmatch(host):
        raise ValueError(_NOT_A_HOST)
    return origin(f"{parts.scheme}://{parts.netloc}")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def shown(key: Origin) -> str:
    """An origin as a URL prefix, for messages.

    Args:
        key: an origin.

    Returns:
        `https://huggingface.co:443`; an IPv6 host in brackets.
    """
    scheme, host, port = key
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


class BearerAuth(AuthBase):
    """`Authorization: Bearer <token>` on a request to the origin of `url`, and on no other:
    a request elsewhere goes without it, and it is taken off before requests follows a
    redirect out of that origin (a response hook runs before the next hop is prepared)."""

    def __init__(self, token: str, url: str) -> None:
        self.token, self.origin = token, origin(url)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if origin(request.url or "") == self.origin:
            request.headers["Authorization"] = f"Bearer {self.token}"
            request.register_hook("response", self._before_redirect)
        return request

    def _before_redirect(self, response: requests.Response, **_: Any) -> requests.Response:
        if response.is_redirect and not self._stays(response):
            response.request.headers.pop("Authorization", None)
        return response

    def _stays(self, response: requests.Response) -> bool:
        """Whether the redirect's target is this origin; a target that does not parse is not."""
        try:
            return origin(urljoin(response.url, response.headers["location"])) == self.origin
        except ValueError:
            return False
