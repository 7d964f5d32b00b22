"""The hot store: Redis's key layout, its Lua scripts, pub/sub events, and the embedded server."""
