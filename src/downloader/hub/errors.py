"""The base of every error the hub package raises.

It lives apart from the refusals (see `refusals`), which are huggingface_hub's classes too:
catching `HubError`, as every `downloader get` does, then costs no import of huggingface_hub.
"""

from __future__ import annotations


class HubError(Exception):
    """The hub refused or could not answer; the message says what to do."""
