"""The live worker: the Faust app of one userpulse process (:mod:`~agents.worker.app`),
its agents and timers (:mod:`~agents.worker.pipeline`), the committer that
makes each batch durable in order, the deadline index of the partitions it
owns, the Redis re-projection, the transport and recovery it gives Faust, and
the churn model as it applies it. ``userpulse worker`` starts one
(:mod:`~agents.worker.process`)."""
