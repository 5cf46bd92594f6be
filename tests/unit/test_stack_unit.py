"""The local stack's checks that need no running server."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.errors import StackError
from agents.settings import StackSettings
from agents.stack import local, programs
from agents.stack.local import Stack
from agents.stack.network import free_port, port_free


def make_stack(tmp_path: Path, **ports: int) -> Stack:
    return Stack(
        StackSettings(stack_dir=tmp_path, cache_dir=tmp_path / "cache", **ports), lambda m: None
    )


def test_missing_java_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(programs.shutil, "which", lambda name: None)
    with pytest.raises(StackError, match=r"Java 17\+ is not installed.*apt-get install"):
        programs.check_java()


def test_missing_maven_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(programs.shutil, "which", lambda name: None)
    with pytest.raises(
        StackError, match=r"Maven \(mvn\) is not installed.*apt-get install -y maven"
    ):
        programs.kafka_libs(tmp_path / "cache", lambda m: None)


def test_a_port_in_use_is_named_with_the_setting_to_change(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert not port_free(port)
        with pytest.raises(StackError, match=rf"port {port} .* in use.*USERPULSE_STACK_REDIS_PORT"):
            make_stack(tmp_path)._check_port_free(port, "Redis", "USERPULSE_STACK_REDIS_PORT")
    assert port_free(port)


def test_server_properties_bind_loopback_and_disable_auto_create(tmp_path: Path) -> None:
    s = make_stack(tmp_path, kafka_port=19092, controller_port=19093, redis_port=16379)
    props = s._server_properties(tmp_path / "data")
    assert "listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093" in props
    assert "controller.quorum.voters=1@127.0.0.1:19093" in props
    assert "auto.create.topics.enable=false" in props
    assert "process.roles=broker,controller" in props


def test_down_never_stops_a_process_it_did_not_start(tmp_path: Path) -> None:
    """A stale pid file whose pid now belongs to someone else is ignored."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        s = make_stack(tmp_path)
        (tmp_path / "pids").mkdir()
        (tmp_path / "pids" / "kafka.pid").write_text(f"{other.pid}\n/some/server.properties\n")
        assert s.live_pid("kafka") is None
        assert s.down() == []
        assert other.poll() is None, "a foreign process was stopped"
        assert not (tmp_path / "pids" / "kafka.pid").exists()
    finally:
        other.kill()
        other.wait()


def test_down_stops_a_registered_process_by_pid_file(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)  # marker-xyz"],
        start_new_session=True,
    )
    s = make_stack(tmp_path)
    s.register("worker-demo", child.pid, "marker-xyz")
    deadline = time.monotonic() + 10  # until the child has exec'd python with the marker
    while s.live_pid("worker-demo") is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert s.live_pid("worker-demo") == child.pid
    assert s.down() == ["worker-demo"]
    assert child.wait(timeout=10) is not None


def test_free_port_is_free() -> None:
    assert port_free(free_port())


def test_cluster_ids_never_look_like_an_option() -> None:
    ids = {local.new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
