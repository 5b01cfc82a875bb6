"""Redis, as this project uses it: every key, script, index, lease, reservation, heartbeat
and event channel, and the embedded server of the zero-setup mode.

`keys` (the schema: every key name), `scripts` and `lua/` (the Lua, one file per operation),
`jobs` (`JobStore`, a facade over `records`, `lifecycle`, `workers` and `retention`), `bus`
(events on pub/sub), `reservations` (who owns a final path), `embedded` (the zero-setup
redis-server). Nothing outside this package writes a key. It may import `jobs` and `config`.
"""
