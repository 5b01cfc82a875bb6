"""The HTTP transfer engine: one URL into one file, resumably, and everything a transfer
needs (safe names, partial-file state, segments, mirrors, the watchdog, retry policy, the
address guard, token scrubbing).

It knows nothing of Redis, Celery or any model hub, and imports nothing of `downloader`
outside this package: a transfer is tested alone against a local HTTP server. The worker
drives it through one seam, `transfer.fetch(request, session, hooks)`, with a
`TransferRequest` (see `request`); what an origin says beyond HTTP's standard comes in as
functions of the request (`explain_refusal`, `announced_digest`), filled by the caller.

One fetch, from the top: `transfer` (the public face: `fetch`, two attempts around a
watchdog), `attempt` (one attempt: ask, name, decide, fill, verify), `sources` (which URL is
asked: the source and its mirrors), `versions` (whether an answer or a file on disk is this
version: validators, resumes, stamps), `placing` (the final name, reserved), `disk` (every
write, check and rename of the files in the destination), `reading` (headers, statuses and
bodies of answers), `request` (what is asked and answered), `errors` (everything raised).
"""
