"""userpulse adapters: what moves the data, by role.

- :mod:`agents.worker` — the live worker: the Faust app, its agents and
  timers, the deadline index, the churn model as it applies it;
- :mod:`agents.backtest` — the same engine over a history, in this process;
- :mod:`agents.commands` — the ``userpulse`` command line, a module per command;
- :mod:`agents.kafka`, :mod:`agents.redis`, :mod:`agents.files` — the I/O:
  topics and their records, the Redis profile projection, history files;
- :mod:`agents.stack` — the local Kafka + Redis stack for development;
- :mod:`agents.settings` (declared with :mod:`agents.envvars`) and
  :mod:`agents.errors` — what every part shares.
"""
