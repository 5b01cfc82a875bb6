"""Redis, as this project uses it: every key, script, index, lease, reservation, heartbeat
and event channel, and the embedded server of the zero-setup mode.

Nothing outside this package writes a key. It may import `jobs` and `config`.
"""
