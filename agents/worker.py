"""Running a worker process: build the pipeline, hand it to Faust's worker."""

from __future__ import annotations

import logging

import faust

from agents.pipeline import Pipeline
from agents.settings import Settings, redact_url

logger = logging.getLogger(__name__)


def run_worker(settings: Settings) -> None:
    """Run one worker until SIGTERM/SIGINT (graceful: offsets committed,
    staged Redis profiles flushed, tables closed)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    pipeline = Pipeline(settings, settings.load_policy())
    logger.info(
        "userpulse worker: app %s, Kafka %s, Redis %s, topics prefix %r, store %s",
        settings.app_id,
        settings.kafka_bootstrap,
        redact_url(settings.redis_url.reveal()),
        settings.topic_prefix,
        settings.store,
    )
    worker = faust.Worker(pipeline.app, loglevel=settings.log_level.upper(), quiet=True)
    worker.execute_from_commandline()
