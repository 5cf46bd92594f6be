"""Kafka I/O: the contract topics (admin), publishing events (the producer,
a replayed dataset), reading topics back, and the topics with a shape of
their own — dead letters, the churn model, the state table's changelog."""
