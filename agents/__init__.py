"""userpulse adapters: what moves the data — the Faust app and agents, the
Redis projection, the local stack, settings and the CLI."""
