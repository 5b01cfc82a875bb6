"""Which hub token goes where: the Hugging Face token to the hub's own origin, Civitai's to
civitai.com, and no token anywhere else.

The Hugging Face token is found as huggingface_hub finds it (`huggingface_hub.get_token()`),
so the login a user made for any huggingface_hub tool is the one used here, and it is checked
where it enters: a token an HTTP header cannot carry is refused naming where it came from,
never repeated. Nothing here logs a token.
"""

from __future__ import annotations

import functools
import os

from downloader.config import Settings
from downloader.engine.origins import Origin, origin
from downloader.hub.errors import HubError
from downloader.jobs.models import bearer_token

_CIVITAI = "civitai.com"


def hf_token() -> str | None:
    """The Hugging Face token, found as huggingface_hub finds it.

    That is `huggingface_hub.get_token()`: `HF_TOKEN` (or the older `HUGGING_FACE_HUB_TOKEN`),
    else the token file `hf auth login` writes (`HF_TOKEN_PATH`, else `$HF_HOME/token`,
    default `~/.cache/huggingface/token`; an OAuth login's token is refreshed when it is about
    to expire), with line breaks and surrounding whitespace dropped. The token variables are
    read at each call; `HF_HOME`, `HF_TOKEN_PATH` and `HF_HUB_DISABLE_IMPLICIT_TOKEN` once,
    when huggingface_hub is first imported, as in every huggingface_hub tool. As there,
    `HF_HUB_DISABLE_IMPLICIT_TOKEN` means no token is found here: only one given explicitly
    is sent.

    Returns:
        The token, or None when there is none (or implicit tokens are disabled).

    Raises:
        HubError: the token holds what a header cannot carry (a control character, non-ASCII),
            the token file cannot be read, or huggingface_hub could not obtain a token it was
            told to (`HF_OIDC_RESOURCE`); the message names where, never the token.
    """
    from huggingface_hub import constants, get_token
    from huggingface_hub.errors import OIDCError

    if constants.HF_HUB_DISABLE_IMPLICIT_TOKEN:
        return None
    try:
        token = get_token()
    except OIDCError as exc:
        raise HubError(f"HF_OIDC_RESOURCE: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:  # a token file that is not a readable text
        raise HubError(
            f"the token file {constants.HF_TOKEN_PATH} cannot be read ({type(exc).__name__}): "
            "fix or remove it, or set HF_TOKEN"
        ) from None
    try:
        return bearer_token(token)
    except ValueError as exc:
        raise HubError(f"{_where_found(constants.HF_TOKEN_PATH)}: {exc}") from None


def implicit_token_disabled() -> bool:
    """Whether `HF_HUB_DISABLE_IMPLICIT_TOKEN` keeps `hf_token` from finding any token, for
    a refusal's message to say why none was sent."""
    from huggingface_hub import constants

    return constants.HF_HUB_DISABLE_IMPLICIT_TOKEN


def _where_found(token_file: str) -> str:
    """Where `huggingface_hub.get_token()` took its token from, in its own order."""
    if os.environ.get("HF_OIDC_RESOURCE"):
        return "the token exchanged for HF_OIDC_RESOURCE"
    if (os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or "").strip():
        return "HF_TOKEN" if os.environ.get("HF_TOKEN") else "HUGGING_FACE_HUB_TOKEN"
    return f"the token file {token_file}"


@functools.lru_cache(maxsize=16)
def _endpoint_origin(endpoint: str) -> Origin:
    """The hub's origin: asked once per job queued, and the endpoint hardly ever changes."""
    return origin(endpoint)


def token_for(url: str, settings: Settings | None = None) -> str | None:
    """The token a hub wants on `url`.

    Args:
        url: where a job's requests go.
        settings: where the hub is (`hf_endpoint`); default: from the environment.

    Returns:
        The HF token (see `hf_token`) on the hub's own origin, Civitai's
        (`CIVITAI_API_TOKEN`) on https://civitai.com and its subdomains over port 443; None
        anywhere else, so no token ever leaves for a host it was not made for.

    Raises:
        HubError: as `hf_token`, for a URL on the hub.
    """
    settings = settings or Settings()
    target = origin(url)
    if target == _endpoint_origin(settings.hf_endpoint):
        return hf_token()
    scheme, host, port = target
    if (scheme, port) == ("https", 443) and (host == _CIVITAI or host.endswith("." + _CIVITAI)):
        return os.environ.get("CIVITAI_API_TOKEN", "").strip() or None
    return None
