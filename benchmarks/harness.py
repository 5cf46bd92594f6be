"""What every benchmark program shares: the run context (settings, unique
names, a scratch directory), worker processes, committed-offset progress,
CPU shares, probes, percentiles, tables and result files.

Nothing here decides a measured figure by itself; each benchmark module says
what it measures in its docstring.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from agents.envvars import Secret
from agents.kafka.admin import ensure_topics
from agents.redis.keys import glob_escape
from agents.settings import Settings, StackSettings
from agents.stack.local import Stack
from agents.stack.network import free_port
from benchmarks.generator import partition_for
from streams import topics

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"


def log(message: str) -> None:
    print(message, flush=True)


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages from /proc/loadavg."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return [round(x, 2) for x in os.getloadavg()]


def load_text(values: Sequence[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


# ---- the run context -----------------------------------------------------------
@dataclass
class Bench:
    """One benchmark run: where Kafka and Redis are, a tag that makes every
    topic, consumer group and Redis key prefix of the run unique, a scratch
    directory for data dirs and logs, and the stack's server pids (for CPU
    shares) when the stack is ours."""

    base: Settings
    tag: str
    workdir: Path
    kafka_pid: int | None = None
    redis_pid: int | None = None
    kafka_version: str | None = None
    partitions: int = 8
    workers: list[WorkerProcess] = field(default_factory=list)

    @classmethod
    @contextlib.contextmanager
    def open(
        cls, base: Settings | None = None, stack: Stack | None = None, keep: bool = False
    ) -> Iterator[Bench]:
        """A run against ``base`` (default: the USERPULSE_* environment);
        removes its scratch directory, topics and Redis keys at the end."""
        settings = base or Settings.from_env()
        if stack is None:
            with contextlib.suppress(Exception):
                stack = Stack(StackSettings.from_env(), progress=lambda _m: None)
        tag = f"bench-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:6]}"
        workdir = Path(tempfile.mkdtemp(prefix=f"userpulse-{tag}-"))
        bench = cls(
            base=settings,
            tag=tag,
            workdir=workdir,
            partitions=settings.partitions,
            kafka_pid=stack.live_pid("kafka") if stack else None,
            redis_pid=stack.live_pid("redis") if stack else None,
            kafka_version=kafka_version(stack) if stack else None,
        )
        try:
            yield bench
        finally:
            for worker in bench.workers:
                worker.stop()
            if not keep:
                with contextlib.suppress(Exception):
                    delete_topics(settings.kafka_bootstrap, tag)
                with contextlib.suppress(Exception):
                    delete_redis_keys(settings.redis_url.reveal(), f"{tag}")
                shutil.rmtree(workdir, ignore_errors=True)

    def settings(
        self,
        name: str,
        *,
        prefix: str | None = None,
        data_dir: Path | None = None,
        **overrides: Any,
    ) -> Settings:
        """Worker settings for part ``name`` of the run: its own app id
        (consumer group), Redis key prefix, data dir and web port; the topic
        prefix ``prefix`` (a data set shared by several parts) or its own."""
        app_id = f"{self.tag}-{name}"
        return dataclasses.replace(
            self.base,
            topic_prefix=prefix if prefix is not None else f"{app_id}.",
            app_id=app_id,
            redis_key_prefix=f"{app_id}:",
            data_dir=data_dir or self.workdir / app_id / "data",
            web_port=free_port(),
            store="rocksdb://",
            log_level="warning",
            policy_file=None,
            **overrides,
        )

    def topic_prefix(self, name: str) -> str:
        return f"{self.tag}-{name}."

    def start_worker(self, settings: Settings, name: str | None = None) -> WorkerProcess:
        log_path = self.workdir / f"{name or settings.app_id}-{len(self.workers)}.log"
        worker = WorkerProcess(settings, log_path)
        self.workers.append(worker)
        return worker


def bench_settings_from_env() -> Settings:
    return Settings.from_env()


def base_settings(kafka_bootstrap: str, redis_url: str) -> Settings:
    return Settings(kafka_bootstrap=kafka_bootstrap, redis_url=Secret(redis_url))


def kafka_version(stack: Stack) -> str | None:
    """Apache Kafka's version from the jar the local stack runs."""
    with contextlib.suppress(Exception):
        for jar in stack.kafka_libs().glob("kafka_2.13-*.jar"):
            return jar.name.removeprefix("kafka_2.13-").removesuffix(".jar")
    return None


def create_topics(settings: Settings) -> None:
    ensure_topics(settings)


def delete_topics(bootstrap: str, tag: str) -> list[str]:
    """Delete every topic whose name contains ``tag`` (the run's topics,
    changelogs and Faust's internal topics)."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id="userpulse-bench")
    try:
        names = [t for t in admin.list_topics() if tag in t]
        if names:
            admin.delete_topics(names, raise_errors=False)
        return names
    finally:
        admin.close()


def delete_redis_keys(url: str, prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(f"{glob_escape(prefix)}*", count=10_000):
            batch.append(key)
            if len(batch) >= 10_000:
                deleted += client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += client.unlink(*batch)
    finally:
        client.close()
    return deleted


def redis_used_memory(url: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


def redis_version(url: str) -> str | None:
    import redis

    with contextlib.suppress(Exception):
        client = redis.Redis.from_url(url, socket_timeout=2)
        try:
            return str(client.info("server")["redis_version"])
        finally:
            client.close()
    return None


# ---- worker processes ------------------------------------------------------------
class WorkerProcess:
    """``userpulse worker`` as a subprocess, configured only by USERPULSE_* env."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("USERPULSE_")}
        env.update(settings.to_env())
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._out = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agents.commands.cli", "worker"],
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self, what: str) -> None:
        if not self.alive():
            raise BenchError(
                f"the worker exited (code {self.proc.returncode}) while {what}; "
                f"its log {self.log_path} ends with:\n{self.tail()}"
            )

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def counters(self, timeout_s: float = 5.0) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.settings.web_port}/counters/"
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            result: dict[str, Any] = json.loads(response.read())
        return result

    def answers(self) -> bool:
        try:
            self.counters(timeout_s=1.0)
            return True
        except OSError:
            return False

    def memory_kib(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak RSS) of the worker, in KiB, from /proc."""
        out: dict[str, int] = {}
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                name, _, value = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    out[name] = int(value.split()[0])
        return out

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed or committed on the way out."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._out.close()

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """Graceful stop (SIGTERM: offsets committed, Redis flushed, tables closed)."""
        if self._out.closed:
            return self.proc.returncode
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self._out.close()


class BenchError(Exception):
    """A benchmark could not measure what it set out to (the message says why)."""


def wait_until(
    predicate: Callable[[], bool],
    timeout_s: float,
    what: str,
    workers: Iterable[WorkerProcess] = (),
    interval_s: float = 0.05,
) -> float:
    """Poll ``predicate`` until true; return the perf_counter time it became true."""
    deadline = time.perf_counter() + timeout_s
    while True:
        with contextlib.suppress(OSError):
            if predicate():
                return time.perf_counter()
        for worker in workers:
            worker.check_alive(f"waiting for {what}")
        if time.perf_counter() > deadline:
            tails = "\n".join(w.tail(15) for w in workers)
            raise BenchError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{tails}")
        time.sleep(interval_s)


# ---- Kafka offsets -------------------------------------------------------------------
def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The end offset of each partition of ``topic``."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), client_id="userpulse-bench")
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        return {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


class GroupOffsets:
    """The consumer group's committed offsets of one topic, read with
    kafka-python's admin client (``list_consumer_group_offsets``; called
    ``list_group_offsets`` since kafka-python 3)."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        from kafka import KafkaAdminClient

        self.group, self.topic = group, topic
        self.admin = KafkaAdminClient(
            bootstrap_servers=bootstrap.split(","), client_id="userpulse-bench-offsets"
        )

    def committed(self) -> dict[int, int]:
        admin: Any = self.admin
        if hasattr(admin, "list_consumer_group_offsets"):
            offsets = admin.list_consumer_group_offsets(self.group)
        else:
            offsets = admin.list_group_offsets({self.group: None}).get(self.group, {})
        return {
            tp.partition: meta.offset
            for tp, meta in offsets.items()
            if tp.topic == self.topic and meta.offset >= 0
        }

    def group_state(self) -> tuple[str, int]:
        """The group's state (``Empty``, ``Stable``, …) and its member count."""
        described: Any = self.admin.describe_groups([self.group])
        info = described[0] if isinstance(described, list) else described.get(self.group, {})
        info = info if isinstance(info, dict) else getattr(info, "_asdict", dict)()
        return str(info.get("group_state") or info.get("state") or "?"), len(
            info.get("members") or []
        )

    def close(self) -> None:
        self.admin.close()


@dataclass
class Progress:
    """Committed offsets of a topic over time, from the first commit to the last."""

    total: int
    samples: list[tuple[float, int]]
    started_at: float

    def _time_at(self, fraction: float) -> tuple[float, int]:
        target = self.total * fraction
        for t, c in self.samples:
            if c >= target:
                return t, c
        return self.samples[-1]

    def summary(self) -> dict[str, Any]:
        first = next((t, c) for t, c in self.samples if c > 0)
        last = self._time_at(1.0)
        events = last[1] - first[1]
        window = last[0] - first[0]
        t10, c10 = self._time_at(0.10)
        t90, c90 = self._time_at(0.90)
        steady = (c90 - c10) / (t90 - t10) if t90 > t10 else None
        return {
            "events": self.total,
            "events_in_window": events,
            "first_commit_after_start_s": round(first[0] - self.started_at, 2),
            "window_s": round(window, 2),
            "events_per_s": round(events / window) if window > 0 else None,
            "steady_10_90_events_per_s": round(steady) if steady else None,
            "total_s_from_process_start": round(last[0] - self.started_at, 2),
        }


def watch_committed(
    group_offsets: GroupOffsets,
    end: dict[int, int],
    workers: Sequence[WorkerProcess],
    *,
    poll_s: float = 0.25,
    stall_timeout_s: float = 180.0,
    on_sample: Callable[[float, int], None] | None = None,
) -> Progress:
    """Poll the committed offsets until they reach ``end`` on every partition."""
    total = sum(end.values())
    started_at = min(w.started for w in workers)
    samples: list[tuple[float, int]] = []
    last_change = time.perf_counter()
    last_value = -1
    while True:
        try:
            committed = group_offsets.committed()
        except Exception:  # the coordinator may not be ready yet: try again
            committed = {}
        now = time.perf_counter()
        value = sum(min(committed.get(p, 0), e) for p, e in end.items())
        samples.append((now, value))
        if on_sample:
            on_sample(now, value)
        if all(committed.get(p, 0) >= e for p, e in end.items()):
            return Progress(total=total, samples=samples, started_at=started_at)
        if value != last_value:
            last_value, last_change = value, now
        elif now - last_change > stall_timeout_s:
            tails = "\n".join(w.tail(20) for w in workers)
            raise BenchError(
                f"no committed progress for {stall_timeout_s:.0f} s at {value:,}/{total:,}\n{tails}"
            )
        for worker in workers:
            worker.check_alive(f"processing ({value:,}/{total:,} committed)")
        time.sleep(poll_s)


# ---- CPU shares ----------------------------------------------------------------------
def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (its threads included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total


class CpuMeter:
    """CPU used by named processes (and the whole machine) between two marks,
    as a share of one core: 1.0 = one core busy all the time."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid}
        self.start = self._snapshot()

    def _snapshot(self) -> tuple[float, dict[str, float | None], tuple[float, float]]:
        return (
            time.perf_counter(),
            {name: _cpu_seconds(pid) for name, pid in self.pids.items()},
            _machine_busy(),
        )

    def mark(self) -> None:
        self.start = self._snapshot()

    def shares(self) -> dict[str, float]:
        t0, cpu0, (busy0, total0) = self.start
        t1, cpu1, (busy1, total1) = self._snapshot()
        wall = t1 - t0
        out: dict[str, float] = {}
        for name, before in cpu0.items():
            after = cpu1.get(name)
            if before is not None and after is not None and wall > 0:
                out[name] = round((after - before) / wall, 2)
        if total1 > total0:
            out["machine (all processes)"] = round(
                (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1), 2
            )
        return out


def cpu_text(shares: dict[str, float]) -> str:
    return ", ".join(f"{name} {share:.2f}" for name, share in shares.items())


# ---- probes: new users whose first event proves a worker is processing -----------------
def probe_keys(tag: str, partitions: int) -> list[bytes]:
    """One new user id per partition (so every partition must be processing)."""
    found: dict[int, bytes] = {}
    i = 0
    while len(found) < partitions:
        key = f"probe-{tag}-{i}".encode()
        found.setdefault(partition_for(key, partitions), key)
        i += 1
    return [found[p] for p in range(partitions)]


def probe_event(key: bytes, event_id: str) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "type": "session_started",
            "user_id": key.decode(),
            "timestamp": time.time_ns() // 1_000_000,
            "properties": {"session_id": event_id},
        }
    )


class TriggerWatch:
    """A consumer of a trigger topic positioned at its end, to see the
    triggers of events sent after it was created."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap.split(","),
            client_id="userpulse-bench-triggers",
            enable_auto_commit=False,
            fetch_max_wait_ms=20,
        )
        parts = self.consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        self.consumer.seek_to_end(*tps)
        for tp in tps:
            self.consumer.position(tp)  # resolve the end now, before anything is sent

    def poll(self, timeout_ms: int = 100) -> list[tuple[float, dict[str, Any]]]:
        """Triggers received, with the perf_counter time they arrived."""
        out: list[tuple[float, dict[str, Any]]] = []
        for records in self.consumer.poll(timeout_ms=timeout_ms).values():
            now = time.perf_counter()
            out.extend((now, orjson.loads(r.value)) for r in records)
        return out

    def close(self) -> None:
        self.consumer.close()


def send_probes(bootstrap: str, topic: str, keys: Sequence[bytes], tag: str) -> list[str]:
    """Send one new-user event per key; return their event ids."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap.split(","), linger_ms=0, client_id="userpulse-bench-probe"
    )
    ids = []
    try:
        for i, key in enumerate(keys):
            event_id = f"{tag}-probe-{uuid.uuid4().hex[:8]}-{i}"
            producer.send(topic, key=key, value=probe_event(key, event_id))
            ids.append(event_id)
        producer.flush(timeout=30)
    finally:
        producer.close()
    return ids


def wait_for_triggers(
    watch: TriggerWatch,
    event_ids: Iterable[str],
    timeout_s: float,
    workers: Sequence[WorkerProcess] = (),
) -> float:
    """Wait until a trigger caused by each of ``event_ids`` arrived; return
    the perf_counter time the last one arrived."""
    waiting = set(event_ids)
    deadline = time.perf_counter() + timeout_s
    last = time.perf_counter()
    while waiting:
        for received, trigger in watch.poll():
            cause = (trigger.get("reason") or {}).get("event_id")
            if cause in waiting:
                waiting.discard(cause)
                last = received
        for worker in workers:
            worker.check_alive("waiting for probe triggers")
        if time.perf_counter() > deadline:
            tails = "\n".join(w.tail(15) for w in workers)
            raise BenchError(
                f"{len(waiting)} probe triggers missing after {timeout_s:.0f} s\n{tails}"
            )
    return last


def ready(bench: Bench, worker: WorkerProcess, timeout_s: float = 120.0) -> float:
    """Wait until ``worker`` answers /counters/ and processes a new user on
    every partition; return the seconds since its process started."""
    settings = worker.settings
    wait_until(worker.answers, timeout_s, "the worker's /counters/", [worker])
    watch = TriggerWatch(settings.kafka_bootstrap, settings.topic(topics.TRIGGERS_LIFECYCLE))
    try:
        ids = send_probes(
            settings.kafka_bootstrap,
            settings.topic(topics.USER_EVENTS),
            probe_keys(f"{bench.tag}-{uuid.uuid4().hex[:4]}", settings.partitions),
            bench.tag,
        )
        done = wait_for_triggers(watch, ids, timeout_s, [worker])
    finally:
        watch.close()
    return done - worker.started


# ---- numbers and output ----------------------------------------------------------------
def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0–100) by the nearest-rank method."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, min(len(sorted_values), int(-(-p * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table; a column whose cells are all numbers is right-aligned."""
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    numeric = [all(_numeric(r[i]) for r in cells) for i in range(len(header))]
    head = "  " + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    lines = [title, head.rstrip()]
    lines.append("  " + "  ".join("-" * w for w in widths))
    for row in cells:
        lines.append(
            "  "
            + "  ".join(
                c.rjust(w) if num else c.ljust(w)
                for c, w, num in zip(row, widths, numeric, strict=True)
            ).rstrip()
        )
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _numeric(text: str) -> bool:
    return text == "—" or bool(re.fullmatch(r"[-+]?[\d,.]+( ?[%a-zA-Z/]+)?", text))


def machine() -> dict[str, Any]:
    """The machine the numbers come from."""
    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1) if mem_kib else None,
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def write_result(name: str, doc: dict[str, Any], directory: Path = RESULTS_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    return path


def envelope(name: str, bench: Bench, load_start: list[float], **sizes: Any) -> dict[str, Any]:
    """The common head of a result document: what, when, where, under what load."""
    return {
        "benchmark": f"benchmarks/{name}.py",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "sizes": sizes,
        "machine": machine(),
        "kafka_version": bench.kafka_version,
        "redis_version": redis_version(bench.base.redis_url.reveal()),
        "partitions": bench.partitions,
        "loadavg_start": load_start,
        "loadavg_end": load_average(),
    }


def dir_size(path: Path) -> int:
    """Bytes of the files under ``path``."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total
