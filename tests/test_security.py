"""Hostile callers and origins: the private-address guard, proxies, and tokens kept secret.

Real worker processes, a real forwarding proxy (tests/proxy.py) and the real origin: the
proxy records every URL it is asked for, so "never reached" is what the proxy saw, and a
token is looked for in every job field, event, REST answer and worker log line.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import requests
from fastapi.testclient import TestClient
from pydantic import ValidationError
from requests import PreparedRequest, Response, Session

from downloader import DownloadJob, DownloadJobStatus, DownloadQueueService, RemoteModelFile
from downloader.api import create_api
from downloader.config import Settings
from downloader.engine.netguard import ForbiddenAddressError, public_address, public_only_session
from downloader.engine.redact import MASK
from downloader.store.bus import Subscription
from tests.conftest import WorkerProcess, keys_matching
from tests.origin import Origin
from tests.proxy import RecordingProxy
from tests.test_queue import sha256, wait_until
from tests.test_seed_api import TestAdapter

Q = "/api/v1/queue/default"
PUBLIC = "93.184.215.14"
"""A public address: the guard lets it through, the recording proxy stands in for it."""

# -- the guard's address ranges -------------------------------------------------------------


@pytest.mark.parametrize(
    ("literal", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700::1111", True),
        ("127.0.0.1", False),
        ("fd00::1", False),
        # NAT64, well-known prefix: the last 32 bits are the IPv4 address reached.
        ("64:ff9b::808:808", True),
        ("64:ff9b::7f00:1", False),  # 127.0.0.1
        ("64:ff9b::a00:1", False),  # 10.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # 169.254.169.254, the metadata service
        ("64:ff9b::6440:1", False),  # 100.64.0.1, shared address space
        ("64:ff9b::e000:1", False),  # 224.0.0.1, multicast
        # NAT64, local-use prefix: not globally reachable, whatever it embeds.
        ("64:ff9b:1::a00:1", False),
        ("64:ff9b:1::808:808", False),
        # 6to4: bits 16..47.
        ("2002:808:808::1", True),
        ("2002:7f00:1::1", False),
        ("2002:c0a8:101::1", False),  # 192.168.1.1
        ("2002:a9fe:a9fe::", False),
        # Teredo: the client address is the last 32 bits, XORed with 0xffffffff.
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),  # client 127.0.0.1
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", False),  # client 10.0.0.1
        ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", False),  # client 8.8.8.8: Teredo, not global
        # IPv4-mapped and IPv4-compatible.
        ("::ffff:8.8.8.8", True),
        ("::ffff:127.0.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("::ffff:10.1.2.3", False),
        ("::8.8.8.8", True),
        ("::127.0.0.1", False),
        ("::a9fe:a9fe", False),
        ("::c0a8:1", False),
        ("::ffff:0:7f00:1", False),  # IPv4-translated (SIIT) 127.0.0.1
        ("::ffff:0:a00:1", False),  # ... and 10.0.0.1
    ],
)
def test_addresses_are_judged_by_the_ipv4_address_they_embed(literal: str, public: bool) -> None:
    if public:
        _, sockaddr = public_address(literal, 80)
        assert sockaddr[0] == literal
    else:
        with pytest.raises(ForbiddenAddressError, match="DOWNLOADER_ALLOW_PRIVATE_NETWORKS"):
            public_address(literal, 80)


# -- proxies ----------------------------------------------------------------------------------


@pytest.fixture
def proxy(origin: Origin) -> Iterator[RecordingProxy]:
    server = RecordingProxy(upstream=origin.base).start()
    yield server
    server.stop()


def proxy_env(proxy: str) -> dict[str, str]:
    """The environment of a worker behind an egress proxy, with nothing exempt from it."""
    return {
        "HTTP_PROXY": proxy, "http_proxy": proxy, "HTTPS_PROXY": proxy, "https_proxy": proxy,
        "NO_PROXY": "", "no_proxy": "",
    }  # fmt: skip


def test_untrusted_jobs_ignore_the_environment_proxy_and_trusted_jobs_use_it(
    spawn_worker: Callable[..., WorkerProcess],
    make_service: Callable[..., DownloadQueueService],
    proxy: RecordingProxy,
    origin: Origin,
    tmp_path: Path,
) -> None:
    digest = origin.add("inside.bin", os.urandom(4096))
    spawn_worker(env=proxy_env(proxy.url))
    client = make_service(start_worker=False)
    untrusted = client.download(origin.url("/files/inside.bin"), tmp_path / "u", untrusted=True)
    client.wait_for_job(untrusted, timeout=30)
    assert (untrusted.error_type or "").startswith("ForbiddenAddressError(")
    assert proxy.asked == [] and origin.gets("/files/") == []

    trusted = client.download(origin.url("/files/inside.bin"), tmp_path / "t.bin")
    client.wait_for_job(trusted, timeout=30)
    assert trusted.status == DownloadJobStatus.COMPLETED
    assert sha256(trusted.download_path) == digest
    assert proxy.asked == [origin.url("/files/inside.bin")]


def test_the_untrusted_proxy_carries_public_targets_only_every_redirect_checked_first(
    spawn_worker: Callable[..., WorkerProcess],
    make_service: Callable[..., DownloadQueueService],
    proxy: RecordingProxy,
    origin: Origin,
    tmp_path: Path,
) -> None:
    digest = origin.add("out.bin", os.urandom(4096))
    spawn_worker(env={**proxy_env(proxy.url), "DOWNLOADER_UNTRUSTED_PROXY": proxy.url})
    client = make_service(start_worker=False)

    loopback = client.download(origin.url("/files/out.bin"), tmp_path / "l", untrusted=True)
    client.wait_for_job(loopback, timeout=30)
    assert (loopback.error_type or "").startswith("ForbiddenAddressError(")
    assert proxy.asked == []

    public = f"http://{PUBLIC}/files/out.bin"
    allowed = client.download(public, tmp_path / "p", untrusted=True)
    client.wait_for_job(allowed, timeout=30)
    assert allowed.status == DownloadJobStatus.COMPLETED, allowed.error_type
    assert sha256(allowed.download_path) == digest
    assert proxy.asked == [public]

    bounce = f"http://{PUBLIC}/redirect/out.bin?to={origin.url('/files/out.bin')}"
    redirected = client.download(bounce, tmp_path / "r", untrusted=True)
    client.wait_for_job(redirected, timeout=30)
    assert (redirected.error_type or "").startswith("ForbiddenAddressError(")
    assert proxy.asked == [public, bounce]  # the loopback redirect never left the worker


def test_a_target_the_worker_cannot_resolve_is_not_handed_to_the_untrusted_proxy(
    proxy: RecordingProxy,
) -> None:
    session = public_only_session(proxy.url)
    with pytest.raises(requests.ConnectionError, match="cannot resolve"):
        session.get("http://no-such-host.invalid/file", timeout=30)
    assert proxy.asked == []


@pytest.mark.parametrize("through_proxy", [False, True])
def test_an_untrusted_job_for_a_host_that_does_not_exist_fails_at_once_naming_it(
    monkeypatch: pytest.MonkeyPatch,
    make_service: Callable[..., DownloadQueueService],
    proxy: RecordingProxy,
    tmp_path: Path,
    through_proxy: bool,
) -> None:
    if through_proxy:
        monkeypatch.setenv("DOWNLOADER_UNTRUSTED_PROXY", proxy.url)
    service = make_service()
    job = service.download("http://no-such-host.invalid/x.bin", tmp_path, untrusted=True)
    service.wait_for_job(job, timeout=30)
    assert job.error_type == "HostNotFoundError(no-such-host.invalid)" and job.attempts == 1
    assert proxy.asked == []


# -- tokens where they enter ------------------------------------------------------------------

BAD_TOKENS = [
    "tok\nSECRET",
    "tok\rSECRET",
    "SECRET\r\nX-Evil: 1",
    "\x00SECRET",
    "SECRET\x7f",
    "SECRETé",
]


@pytest.mark.parametrize("token", BAD_TOKENS)
def test_a_token_a_header_cannot_carry_is_refused_without_being_echoed(
    token: str, service: DownloadQueueService, tmp_path: Path
) -> None:
    with pytest.raises(ValidationError) as refused:
        DownloadJob(source="http://example.com/f", dest=tmp_path, access_token=token)
    assert "SECRET" not in str(refused.value) and "access token" in str(refused.value)
    with pytest.raises(ValueError) as refused:
        service.download("http://example.com/f", tmp_path, access_token=token)
    assert "SECRET" not in str(refused.value)
    part = RemoteModelFile(url="http://example.com/f", path=Path("f"))
    with pytest.raises(ValueError) as refused:
        service.multifile_download([part], tmp_path, access_token=token)
    assert "SECRET" not in str(refused.value)
    assert service.list_jobs() == []


def test_the_api_refuses_such_a_token_with_a_422_that_does_not_echo_it(
    namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOWNLOADER_DOWNLOAD_ROOT", str(tmp_path))
    with TestClient(create_api()) as api:
        for token in BAD_TOKENS:
            body = {"source": "http://example.com/f", "dest": "d", "access_token": token}
            answer = api.post(f"{Q}/enqueue", json=body)
            assert answer.status_code == 422 and "SECRET" not in answer.text
        assert api.get(f"{Q}/list").json()["total"] == 0


def test_surrounding_whitespace_is_stripped_from_a_job_token(
    service: DownloadQueueService, origin: Origin, tmp_path: Path
) -> None:
    origin.add("p.bin", b"private bytes")
    single = service.download(
        origin.url("/private/p.bin"), tmp_path / "one.bin", access_token=f" {origin.token}\n"
    )
    part = RemoteModelFile(url=origin.url("/private/p.bin"), path=Path("p.bin"))
    multi = service.multifile_download(
        [part], tmp_path / "multi", access_token=f"\t{origin.token} \r\n"
    )
    service.join()
    assert single.status == multi.status == DownloadJobStatus.COMPLETED
    sent = {request.headers.get("Authorization") for request in origin.gets("/private/")}
    assert sent == {f"Bearer {origin.token}"}


def test_host_tokens_are_stripped_and_a_bad_one_is_named_by_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOWNLOADER_HOST_TOKENS", json.dumps({"hub.example": " hf_abc\n"}))
    assert Settings().host_tokens["hub.example"].get_secret_value() == "hf_abc"
    for bad in ("hf_\rSECRET", "hf_SECRET\n\nX: y", "  "):
        monkeypatch.setenv("DOWNLOADER_HOST_TOKENS", json.dumps({"hub.example": bad}))
        with pytest.raises(ValidationError) as refused:
            Settings()
        assert "hub.example" in str(refused.value) and "SECRET" not in str(refused.value)


# -- host tokens per origin -------------------------------------------------------------------


@pytest.fixture
def other_port() -> Iterator[Origin]:
    """A second origin on the same host, another port: the same host name, another origin."""
    server = Origin().start()
    yield server
    server.stop()


def host_token_service(
    make_service: Callable[..., DownloadQueueService],
    monkeypatch: pytest.MonkeyPatch,
    tokens: dict[str, str],
) -> DownloadQueueService:
    """A service whose in-process worker has `tokens` as its DOWNLOADER_HOST_TOKENS."""
    monkeypatch.setenv("DOWNLOADER_HOST_TOKENS", json.dumps(tokens))
    monkeypatch.setenv("DOWNLOADER_MAX_RETRIES", "0")
    monkeypatch.setenv("DOWNLOADER_ALLOW_PRIVATE_NETWORKS", "true")  # the origins are loopback
    return make_service()


def authorizations(server: Origin) -> list[str | None]:
    return [request.headers.get("Authorization") for request in server.gets("/private/")]


def test_a_host_token_keyed_by_a_bare_host_goes_to_https_on_443_only(
    make_service: Callable[..., DownloadQueueService],
    monkeypatch: pytest.MonkeyPatch,
    origin: Origin,
    tmp_path: Path,
) -> None:
    service = host_token_service(make_service, monkeypatch, {"127.0.0.1": origin.token})
    origin.add("gated.bin", b"gated")
    job = service.download(origin.url("/private/gated.bin"), tmp_path)
    service.wait_for_job(job, timeout=30)
    assert job.status == DownloadJobStatus.ERROR and "Unauthorized" in (job.error_type or "")
    assert authorizations(origin) == [None]  # plain http on another port: not its origin
    assert not (tmp_path / "gated.bin").exists()


@pytest.mark.parametrize("untrusted", [False, True])
def test_a_host_token_keyed_by_an_origin_goes_to_that_origin_only(
    make_service: Callable[..., DownloadQueueService],
    monkeypatch: pytest.MonkeyPatch,
    origin: Origin,
    other_port: Origin,
    tmp_path: Path,
    untrusted: bool,
) -> None:
    """Untrusted (REST) jobs get the operator's host tokens on exactly their origins, as
    trusted jobs do (README, Tokens); the caller chooses neither the scheme nor the port."""
    service = host_token_service(make_service, monkeypatch, {origin.base: origin.token})
    other_port.token = origin.token  # so that a token that arrived would be accepted there
    for server in (origin, other_port):
        server.add("gated.bin", b"gated")
    sources = {
        "own": origin.url("/private/gated.bin"),
        "other port": other_port.url("/private/gated.bin"),
        "redirected": origin.url(f"/redirect/x?to={other_port.url('/private/gated.bin')}"),
    }
    jobs = {
        name: service.download(source, tmp_path / f"{name}.bin", untrusted=untrusted)
        for name, source in sources.items()
    }
    service.join()
    assert {name: job.status for name, job in jobs.items()} == {
        "own": DownloadJobStatus.COMPLETED,
        "other port": DownloadJobStatus.ERROR,
        "redirected": DownloadJobStatus.ERROR,
    }
    assert (tmp_path / "own.bin").read_bytes() == b"gated"
    assert authorizations(origin) == [f"Bearer {origin.token}"]
    assert authorizations(other_port) == [None, None]


class _Recording(TestAdapter):
    """A canned answer that also keeps the headers of every request it is sent."""

    __test__ = False

    def __init__(self, body: bytes, status: int = 200, headers: dict | None = None) -> None:
        super().__init__(body, status, headers)
        self.seen: list[dict[str, str]] = []

    def send(self, request: PreparedRequest, stream: bool = False, **kwargs: object) -> Response:
        self.seen.append(dict(request.headers))
        return super().send(request, stream, **kwargs)


@pytest.mark.parametrize("keyed", [False, True])
def test_no_token_follows_a_redirect_from_http_to_https_on_the_same_host(
    make_service: Callable[..., DownloadQueueService],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    keyed: bool,
) -> None:
    """requests keeps `Authorization` from http://host to https://host (ports 80 and 443,
    which a test cannot serve, hence the seed's mounted adapters); another origin is another
    origin, though: a token made for the first is not sent to the second."""
    token = f"tok-{uuid.uuid4().hex}"
    monkeypatch.setenv("DOWNLOADER_HOST_TOKENS", json.dumps({"http://hub.test": token}))
    session = Session()
    upgrade = _Recording(b"", 302, {"Location": "https://hub.test/files/model.bin"})
    served = _Recording(b"model bytes", 200, {"Content-Length": "11"})
    session.mount("http://hub.test/", upgrade)
    session.mount("https://hub.test/", served)
    service = make_service(requests_session=session)
    job = service.download(
        "http://hub.test/files/model.bin", tmp_path, access_token=None if keyed else token
    )
    service.wait_for_job(job, timeout=30)
    assert job.status == DownloadJobStatus.COMPLETED, job.error
    assert (tmp_path / "model.bin").read_bytes() == b"model bytes"
    assert [headers.get("Authorization") for headers in upgrade.seen] == [f"Bearer {token}"]
    assert [headers.get("Authorization") for headers in served.seen] == [None]


@pytest.mark.parametrize(
    ("key", "said"),
    [
        ("huggingface.co:8443", "a bare host means https on port 443"),
        ("ftp://hub.example", "http:// or https://"),
        ("https://hub.example/models", "no path"),
        ("https://user:pw@hub.example", "no user"),
        ("https://hub.example?x=1", "no path"),
        ("https://hub.example:99999", "port"),
        ("https://", "no host"),
        ("", "no host"),
        (" hub.example", "not a host name"),
        ("hub example", "not a host name"),
        ("hüb.example", "not a host name"),
    ],
)
def test_a_host_token_key_that_names_no_origin_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, key: str, said: str
) -> None:
    monkeypatch.setenv("DOWNLOADER_HOST_TOKENS", json.dumps({key: "hf_SECRET"}))
    with pytest.raises(ValidationError) as refused:
        Settings()
    text = str(refused.value)
    assert f"host_tokens\n  Value error, key {key!r}: " in text and said in text, text
    assert "SECRET" not in text


def test_two_host_token_keys_for_one_origin_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = {"hub.example": "hf_SECRET1", "https://HUB.example:443/": "hf_SECRET2"}
    monkeypatch.setenv("DOWNLOADER_HOST_TOKENS", json.dumps(tokens))
    with pytest.raises(ValidationError) as refused:
        Settings()
    text = str(refused.value)
    assert "'hub.example' and 'https://HUB.example:443/' name the same origin" in text, text
    assert "SECRET" not in text


# -- no token in any text that leaves ---------------------------------------------------------


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port nothing listens on (bound, never listening) for as long as the test runs."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def redis_texts(client: redis.Redis, namespace: str) -> Iterator[bytes]:
    """Every value under the namespace but the token's own keys."""
    for key in keys_matching(client, f"{namespace}:*"):
        if key.endswith(b":secret"):
            continue
        kind = client.type(key)
        if kind == b"hash":
            yield from client.hgetall(key).values()
        elif kind == b"string":
            yield client.get(key)
        elif kind == b"list":
            yield from client.lrange(key, 0, -1)
        elif kind == b"zset":
            yield from client.zrange(key, 0, -1)
        elif kind == b"set":
            yield from client.smembers(key)


def test_no_token_in_any_field_event_rest_answer_or_log_line(
    spawn_worker: Callable[..., WorkerProcess],
    origin: Origin,
    closed_port: int,
    namespace: str,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_token, host_token = f"job-{uuid.uuid4().hex}", f"host-{uuid.uuid4().hex}"
    origin.token = host_token
    origin.add("ok.bin", b"fine")
    monkeypatch.setenv("DOWNLOADER_DOWNLOAD_ROOT", str(tmp_path))
    monkeypatch.setenv("DOWNLOADER_ALLOW_PRIVATE_NETWORKS", "true")  # the origin is loopback
    worker = spawn_worker(
        env={
            # As read from a secret file: a final newline, a stray space.
            "DOWNLOADER_HOST_TOKENS": json.dumps({origin.base: f" {host_token}\n"}),
            "DOWNLOADER_MAX_RETRIES": "1",
            "DOWNLOADER_RETRY_BACKOFF": "0.05",
        },
        loglevel="DEBUG",  # urllib3 then logs every request line, query included
    )
    subscription = Subscription(redis.Redis.from_url(redis_url), namespace)
    events: list[dict] = []
    done = threading.Event()

    def collect() -> None:
        for payload in subscription:
            if payload is not None:
                events.append(payload)
            if done.is_set():
                return

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    # The origin echoes the bearer token into the redirect's URL; the next request fails, and
    # its error (a connection refused, quoting the URL) or its log line carries the token.
    to_closed = origin.url(f"/echo-auth?to=http://127.0.0.1:{closed_port}/gone")
    bodies = [
        {"source": to_closed, "dest": "a", "access_token": f"{job_token}\n"},
        {"source": origin.url("/echo-auth?to=/status/404"), "dest": "b"},  # the host token
        {"parts": [{"url": to_closed, "path": "x.bin"}, {"url": origin.url("/files/ok.bin"),
                   "path": "ok.bin"}], "dest": "c", "access_token": job_token},
        {"source": origin.url("/private/ok.bin"), "dest": "d"},
    ]  # fmt: skip
    with TestClient(create_api()) as api:
        ids = []
        for body in bodies:
            answer = api.post(f"{Q}/enqueue", json=body)
            assert answer.status_code == 200, answer.text
            ids.extend(item["item_id"] for item in answer.json()["items"])

        def item(item_id: int) -> dict:
            return api.get(f"{Q}/i/{item_id}").json()

        wait_until(
            lambda: all(item(i)["status"] not in ("pending", "in_progress") for i in ids), 60
        )
        answers = [api.get(f"{Q}/i/{i}").text for i in ids] + [api.get(f"{Q}/list").text]
        items = [item(i) for i in ids]
    wait_until(lambda: sum(e["event"] == "download_error" for e in events) >= 3, 10)
    done.set()
    reader.join(5)
    subscription.close()

    failed_a, failed_b, parent = items[0], items[1], items[2]
    assert failed_a["error_type"].startswith("ConnectionError(") and MASK in failed_a["error_type"]
    assert failed_b["error_type"] == "HTTPError(Not Found)"
    assert parent["status"] == "failed" and MASK in parent["error_traceback"]
    assert items[-1]["status"] == "completed"  # the stripped host token was accepted
    assert (tmp_path / "d" / "ok.bin").read_bytes() == b"fine"
    log = worker.output()
    assert f"auth={MASK}" in log  # urllib3's request line, masked by the log filter
    texts = {
        "job records": b"\n".join(redis_texts(redis.Redis.from_url(redis_url), namespace)),
        "events": json.dumps(events).encode(),
        "REST answers": "\n".join(answers).encode(),
        "worker log": log.encode(),
    }
    for token in (job_token, host_token):
        for where, text in texts.items():
            assert token.encode() not in text, f"{token} in {where}"
