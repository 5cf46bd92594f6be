"""Running a worker process: build the pipeline, hand it to Faust's worker."""

from __future__ import annotations

import errno
import logging
import socket

import faust

from agents.envvars import redact_url
from agents.settings import Settings
from agents.worker import logfilter, logformat
from agents.worker.pipeline import Pipeline
from streams.errors import ConfigError

logger = logging.getLogger(__name__)


def check_web_port(settings: Settings) -> None:
    """Stop before starting when the worker's HTTP port is taken — most
    likely by another worker on this host — with the fix, not a traceback."""
    address = (settings.web_bind, settings.web_port)
    family = socket.AF_INET6 if ":" in settings.web_bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server does
        try:
            probe.bind(address)
        except OSError as exc:
            taken = exc.errno == errno.EADDRINUSE
            problem = (
                f"port {settings.web_port} on {settings.web_bind} is in use "
                "(another worker on this host?)"
                if taken
                else f"cannot listen on {settings.web_bind}:{settings.web_port} ({exc.strerror})"
            )
            raise ConfigError(
                "USERPULSE_WEB_PORT",
                problem,
                f"start this worker with --web-port {settings.web_port + 1} (or set "
                "USERPULSE_WEB_PORT, and USERPULSE_WEB_BIND for the address): every worker "
                "on a host needs a port of its own",
            ) from None


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
    worker.json_logs = logformat.wants_json(settings.log_format)
    worker.execute_from_commandline()


class _Worker(faust.Worker):
    """Faust's worker without its terminal spinner. At log level WARNING or
    above the spinner sets the root logger to DEBUG (so that it spins on every
    record): every debug call in aiokafka's and Faust's send paths then builds
    a LogRecord that is thrown away — 6 % of a busy worker's time. And with
    the libraries' repeated warnings limited to one line a minute
    (:mod:`agents.worker.logfilter`)."""

    #: one JSON object per line (agents/worker/logformat.py)
    json_logs = False

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        logfilter.install(logger)  # one line per outage, not one per retry
        if self.json_logs:
            logformat.install(logger)
