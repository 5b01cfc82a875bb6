"""The client side: `DownloadQueueService` (InvokeAI's download-queue API), the live job
objects it hands out, and the progress bars.

A client never downloads a byte itself. It may import `store`, `jobs`, `hub`, `config`, and
`worker` and `celery_app` to start a worker in its own process.
"""
