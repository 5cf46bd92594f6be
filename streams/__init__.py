"""userpulse pure core: what flows and what it means.

Nothing in this package talks to Kafka, Redis, Faust or the clock; time is
always passed in. ``tests/unit/test_purity.py`` fails when that changes.
"""
