"""The live worker: the Faust app of one userpulse process, its agents and
timers (:mod:`~agents.worker.pipeline`), the deadline index of the
partitions it owns, the churn model as it applies it, and the Faust tuning
it runs with. ``userpulse worker`` starts one (:mod:`~agents.worker.process`)."""
