"""Topic names of the contract. A deployment may prefix them all
(``USERPULSE_TOPIC_PREFIX``) to share one cluster between environments or
test runs; the names below are the unprefixed contract."""

from __future__ import annotations

USER_EVENTS = "user-events"
DEAD_LETTERS = "user-events.dlq"
TRIGGERS_LIFECYCLE = "triggers.lifecycle"
TRIGGERS_CART_ABANDONMENT = "triggers.cart-abandonment"
TRIGGERS_CHURN_WARNING = "triggers.churn-warning"
TRIGGERS_ACTIVATION_STALLED = "triggers.activation-stalled"

#: internal: derived messages between partitions (identity merges, referral
#: credits), co-partitioned with user-events
DERIVED = "user-events.derived"

TRIGGER_TOPICS = (
    TRIGGERS_LIFECYCLE,
    TRIGGERS_CART_ABANDONMENT,
    TRIGGERS_CHURN_WARNING,
    TRIGGERS_ACTIVATION_STALLED,
)

#: Every topic a worker reads or writes, besides Faust's own internal ones.
ALL_TOPICS = (USER_EVENTS, DEAD_LETTERS, DERIVED, *TRIGGER_TOPICS)
