"""Every Redis client of the project is built here, from `DOWNLOADER_REDIS_URL` and its
companions, so that a primary found through Sentinel, TLS and an ACL user mean the same thing
to the job store, the event bus, the API and the broker.

The URL names one server (`redis://`, `rediss://` for TLS, `unix://`) or, in Celery's form, the
sentinels that know the primary: `sentinel://h1:26379;sentinel://h2:26379;sentinel://h3:26379`
(an optional `/db` on any of them), the primary being `DOWNLOADER_REDIS_MASTER_NAME`. A
`user:password@` in the URL logs in as that ACL user on the data nodes (sentinels are asked
without credentials). With Sentinel, TLS is on (to the sentinels and the data nodes alike)
when a `DOWNLOADER_REDIS_TLS_*` file is set; otherwise `rediss://` says so.

Clients that must ride out a restart or a failover retry what waiting can mend (a refused or
dropped connection, a primary being elected, a demoted primary) and give up at once on what it
cannot (a refused password, a certificate that does not verify, a command the ACL forbids), so
a misconfigured process says why within a second instead of retrying for minutes. A
Sentinel-managed connection asks the sentinels for the primary's address on every connect, so
a reconnection after a failover reaches the new primary; a pub/sub connection subscribes again
to its channels when it reconnects.

What is built here imports neither Celery nor kombu: the broker's settings are plain values
that `celery_app` hands to them.
"""

from __future__ import annotations

import errno
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel

from downloader.config import Settings
from downloader.store.sentinels import (
    AsyncFollowingConnection,
    AsyncFollowingSSLConnection,
    FollowingConnection,
    FollowingSSLConnection,
)

SENTINEL_PORT = 26379
SENTINEL_TIMEOUT = 2.0
"""Seconds a sentinel has to answer before the next one is asked."""

TRANSPORT = "downloader-redis"
SENTINEL_TRANSPORT = "downloader-sentinel"
"""The names `celery_app.transport` registers its kombu transports under."""

_DIRECT_SCHEMES = ("redis", "rediss", "unix", "redis+socket")


class RedisUrlError(ValueError):
    """`DOWNLOADER_REDIS_URL` (or a TLS setting beside it) cannot be used; says which, never
    the URL itself (it may hold a password)."""


def transient(error: Exception) -> bool:
    """Whether waiting can mend `error`: a refused or dropped connection, a primary not yet
    elected; not a refused login, a certificate that does not verify, a missing socket file."""
    if isinstance(error, redis.AuthenticationError | redis.exceptions.AuthorizationError):
        return False
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return False
        if isinstance(cause, OSError) and cause.errno == errno.ENOENT:
            return False
        cause = cause.__cause__ or cause.__context__
    text = str(error)
    return "CERTIFICATE_VERIFY_FAILED" not in text and "WRONGPASS" not in text


_BACKOFF = ExponentialBackoff(cap=2.0, base=0.05)
"""Between tries: 0.1 s, doubling to 2 s."""


def retries_within(seconds: float) -> int:
    """How many tries with `_BACKOFF` between them span about `seconds`."""
    tries, spent = 0, 0.0
    while spent < seconds:
        tries += 1
        spent += _BACKOFF.compute(tries)
    return tries


def riding_out(seconds: float) -> Retry:
    """Retry a transient failure for about `seconds` (a restart, a failover)."""
    return Retry(_BACKOFF, retries_within(seconds), is_retryable=transient)


def _async_riding_out(seconds: float) -> AsyncRetry:
    return AsyncRetry(_BACKOFF, retries_within(seconds), is_retryable=transient)


@dataclass(frozen=True)
class Broker:
    """What Celery and kombu are given for this Redis: plain values, JSON-serialisable (so
    that `celery inspect stats` can report them)."""

    url: str
    transport: str
    transport_options: dict[str, Any]
    use_ssl: dict[str, Any] | None
    backend_url: str
    backend_options: dict[str, Any]


class RedisTarget:
    """The Redis `DOWNLOADER_REDIS_URL` names, and how to reach it."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.settings = settings
        parts = [part.strip() for part in url.split(";") if part.strip()]
        if not parts:
            raise RedisUrlError("DOWNLOADER_REDIS_URL is empty")
        split = [urlsplit(part) for part in parts]
        schemes = {part.scheme for part in split}
        self.sentinels: list[tuple[str, int]] = []
        if schemes == {"sentinel"}:
            for part in split:
                try:
                    port = part.port or SENTINEL_PORT
                except ValueError:
                    raise RedisUrlError(
                        "DOWNLOADER_REDIS_URL: a sentinel's port is not a number"
                    ) from None
                if not part.hostname:
                    raise RedisUrlError("DOWNLOADER_REDIS_URL: a sentinel:// part has no host")
                self.sentinels.append((part.hostname, port))
            paths = [part.path.strip("/") for part in split if part.path.strip("/")]
            if paths and not paths[0].isdigit():
                raise RedisUrlError("DOWNLOADER_REDIS_URL: the /db of a sentinel URL is a number")
            self.db = int(paths[0]) if paths else 0
            login = next((part for part in split if part.password or part.username), split[0])
            self.username = unquote(login.username) if login.username else None
            self.password = unquote(login.password) if login.password else None
            # Each part whole (login and db), as kombu and Celery's backend read the first.
            credentials = login.netloc.rpartition("@")[0]
            at = f"{credentials}@" if credentials else ""
            self.url = ";".join(
                f"sentinel://{at}{f'[{host}]' if ':' in host else host}:{port}/{self.db}"
                for host, port in self.sentinels
            )
        elif len(parts) == 1 and split[0].scheme in _DIRECT_SCHEMES:
            self.url = parts[0]
            if split[0].scheme == "redis+socket":  # kombu's name for a socket
                self.url = "unix://" + parts[0].removeprefix("redis+socket://")
            self.db = 0
            self.username = unquote(split[0].username) if split[0].username else None
            self.password = unquote(split[0].password) if split[0].password else None
        else:
            raise RedisUrlError(
                "DOWNLOADER_REDIS_URL must be redis://host:port/db, rediss://... (TLS), "
                "unix:///path or sentinel://host:port;sentinel://host:port;... (Celery's form), "
                f"not {'+'.join(sorted(schemes)) or 'a URL without a scheme'}"
            )
        self.master_name = settings.redis_master_name
        tls_files = (
            settings.redis_tls_ca_file,
            settings.redis_tls_cert_file,
            settings.redis_tls_key_file,
        )
        scheme = split[0].scheme
        self.tls = scheme == "rediss" or (bool(self.sentinels) and any(tls_files))
        if any(tls_files) and not self.tls:
            raise RedisUrlError(
                f"DOWNLOADER_REDIS_TLS_* is set but DOWNLOADER_REDIS_URL is a {scheme}:// URL, "
                "which is not TLS: use rediss:// (or sentinel://)"
            )
        if bool(settings.redis_tls_cert_file) != bool(settings.redis_tls_key_file):
            raise RedisUrlError(
                "DOWNLOADER_REDIS_TLS_CERT_FILE and DOWNLOADER_REDIS_TLS_KEY_FILE go together"
            )
        for name, path in zip(("CA", "CERT", "KEY"), tls_files, strict=True):
            if path is not None and not path.is_file():
                raise RedisUrlError(f"DOWNLOADER_REDIS_TLS_{name}_FILE: no file {path}")

    # -- what it is -------------------------------------------------------------------------

    @property
    def shown(self) -> str:
        """The URL without its password, for logs and errors."""
        if self.sentinels:
            hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
            return f"primary {self.master_name!r} of sentinels {hosts}"
        text = self.url
        if self.password:
            text = text.replace(f":{self._quoted_password()}@", ":***@", 1)
        return text

    def _quoted_password(self) -> str:
        return urlsplit(self.url).password or ""

    def scrub(self, text: str) -> str:
        """`text` with this URL's password masked, should a library have quoted it."""
        if self.password:
            text = text.replace(self.password, "***")
            quoted = self._quoted_password()
            if quoted:
                text = text.replace(quoted, "***")
        return text

    # -- redis-py ------------------------------------------------------------------------------

    def tls_options(self) -> dict[str, Any]:
        """redis-py's TLS keywords (empty without TLS)."""
        if not self.tls:
            return {}
        settings = self.settings
        options: dict[str, Any] = {"ssl_cert_reqs": "required"}
        if settings.redis_tls_ca_file:
            options["ssl_ca_certs"] = str(settings.redis_tls_ca_file)
        if settings.redis_tls_cert_file and settings.redis_tls_key_file:
            options["ssl_certfile"] = str(settings.redis_tls_cert_file)
            options["ssl_keyfile"] = str(settings.redis_tls_key_file)
        return options

    def _sentinel_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """How the sentinels are asked: short timeouts (the next one is asked), TLS as the
        data nodes."""
        asked = {
            "socket_timeout": min(options.get("socket_timeout") or SENTINEL_TIMEOUT, 2.0),
            "socket_connect_timeout": SENTINEL_TIMEOUT,
        }
        if self.tls:
            asked.update(ssl=True, **self.tls_options())
        return asked

    def _node_options(self) -> dict[str, Any]:
        node: dict[str, Any] = {"db": self.db, "username": self.username}
        node["password"] = self.password
        if self.tls:
            node.update(ssl=True, **self.tls_options())
        return node

    def client(self, **options: Any) -> redis.Redis:
        """A redis-py client of the primary; `options` go to its connections."""
        if not self.sentinels:
            return redis.Redis.from_url(self.url, **self.tls_options(), **options)
        sentinel = Sentinel(self.sentinels, sentinel_kwargs=self._sentinel_options(options))
        connection = FollowingSSLConnection if self.tls else FollowingConnection
        return sentinel.master_for(
            self.master_name, connection_class=connection, **self._node_options(), **options
        )

    def async_client(self, **options: Any) -> aredis.Redis:
        """An asyncio client of the primary (the API's shared event subscription)."""
        if not self.sentinels:
            return aredis.Redis.from_url(self.url, **self.tls_options(), **options)
        sentinel = AsyncSentinel(self.sentinels, sentinel_kwargs=self._sentinel_options(options))
        connection = AsyncFollowingSSLConnection if self.tls else AsyncFollowingConnection
        return sentinel.master_for(
            self.master_name, connection_class=connection, **self._node_options(), **options
        )

    def riding_client(self, **options: Any) -> redis.Redis:
        """The client of a process's long work: it rides out a restart or a failover."""
        ride_out = self.settings.redis_ride_out
        return self.client(health_check_interval=30, retry=riding_out(ride_out), **options)

    def riding_async_client(self) -> aredis.Redis:
        ride_out = self.settings.redis_ride_out
        return self.async_client(health_check_interval=30, retry=_async_riding_out(ride_out))

    # -- Celery and kombu ---------------------------------------------------------------------

    def broker(self, transport_options: Mapping[str, Any]) -> Broker:
        """The broker and result backend settings for Celery, with `transport_options` (the
        queue's own: priorities, prefix, timeouts) completed for Sentinel and TLS."""
        options = dict(transport_options)
        backend_options = {"global_keyprefix": options.get("global_keyprefix", "")}
        use_ssl = None
        if self.tls:
            use_ssl = {
                "ssl_cert_reqs": ssl.CERT_REQUIRED,
                **{k: v for k, v in self.tls_options().items() if k != "ssl_cert_reqs"},
            }
        if self.sentinels:
            sentinel = {"master_name": self.master_name}
            sentinel["sentinel_kwargs"] = self._sentinel_options({})  # type: ignore[assignment]
            options.update(sentinel)
            backend_options.update(sentinel)
            return Broker(self.url, SENTINEL_TRANSPORT, options, use_ssl, self.url, backend_options)
        url = self.url
        if url.startswith("unix://"):
            url = "redis+socket://" + url.removeprefix("unix://")
        return Broker(url, TRANSPORT, options, use_ssl, url, backend_options)

    # -- errors --------------------------------------------------------------------------------

    def explain(self, error: BaseException) -> str:
        """One line saying what went wrong with this Redis and what to check, password-free."""
        where = self.shown
        said = self.scrub(str(error).strip().rstrip(".")) or type(error).__name__
        if isinstance(error, redis.AuthenticationError):
            line = (
                f"Redis at {where} refused the login: {said} (check the user and password "
                "in DOWNLOADER_REDIS_URL)"
            )
        elif isinstance(error, redis.exceptions.NoPermissionError):
            user = self.username or "default"
            line = (
                f"Redis at {where} refused a command to user {user!r}: {said} (the user needs "
                "the commands, keys and channels of deploy/redis-acl.conf)"
            )
        elif isinstance(error, MasterNotFoundError):
            line = (
                f"no sentinel names a reachable primary {self.master_name!r} "
                f"(DOWNLOADER_REDIS_MASTER_NAME): {said}"
            )
        elif not transient(error) and "CERTIFICATE_VERIFY_FAILED" in said:
            line = (
                f"cannot reach Redis at {where}: its TLS certificate does not verify "
                f"({said}); check DOWNLOADER_REDIS_TLS_CA_FILE"
            )
        else:
            line = f"cannot reach Redis at {where}: {said}"
        return " ".join(line.split())


def is_redis_error(error: BaseException) -> bool:
    """A failure of Redis (or of reaching it), as opposed to a bug or a user's input."""
    return isinstance(error, redis.RedisError)
