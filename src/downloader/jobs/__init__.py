"""The job as every layer sees it: the public models (`DownloadJob`, `MultiFileDownloadJob`,
`RemoteModelFile`, `DownloadJobStatus`), InvokeAI's download-queue API; the record the store
keeps (`record.JobRecord`); why a job failed (`failure`); and the event names.

Imports only `downloader.engine` (file-name rules and token checks), so every other layer may
import it.
"""
