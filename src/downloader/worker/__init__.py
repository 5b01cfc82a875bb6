"""Running jobs where the files are: claiming a job, holding its lease, driving the transfer
engine, ending the job (`runner`, over `attempt`, `hooks`, `retries`, `ending`, `outcome`);
multi-file parents; the orphan watch; a process's own download threads; and the `Runtime`
every process holds on one Redis.

It may import `engine`, `store`, `jobs`, `hub` and `config`, never Celery: the Celery side
(`downloader.celery_app`) calls into it, and a `downloader get` of its own jobs runs it alone.
"""
