"""The local development stack: one Apache Kafka broker (KRaft, combined
broker+controller) and one Redis server on 127.0.0.1, without Docker.

Kafka runs from its Maven Central jars (resolved once with Maven into a cache
shared by every checkout), Redis from Debian's ``redis-server``. Every process
the stack starts has a pid file under the stack directory; ``down`` stops
exactly those processes and nothing else.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from agents.errors import StackError
from agents.settings import StackSettings

REPO_ROOT = Path(__file__).resolve().parent.parent
POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
LOG4J_CONFIG = REPO_ROOT / "deploy" / "kafka" / "log4j2.properties"
MIN_JAVA = 17

Progress = Callable[[str], None]


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
        self._ensure_redis()
        self._ensure_kafka()
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
        ]

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
        binary = shutil.which("redis-server") or _install_redis(self.progress)
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
        libs = self.kafka_libs()
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
                    log_tail=_tail_text(fmt.stdout + fmt.stderr),
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

    def kafka_libs(self) -> Path:
        """The directory of Kafka's jars, resolved with Maven on first use."""
        if not POM.exists():
            raise StackError(
                f"{POM} is missing: the local stack runs from a userpulse source checkout. "
                "Clone the repository, or point USERPULSE_KAFKA_BOOTSTRAP at an existing broker"
            )
        key = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
        libs = self.settings.cache_dir / f"kafka-{key}" / "libs"
        done = libs.parent / "complete"
        if done.exists():
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise StackError(
                "Maven (mvn) is not installed; it fetches Kafka's jars from Maven Central once. "
                "Install it (Debian: apt-get install -y maven) and run again"
            )
        self.progress(
            f"resolving Apache Kafka jars from Maven Central into {libs} (first run only)"
        )
        if libs.exists():
            shutil.rmtree(libs)
        started = time.monotonic()
        result = subprocess.run(
            [
                mvn, "-B", "-q", "-f", str(POM),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={libs}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        if result.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
            raise StackError(
                "Maven could not fetch Kafka's jars (is Maven Central reachable? "
                "see the output below; a proxy goes in ~/.m2/settings.xml)",
                log_tail=_tail_text(result.stdout + result.stderr),
            )
        done.write_text(f"resolved in {time.monotonic() - started:.1f} s\n")
        self.progress(
            f"resolved {len(list(libs.glob('*.jar')))} jars in {time.monotonic() - started:.0f} s"
        )
        return libs

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
        return pid if _is_ours(pid, marker) else None

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
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            self.progress(f"{name} did not stop in {timeout_s:.0f} s; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
        path.unlink(missing_ok=True)
        return True

    def _check_port_free(self, port: int, what: str, key: str) -> None:
        if not port_free(port):
            raise StackError(
                f"port {port} on 127.0.0.1 is in use by another process, so {what} cannot start. "
                f"Stop that process, or choose another port: {key}=<port> userpulse stack up"
            )


# ---- helpers ---------------------------------------------------------------
def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, base64url. Like Kafka's own
    ``Uuid.randomUuid()``, never one that starts with "-" — the storage
    tool's argument parser would take it for an option (1 in 32 ids)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def check_java() -> str:
    """The path of a Java >= 17 runtime, or a StackError that says how to get one."""
    java = shutil.which("java")
    if java is None:
        raise StackError(
            f"Java {MIN_JAVA}+ is not installed; Kafka needs it. "
            "Install it (Debian: apt-get install -y openjdk-17-jre-headless) and run again"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match is None:
        raise StackError(f"cannot tell the version of {java}; Kafka needs Java {MIN_JAVA}+")
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise StackError(
            f"{java} is Java {major}; Kafka 4 needs Java {MIN_JAVA}+. Install a newer JRE "
            "(Debian: apt-get install -y openjdk-17-jre-headless) and put it first on PATH"
        )
    return java


def _install_redis(progress: Progress) -> str:
    apt = shutil.which("apt-get")
    if os.geteuid() != 0 or apt is None:
        raise StackError(
            "redis-server is not installed. Install it (Debian/Ubuntu: "
            "sudo apt-get install -y redis-server; macOS: brew install redis) and run again"
        )
    progress("redis-server is missing; installing Debian's redis-server (needs the package mirror)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in ([apt, "update", "-q"], [apt, "install", "-y", "-q", "redis-server"]):
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            raise StackError(
                f"`{' '.join(cmd)}` failed; install redis-server by hand and run again",
                log_tail=_tail_text(result.stdout + result.stderr),
            )
    binary = shutil.which("redis-server")
    if binary is None:
        raise StackError("redis-server was installed but is not on PATH; check /usr/bin")
    return binary


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not Path(f"/proc/{pid}/stat").exists():
        return True  # no /proc: trust kill(0)
    if not _zombie(pid):
        return True
    # A zombie leader may still have threads finishing (a JVM's shutdown
    # hooks run after its main thread ended): alive until fully exited.
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        return reaped != pid
    except ChildProcessError:  # not our child: its parent reaps it
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return False
        threads = re.search(r"^Threads:\s+(\d+)", status, re.MULTILINE)
        return threads is not None and int(threads.group(1)) > 1


def _is_ours(pid: int, marker: str) -> bool:
    if not _alive(pid):
        return False
    for _ in range(50):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return True  # no /proc (macOS): trust the pid file
        if cmdline.strip():
            return marker in cmdline
        if _zombie(pid):
            return True  # a JVM whose main thread ended: no command line, threads still running
        # empty for an instant: redis-server rewriting its title in place, or a
        # process between fork and exec (that one is someone else's) — look again
        time.sleep(0.01)
    return False


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 (held together while chosen)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def kafka_answers(bootstrap: str, timeout_ms: int = 2000) -> bool:
    """True when the broker answers a metadata request."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaConfigurationError, KafkaError

    with _quiet("kafka"):
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap,
                request_timeout_ms=timeout_ms,
                client_id="userpulse-stack-probe",
            )
        except KafkaConfigurationError:
            raise  # our bug, not a broker that is still starting
        except (KafkaError, OSError, ValueError):
            return False
        try:
            admin.list_topics()
            return True
        except (KafkaError, OSError):
            return False
        finally:
            admin.close()


def redis_answers(url: str) -> bool:
    """True when Redis answers PING."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def tail(path: Path, lines: int = 25) -> str:
    try:
        return _tail_text(path.read_text(errors="replace"), lines)
    except OSError:
        return ""


def _tail_text(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])
