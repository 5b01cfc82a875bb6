"""One place for every knob, read from `DOWNLOADER_*` environment variables.

Workers, the CLI and services on other machines must agree on the Redis URL and namespace,
so they all read them here instead of taking them from wherever they happen to be started.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from downloader.engine.origins import Origin, configured_origin, origin, shown
from downloader.jobs.limits import DEFAULT_HOST_CONNECTIONS, HostLimit, Limits, Rate, host_limits
from downloader.jobs.models import bearer_token
from downloader.jobs.queues import QUEUE_ID_RULE, check_queue_id

SEGMENTS_AT_FIRST = 8
"""The segments a large file starts with when `segments` is auto (the host's cap permitting)."""


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "downloader"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DOWNLOADER_", extra="ignore", hide_input_in_errors=True
    )
    """Errors never quote their input: it may be a token."""

    redis_url: str | None = Field(
        default=None, description="Redis for broker, results, jobs and events; unset: embedded"
    )
    redis_master_name: str = Field(
        default="mymaster",
        min_length=1,
        description="the primary's name at the sentinels, with a sentinel:// DOWNLOADER_REDIS_URL",
    )
    redis_min_replicas: int | None = Field(
        default=None,
        ge=0,
        description="replicas that must confirm a job's creation and end (WAIT); unset: 1 when "
        "the primary reports a connected replica, else 0",
    )
    redis_wait_timeout: float = Field(
        default=1.0, gt=0, description="seconds a write waits for its replicas"
    )
    redis_ride_out: float = Field(
        default=60.0,
        ge=0,
        description="seconds a Redis command is tried again through a restart or a failover "
        "(a refused or dropped connection, a primary not yet elected) before it fails",
    )
    redis_tls_ca_file: Path | None = Field(
        default=None, description="CA certificates that sign Redis's (and the sentinels') TLS"
    )
    redis_tls_cert_file: Path | None = Field(
        default=None, description="client certificate for Redis's TLS, with its key file"
    )
    redis_tls_key_file: Path | None = Field(
        default=None, description="the client certificate's private key"
    )
    namespace: str = Field(default="downloader", description="prefix of every Redis key")
    state_dir: Path = Field(
        default_factory=_default_state_dir, description="where the embedded Redis keeps its data"
    )
    queue_id: str = Field(
        default="default",
        description=f"the queue a worker or CLI works on: {QUEUE_ID_RULE}",
    )
    metrics_queues: list[str] = Field(
        default_factory=list,
        description="queues with /metrics series of their own besides DOWNLOADER_QUEUE_ID and "
        'those live workers consume, JSON: ["a", "b"]; every other queue is summed as "other"',
    )
    concurrency: int = Field(default=5, ge=1, description="parallel downloads of one worker")
    chunk_size: int = Field(default=1 << 20, ge=4096, description="bytes read per chunk")
    segments: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default="auto",
        description="connections for one large file from a range-capable server: a number "
        f"keeps that many; auto starts with {SEGMENTS_AT_FIRST} and adds more while they add "
        "throughput, up to the host's connection cap",
    )
    segment_threshold: int = Field(
        default=64 << 20, ge=1 << 20, description="files from this size on are segmented"
    )
    connect_timeout: float = Field(default=10.0, gt=0)
    read_timeout: float = Field(default=60.0, gt=0, description="seconds without a byte")
    lease_seconds: float = Field(
        default=30.0, gt=1, description="a job's lease; renewed by its worker every third of it"
    )
    visibility_timeout: int = Field(
        default=300,
        ge=10,
        description="seconds before an unacknowledged message is redelivered; short is safe: "
        "a redelivery of a running or finished job is dropped by the claim",
    )
    lowest_speed: int = Field(
        default=1024,
        ge=0,
        description="bytes/s below which a transfer, for a whole lowest_speed_window, is a "
        "stall (retried); 0: never",
    )
    lowest_speed_window: float = Field(
        default=60.0, gt=0, description="seconds over which lowest_speed is measured"
    )
    result_ttl: float = Field(
        default=7 * 24 * 3600,
        ge=0,
        description="seconds a finished job is kept before it expires; 0 keeps them for ever",
    )
    progress_interval: float = Field(default=0.25, ge=0, description="min seconds between events")
    max_retries: int = Field(default=5, ge=0, description="retries of a failing transfer")
    retry_backoff: float = Field(default=1.0, gt=0, description="first retry delay, doubling")
    host_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='bearer tokens per origin, JSON: {"huggingface.co": "hf_..."}; a bare host '
        "is https on port 443, `http://host:port` or `https://host:port` names another origin",
    )
    hf_endpoint: str = Field(
        default="https://huggingface.co",
        description="the Hugging Face hub (or a mirror of it) that `hf://` sources resolve on",
    )
    hf_mirrors: list[AnyHttpUrl] = Field(
        default_factory=list,
        description='mirrors of the hub, JSON: ["https://hf-mirror.example"]; hub files also '
        "come from `resolve/<commit>/<path>` on each, verified by the hub's hash",
    )
    bandwidth: Rate = Field(
        default=0,
        description="download bandwidth of the whole fleet (every worker and get of this Redis "
        "and namespace), e.g. 200MiB; 0: unlimited. A default: `downloader limits set` overrides",
    )
    host_limits: dict[str, HostLimit] = Field(
        default_factory=dict,
        description='limits per host, JSON: {"huggingface.co": {"connections": 8, "bandwidth": '
        '"100MiB", "requests_per_second": 10}}; defaults, as bandwidth',
    )
    host_connections: int = Field(
        default=DEFAULT_HOST_CONNECTIONS,
        ge=1,
        description="concurrent connections the fleet opens to a host not named in host_limits "
        "(each segment counts)",
    )
    slot_lease_seconds: float = Field(
        default=10.0,
        ge=2,
        description="a connection slot's lease: a dead worker's slots come back after it",
    )
    untrusted_proxy: str | None = Field(
        default=None,
        description="the only proxy untrusted (REST) jobs use; they ignore HTTP(S)_PROXY",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="key the REST API requires on every route but /health; blank is refused",
    )
    max_body_bytes: int = Field(
        default=1 << 20, ge=1024, description="largest request body the REST API reads"
    )
    api_max_event_streams: int = Field(
        default=100,
        ge=1,
        description="event streams one REST API process serves at once; the next is a 503",
    )
    download_root: Path = Field(
        default=Path("downloads"), description="the REST API's `dest` is relative to this"
    )
    allow_private_networks: bool = Field(
        default=False, description="let REST callers download from private addresses"
    )

    @field_validator("queue_id")
    @classmethod
    def _plain_queue_id(cls, queue_id: str) -> str:
        return check_queue_id(queue_id)

    @field_validator("metrics_queues")
    @classmethod
    def _plain_metrics_queues(cls, queues: list[str]) -> list[str]:
        return [check_queue_id(queue_id) for queue_id in queues]

    @property
    def metrics_known_queues(self) -> list[str]:
        """The queues configured to have /metrics series of their own (see `api.metrics`)."""
        return [self.queue_id, *self.metrics_queues]

    @field_validator("host_limits", mode="before")
    @classmethod
    def _bare_hosts(cls, value: object) -> object:
        return host_limits(value)

    @property
    def limits(self) -> Limits:
        """The limits these settings set: the fleet's defaults, which run-time overrides in
        Redis win over (see `store.limits`)."""
        return Limits(
            bandwidth=self.bandwidth,
            host_connections=self.host_connections,
            hosts=self.host_limits,
        )

    def segment_counts(self, cap: int) -> tuple[int, int]:
        """How many segments a large file starts with, and the most its plan grows to.

        Args:
            cap: the connections the fleet may open to the file's host.

        Returns:
            A number `segments` fixes: that, and that. Auto: `SEGMENTS_AT_FIRST` (at most
            `cap`), and `cap`.
        """
        if self.segments == "auto":
            return min(SEGMENTS_AT_FIRST, cap), cap
        return self.segments, self.segments

    @field_validator("host_tokens")
    @classmethod
    def _header_safe_tokens(cls, tokens: dict[str, SecretStr]) -> dict[str, SecretStr]:
        """Each key names one origin (see `configured_origin`), no two the same one, and each
        token can go into a header; an error names the key, never the token."""
        cleaned: dict[str, SecretStr] = {}
        keys: dict[Origin, str] = {}
        for key, token in tokens.items():
            try:
                target = configured_origin(key)
            except ValueError as exc:
                raise ValueError(f"key {key!r}: {exc}") from None
            if target in keys:
                raise ValueError(
                    f"keys {keys[target]!r} and {key!r} name the same "
                    f"origin, {shown(target)}: keep one"
                )
            keys[target] = key
            try:
                value = bearer_token(token.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"DOWNLOADER_HOST_TOKENS[{key!r}]: {exc}") from None
            if value is None:
                raise ValueError(f"DOWNLOADER_HOST_TOKENS[{key!r}] is empty")
            cleaned[key] = SecretStr(value)
        return cleaned

    def host_token(self, url: str) -> str | None:
        """The token configured for `url`'s origin (scheme, host and port), if any: a job
        without a token of its own sends it to that origin only."""
        target = origin(url)
        for key, token in self.host_tokens.items():
            if configured_origin(key) == target:
                return token.get_secret_value()
        return None
