"""The programs the local stack runs, and where they come from: Kafka from
its Maven Central jars (resolved once with Maven into a cache shared by every
checkout), run on Java 17+; Redis from Debian's ``redis-server``, installed
when it is missing and we are root."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from agents.errors import StackError
from agents.stack.processes import tail_text

#: The source checkout the stack runs from; Kafka's build and logging files are in it.
REPO_ROOT = Path(__file__).resolve().parents[2]
POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
LOG4J_CONFIG = REPO_ROOT / "deploy" / "kafka" / "log4j2.properties"
MIN_JAVA = 17

#: Where the stack says what it is doing (a line at a time).
Progress = Callable[[str], None]


def kafka_libs(cache_dir: Path, progress: Progress) -> Path:
    """The directory of Kafka's jars under ``cache_dir``, resolved with Maven on first use."""
    if not POM.exists():
        raise StackError(
            f"{POM} is missing: the local stack runs from a userpulse source checkout. "
            "Clone the repository, or point USERPULSE_KAFKA_BOOTSTRAP at an existing broker"
        )
    key = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    libs = cache_dir / f"kafka-{key}" / "libs"
    done = libs.parent / "complete"
    if done.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            "Maven (mvn) is not installed; it fetches Kafka's jars from Maven Central once. "
            "Install it (Debian: apt-get install -y maven) and run again"
        )
    progress(f"resolving Apache Kafka jars from Maven Central into {libs} (first run only)")
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
            log_tail=tail_text(result.stdout + result.stderr),
        )
    done.write_text(f"resolved in {time.monotonic() - started:.1f} s\n")
    progress(f"resolved {len(list(libs.glob('*.jar')))} jars in {time.monotonic() - started:.0f} s")
    return libs


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


def install_redis(progress: Progress) -> str:
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
                log_tail=tail_text(result.stdout + result.stderr),
            )
    binary = shutil.which("redis-server")
    if binary is None:
        raise StackError("redis-server was installed but is not on PATH; check /usr/bin")
    return binary
