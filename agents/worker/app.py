"""The Faust app a worker runs and the topics and table it declares: every
Faust setting userpulse chooses, with the reason for it
(:class:`~agents.worker.pipeline.Pipeline` adds the agents and timers)."""

from __future__ import annotations

from typing import Any

import faust

from agents.settings import Settings
from agents.worker.recovery import TableManager
from agents.worker.store import store_url
from agents.worker.transport import broker_urls
from streams import topics

#: raw bytes in and out: userpulse decodes (a typed topic would log and skip
#: what it cannot decode, where userpulse dead-letters it with the reason)
RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}


def new_app(settings: Settings) -> faust.App:
    """The worker's Faust app, configured by ``settings``."""
    return faust.App(
        settings.app_id,
        # Faust's aiokafka driver, fetching only what Faust keeps (agents/worker/transport.py)
        broker=broker_urls(settings.kafka_bootstrap),
        store=store_url(settings.store),
        datadir=str(settings.data_dir),
        web_port=settings.web_port,
        web_bind=settings.web_bind,
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        autodiscover=False,
        producer_acks=-1,
        # batch the changelog and trigger sends: one request per record costs more
        # than the work that produced it (py-spy: 22 % of the worker in socket writes)
        producer_linger=0.005,
        producer_max_batch_size=256 * 1024,
        # commit on the interval only (2.8 s): Faust's default also commits every
        # 10,000 messages from inside the fetch loop, which stalls the fetcher for
        # a producer flush and a commit round trip (measured: +10 % events/s)
        broker_commit_every=1_000_000,
        # room for several full batches between the fetcher and the agent
        stream_buffer_maxsize=16384,
        # a rebalance waits until every record taken is committed by the
        # committer (Faust's default, said explicitly: the guarantee needs it)
        stream_wait_empty=True,
        # warm copies of the tables on other workers (Faust's default is 1)
        table_standby_replicas=settings.standby_replicas,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(1.0, settings.session_timeout_s / 10),
        # Faust's recovery, with the input partitions sought before they resume
        # (agents/worker/recovery.py: records were lost or stalled otherwise)
        TableManager=TableManager,
    )


class Topics:
    """The topics and the state table of ``app``, named by ``settings``."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        def topic(name: str, **options: Any) -> Any:
            return app.topic(settings.topic(name), **RAW, **options)

        partitions = settings.partitions
        self.events = topic(topics.USER_EVENTS, partitions=partitions)
        #: identity merges, referral credits and timer deadlines (streams.derived)
        self.derived = topic(topics.DERIVED, partitions=partitions)
        self.dead_letters = topic(topics.DEAD_LETTERS)
        self.triggers = {name: topic(name) for name in topics.TRIGGER_TOPICS}
        self.state = app.Table(
            "user-state",
            default=None,
            partitions=partitions,
            help="UserState per user id, orjson bytes",
            key_type=bytes,
            value_type=bytes,
        )
        self.events_name: str = self.events.get_topic_name()
        self.derived_name: str = self.derived.get_topic_name()
        self.dead_letters_name: str = self.dead_letters.get_topic_name()
        self.trigger_names: dict[str, str] = {
            name: t.get_topic_name() for name, t in self.triggers.items()
        }
        self.changelog_name: str = self.state.changelog_topic.get_topic_name()
