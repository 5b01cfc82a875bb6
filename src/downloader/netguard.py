"""A requests session that only connects to public addresses, for untrusted callers' jobs.

A URL from the REST API could point at the worker's own network (loopback, private ranges,
link-local, a cloud metadata service). Checking the host name before the request is not
enough: a redirect or a DNS answer that changes between the check and the connect would slip
through. So the check sits in the connection itself: every connection, the first and every
redirect's, resolves the host, refuses the whole answer if any address is not public, and
connects to the address it checked.
"""

from __future__ import annotations

import ipaddress
import socket

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from downloader.transfer import TransferError


class ForbiddenAddressError(TransferError):
    """The URL (or a redirect) leads to an address an untrusted job may not reach."""


def public_address(host: str, port: int) -> tuple[socket.AddressFamily, tuple]:
    """Resolve `host` once; answers the first address, refusing any non-public answer."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0])
        if not address.is_global or address.is_multicast:
            raise ForbiddenAddressError(
                f"{host} resolves to {address}, a private, loopback or link-local address that "
                "jobs from untrusted callers may not reach; set "
                "DOWNLOADER_ALLOW_PRIVATE_NETWORKS=true to allow it"
            )
    family, *_, sockaddr = infos[0]
    return family, sockaddr


class _PublicOnly:
    """Mixed into urllib3 connections: connect only to the address that was checked."""

    host: str
    port: int
    timeout: object

    def _new_conn(self) -> socket.socket:
        family, sockaddr = public_address(self.host, self.port)
        sock = socket.socket(family, socket.SOCK_STREAM)
        if isinstance(self.timeout, int | float):
            sock.settimeout(self.timeout)
        try:
            sock.connect(sockaddr)
        except OSError:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


class _PublicHTTPConnection(_PublicOnly, HTTPConnection):
    pass


class _PublicHTTPSConnection(_PublicOnly, HTTPSConnection):
    pass


class _PublicHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PublicHTTPConnection


class _PublicHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PublicHTTPSConnection


class PublicOnlyAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _PublicHTTPPool,
            "https": _PublicHTTPSPool,
        }


def public_only_session() -> requests.Session:
    session = requests.Session()
    adapter = PublicOnlyAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
