"""The HTTP transfer engine: one URL into one file, resumably, and everything a transfer
needs (safe names, partial-file state, segments, mirrors, the watchdog, retry policy, the
address guard, token scrubbing).

It knows nothing of Redis, Celery or any model hub, and imports nothing of `downloader`
outside this package: a transfer is tested alone against a local HTTP server. The worker
drives it through `transfer.fetch` with a `TransferRequest` and `TransferHooks`.
"""
