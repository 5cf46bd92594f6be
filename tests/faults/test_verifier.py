"""The verifier finds what it claims to find: every kind of problem, planted
in views written by hand on a real broker and Redis, is counted in its row
(and nothing else is)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import redis
from kafka import KafkaProducer
from kafka.admin import NewTopic

from agents.backtest.run import Backtest
from agents.kafka.admin import admin_client, ensure_topics
from agents.kafka.changelog import changelog_topic
from agents.kafka.deadletters import dead_letter_headers, dlq_topic
from agents.redis.keys import profile_key
from agents.settings import Settings
from benchmarks.generator import generate
from streams import topics
from streams.codec import encode_state
from streams.errors import EventError
from streams.profile import profile_fields
from streams.triggers import encode_trigger
from tests.faults.verifier import View, check_local, check_states, verify

NOW_MS = 1_767_225_600_000


def test_state_checks_name_each_problem() -> None:
    predicted = Backtest(partitions=1)
    data = generate(400, 20, seed=3, partitions=1, now_ms=NOW_MS)
    for key, value in zip(data.keys, data.values, strict=True):
        predicted.feed_raw(key, value)
    predicted.finish()
    want = {s.user_id: s for s in predicted.states.values()}
    users = sorted(want)
    got = dict(want)
    del got[users[0]]  # lost
    got[users[1]] = replace(want[users[1]], event_count=want[users[1]].event_count + 1)
    got[users[2]] = replace(want[users[2]], event_count=want[users[2]].event_count - 1)
    got[users[3]] = replace(want[users[3]], sessions=want[users[3]].sessions + 1)
    view = check_states("changelog", want, got)
    assert (view.lost, view.applied_twice, view.differ, view.stale) == (2, 1, 1, 0)
    assert view.failures == 4

    behind = dict(want)
    behind[users[4]] = replace(want[users[4]], revision=want[users[4]].revision - 1)
    local = check_local(want, behind)
    assert (local.stale, local.lost, local.differ) == (1, 0, 0)
    assert check_local(want, dict(want)).failures == 0


@pytest.mark.integration
def test_every_planted_problem_is_counted(settings: Settings) -> None:
    data = generate(600, 30, seed=5, partitions=settings.partitions, now_ms=NOW_MS)
    invalid = [b'{"type": "order_completed"}', b"not json"]
    ensure_topics(settings)
    admin = admin_client(settings)
    try:
        admin.create_topics([NewTopic(changelog_topic(settings), settings.partitions, 1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    events = settings.topic(topics.USER_EVENTS)
    for key, value in zip(data.keys, data.values, strict=True):
        producer.send(events, key=key, value=value)
    sent = [producer.send(events, key=b"bad", value=v).get(30) for v in invalid]
    producer.flush()

    # what the engine makes of it, written out as a worker would, with faults
    predicted = Backtest(partitions=settings.partitions, keep_triggers=True)
    for key, value in zip(data.keys, data.values, strict=True):
        predicted.feed_raw(key, value)
    predicted.finish()
    states = sorted(predicted.states.values(), key=lambda s: s.user_id)
    triggers = sorted(predicted.kept or [], key=lambda t: t.trigger_id)
    changelog = changelog_topic(settings)
    for state in states[1:]:  # the first user lost
        producer.send(changelog, key=state.user_id.encode(), value=encode_state(state))
    trigger_topic = settings.topic(topics.TRIGGER_TOPICS[0])
    for trigger in triggers[2:]:  # two missing, one sent twice
        producer.send(trigger_topic, value=encode_trigger(trigger, emitted_at_ms=NOW_MS))
    producer.send(trigger_topic, value=encode_trigger(triggers[2], emitted_at_ms=NOW_MS))
    error = EventError("missing_field", "$.event_id", "event_id is required")
    meta = sent[0]  # one dead letter of the two; the other missing
    headers = dead_letter_headers(error, events, meta.partition, meta.offset)
    producer.send(dlq_topic(settings), value=invalid[0], headers=headers)
    producer.flush()
    producer.close()

    client = redis.Redis.from_url(settings.redis_url.reveal())
    try:
        for i, state in enumerate(states[1:]):
            if i == 0:
                continue  # a profile missing
            version = state.revision - 1 if i == 1 else state.revision  # one stale
            fields = profile_fields(state, version=version)
            if i == 2:
                fields["stage"] = "nonsense"  # one that differs
            client.hset(profile_key(settings.redis_key_prefix, state.user_id), mapping=fields)
    finally:
        client.close()

    report = verify(settings, "planted")
    views: dict[str, View] = {v.name: v for v in report.views}
    assert report.events == len(data.keys) + len(invalid)
    assert (views["changelog"].lost, views["changelog"].failures) == (1, 1)
    assert (views["redis"].missing, views["redis"].stale, views["redis"].differ) == (1, 1, 1)
    assert (views["triggers"].missing, views["triggers"].duplicates) == (2, 1)
    assert views["triggers"].failures == 2
    assert (views["dead letters"].missing, views["dead letters"].found) == (1, 1)
    assert views["dead letters"].failures == 1
    table = report.table()
    assert "planted" in table and "changelog" in table
    assert len(report.failures()) == 4
