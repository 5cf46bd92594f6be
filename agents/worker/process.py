"""Running a worker process: build the pipeline, hand it to Faust's worker."""

from __future__ import annotations

import logging

import faust

from agents.envvars import redact_url
from agents.settings import Settings
from agents.worker import logfilter
from agents.worker.pipeline import Pipeline

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
    worker = _Worker(pipeline.app, loglevel=settings.log_level.upper(), quiet=True)
    worker.execute_from_commandline()


class _Worker(faust.Worker):
    """Faust's worker without its terminal spinner. At log level WARNING or
    above the spinner sets the root logger to DEBUG (so that it spins on every
    record): every debug call in aiokafka's and Faust's send paths then builds
    a LogRecord that is thrown away — 6 % of a busy worker's time. And with
    the libraries' repeated warnings limited to one line a minute
    (:mod:`agents.worker.logfilter`)."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        logfilter.install(logger)  # one line per outage, not one per retry
