"""The Celery side: the app and its configuration, the tasks, the Redis transport and consumer,
the in-process worker and the pause control.

The only package that imports Celery or kombu. It may import `worker`, `store`, `jobs`,
`engine` and `config`; nothing below it imports it. `celery -A downloader.celery_app worker`
finds the attribute `app`, created on first access from the settings (and the embedded Redis
when no URL is configured), so importing this package starts nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from downloader.celery_app.app import DownloaderApp

__all__ = ["DownloaderApp", "app", "create_app"]


def create_app(redis_url: str, settings: Any = None) -> DownloaderApp:
    """A Celery app bound to the Redis at `redis_url`, with the download tasks registered.

    Args:
        redis_url: the Redis of the broker, the job store and the events.
        settings: the `downloader.config.Settings` to use; read from the environment if None.

    Returns:
        The app, not started: a worker or a client uses it.
    """
    import downloader.celery_app.tasks  # noqa: F401  (registers the shared tasks on every app)
    from downloader.celery_app.app import DownloaderApp
    from downloader.config import Settings

    return DownloaderApp(redis_url, settings or Settings())


def __getattr__(name: str) -> Any:
    """`app`, the module-level app that `celery -A downloader.celery_app` looks for, and
    `DownloaderApp`, imported on first use."""
    if name == "DownloaderApp":
        from downloader.celery_app.app import DownloaderApp

        return DownloaderApp
    if name != "app":
        raise AttributeError(name)
    from downloader.config import Settings
    from downloader.store.embedded import resolve_redis_url

    settings = Settings()
    created = create_app(resolve_redis_url(settings), settings)
    globals()["app"] = created
    return created
