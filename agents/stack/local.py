"""The local development stack: one Apache Kafka broker (KRaft, combined
broker+controller) and one Redis server on 127.0.0.1, without Docker.

Kafka runs from its Maven Central jars, Redis from Debian's ``redis-server``
(:mod:`agents.stack.programs`). Every process the stack starts has a pid
file under the stack directory; ``down`` stops exactly those processes and
nothing else (:mod:`agents.stack.processes`).
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agents.errors import StackError
from agents.settings import StackSettings
from agents.stack.network import kafka_answers, port_free, redis_answers
from agents.stack.processes import alive, is_ours, tail, tail_text
from agents.stack.programs import LOG4J_CONFIG, Progress, check_java, install_redis, kafka_libs


def _stderr(message: str) -> None:
    print(f"userpulse stack: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Endpoints:
    kafka_bootstrap: str
    redis_url: str

    def exports(self) -> str:
        """Shell lines for ``eval "$(userpulse stack up)"``."""
        return (
            f"export USERPULSE_KAFKA_BOOTSTRAP={self.kafka_bootstrap}\n"
            f"export USERPULSE_REDIS_URL={self.redis_url}\n"
        )


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    running: bool
    answering: bool
    address: str
    log: Path


class Stack:
    """The local stack described by ``settings``."""

    def __init__(self, settings: StackSettings, progress: Progress = _stderr) -> None:
        self.settings = settings
        self.dir = settings.stack_dir.resolve()
        self.progress = progress

    # ---- paths -------------------------------------------------------------
    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(
            kafka_bootstrap=f"127.0.0.1:{self.settings.kafka_port}",
            redis_url=f"redis://127.0.0.1:{self.settings.redis_port}/0",
        )

    def _pid_file(self, name: str) -> Path:
        return self.dir / "pids" / f"{name}.pid"

    def _log_file(self, name: str) -> Path:
        return self.dir / "logs" / f"{name}.log"

    # ---- public operations -------------------------------------------------
    def up(self) -> Endpoints:
        """Start Kafka and Redis unless they already run; wait until both answer."""
        started = time.monotonic()
        for sub in ("pids", "logs", "kafka", "redis"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        redis_ran = self.live_pid("redis") is not None
        self._ensure_redis()
        try:
            self._ensure_kafka()
        except BaseException:
            if not redis_ran:  # a failed start leaves nothing of its own running
                self._stop("redis")
            raise
        self.progress(
            f"ready in {time.monotonic() - started:.1f} s — "
            f"Kafka {self.endpoints.kafka_bootstrap}, Redis {self.endpoints.redis_url} "
            "(stop with: userpulse stack down)"
        )
        return self.endpoints

    def down(self) -> list[str]:
        """Stop every process this stack started (workers first); return their names."""
        stopped: list[str] = []
        pid_dir = self.dir / "pids"
        if not pid_dir.is_dir():
            return stopped
        names = sorted(p.stem for p in pid_dir.glob("*.pid"))
        order = [n for n in names if n not in ("kafka", "redis")] + [
            n for n in ("kafka", "redis") if n in names
        ]
        for name in order:
            if self._stop(name):
                stopped.append(name)
        return stopped

    def status(self) -> list[ServiceStatus]:
        kafka_pid = self.live_pid("kafka")
        redis_pid = self.live_pid("redis")
        return [
            ServiceStatus(
                "kafka",
                kafka_pid,
                kafka_pid is not None,
                kafka_pid is not None and kafka_answers(self.endpoints.kafka_bootstrap),
                self.endpoints.kafka_bootstrap,
                self._log_file("kafka"),
            ),
            ServiceStatus(
                "redis",
                redis_pid,
                redis_pid is not None,
                redis_pid is not None and redis_answers(self.endpoints.redis_url),
                self.endpoints.redis_url,
                self._log_file("redis"),
            ),
            *self._workers(),
        ]

    def _workers(self) -> list[ServiceStatus]:
        """The processes started on top of the stack (the demo worker) that run."""
        pid_dir = self.dir / "pids"
        names = sorted(p.stem for p in pid_dir.glob("*.pid")) if pid_dir.is_dir() else []
        found = []
        for name in names:
            pid = self.live_pid(name) if name not in ("kafka", "redis") else None
            if pid is not None:
                found.append(ServiceStatus(name, pid, True, True, "worker", self._log_file(name)))
        return found

    def register(self, name: str, pid: int, marker: str) -> None:
        """Record a process started on top of the stack (a demo worker) so that
        ``down`` stops it too. ``marker`` must appear in its command line."""
        (self.dir / "pids").mkdir(parents=True, exist_ok=True)
        self._pid_file(name).write_text(f"{pid}\n{marker}\n")

    # ---- Redis -------------------------------------------------------------
    def _ensure_redis(self) -> None:
        if self.live_pid("redis") is not None:
            if redis_answers(self.endpoints.redis_url):
                self.progress(f"Redis already running on {self.endpoints.redis_url}")
                return
            self._stop("redis")
        binary = shutil.which("redis-server") or install_redis(self.progress)
        self._check_port_free(self.settings.redis_port, "Redis", "USERPULSE_STACK_REDIS_PORT")
        data = self.dir / "redis"
        log = self._log_file("redis")
        cmd = [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(self.settings.redis_port),
            "--dir", str(data),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip
        self.progress(f"starting Redis on 127.0.0.1:{self.settings.redis_port}")
        # redis-server rewrites its process title, so only its name is a stable marker
        self._spawn("redis", cmd, log, marker="redis-server")
        self._wait("redis", lambda: redis_answers(self.endpoints.redis_url), log)

    # ---- Kafka -------------------------------------------------------------
    def _ensure_kafka(self) -> None:
        if self.live_pid("kafka") is not None:
            if kafka_answers(self.endpoints.kafka_bootstrap):
                self.progress(f"Kafka already running on {self.endpoints.kafka_bootstrap}")
                return
            self._stop("kafka")
        java = check_java()
        libs = kafka_libs(self.settings.cache_dir, self.progress)
        for port, what, key in (
            (self.settings.kafka_port, "Kafka", "USERPULSE_STACK_KAFKA_PORT"),
            (
                self.settings.controller_port,
                "the KRaft controller",
                "USERPULSE_STACK_CONTROLLER_PORT",
            ),
        ):
            self._check_port_free(port, what, key)
        kdir = self.dir / "kafka"
        config = kdir / "server.properties"
        data = kdir / "data"
        config.write_text(self._server_properties(data))
        log = self._log_file("kafka")
        classpath = f"{libs}/*"
        base = [java, "-cp", classpath, f"-Dlog4j2.configurationFile={LOG4J_CONFIG}"]
        if not (data / "meta.properties").exists():
            cluster_id = new_cluster_id()
            self.progress("formatting KRaft storage")
            fmt = subprocess.run(
                [*base, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)],
                capture_output=True,
                text=True,
                check=False,
            )
            if fmt.returncode != 0:
                raise StackError(
                    "formatting Kafka storage failed; remove "
                    f"{data} and run `userpulse stack up` again",
                    log_tail=tail_text(fmt.stdout + fmt.stderr),
                )
        self.progress(f"starting Kafka (KRaft) on 127.0.0.1:{self.settings.kafka_port}")
        cmd = [
            *base[:1],
            "-Xms256m",
            "-Xmx1g",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            *base[1:],
            "kafka.Kafka",
            str(config),
        ]
        self._spawn("kafka", cmd, log, marker=str(config))
        self._wait("kafka", lambda: kafka_answers(self.endpoints.kafka_bootstrap), log)

    def _server_properties(self, data: Path) -> str:
        s = self.settings
        return "\n".join(
            [
                "# Written by `userpulse stack up`; edits are overwritten.",
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{s.controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{s.kafka_port},CONTROLLER://127.0.0.1:{s.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{s.kafka_port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={data}",
                # userpulse creates its topics with the right partition count;
                # an auto-created topic would silently have the wrong one.
                "auto.create.topics.enable=false",
                "num.partitions=1",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=8",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "log.retention.hours=168",
                "",
            ]
        )

    # ---- processes ---------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str], log: Path, *, marker: str) -> int:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the shell; stopped by `down`
                cwd=self.dir,
            )
        self._pid_file(name).write_text(f"{proc.pid}\n{marker}\n")
        return proc.pid

    def _wait(self, name: str, answers: Callable[[], bool], log: Path) -> None:
        deadline = time.monotonic() + self.settings.timeout_s
        while time.monotonic() < deadline:
            if self.live_pid(name) is None:
                self._pid_file(name).unlink(missing_ok=True)
                raise StackError(
                    f"{name} exited during start-up; its log ({log}) ends with the lines below",
                    log_tail=tail(log),
                )
            if answers():
                return
            time.sleep(0.25)
        self._stop(name)
        raise StackError(
            f"{name} did not answer within {self.settings.timeout_s} s and was stopped; "
            f"raise USERPULSE_STACK_TIMEOUT_S on a slow machine, or read {log}",
            log_tail=tail(log),
        )

    def live_pid(self, name: str) -> int | None:
        """The pid in ``name``'s pid file if that process is alive and is the
        one we started (its command line still carries our marker)."""
        path = self._pid_file(name)
        try:
            pid_text, marker = path.read_text().split("\n", 2)[:2]
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        return pid if is_ours(pid, marker) else None

    def _stop(self, name: str, timeout_s: float = 30.0) -> bool:
        pid = self.live_pid(name)
        path = self._pid_file(name)
        if pid is None:
            path.unlink(missing_ok=True)
            return False
        self.progress(f"stopping {name} (pid {pid})")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.1)
        if alive(pid):
            self.progress(f"{name} did not stop in {timeout_s:.0f} s; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            while alive(pid):
                time.sleep(0.05)
        path.unlink(missing_ok=True)
        return True

    def _check_port_free(self, port: int, what: str, key: str) -> None:
        if not port_free(port):
            raise StackError(
                f"port {port} on 127.0.0.1 is in use by another process, so {what} cannot start. "
                f"Stop that process, or choose another port: {key}=<port> userpulse stack up"
            )


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, base64url. Like Kafka's own
    ``Uuid.randomUuid()``, never one that starts with "-" — the storage
    tool's argument parser would take it for an option (1 in 32 ids)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id
