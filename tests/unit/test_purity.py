"""The pure core stays pure: no I/O library, no clock, no environment."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

STREAMS = Path(__file__).resolve().parents[2] / "streams"
FORBIDDEN_MODULES = {"faust", "aiokafka", "kafka", "redis", "mode", "time", "os", "socket"}
FORBIDDEN_CALLS = {"now", "utcnow", "today", "time_ns", "monotonic"}


def modules() -> list[Path]:
    return sorted(STREAMS.rglob("*.py"))


def test_the_core_has_modules() -> None:
    assert len(modules()) >= 5


@pytest.mark.parametrize("path", modules(), ids=lambda p: p.name)
def test_core_module_imports_no_io_and_reads_no_clock(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    offences: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            offences += [a.name for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in FORBIDDEN_MODULES:
                offences.append(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in FORBIDDEN_CALLS
        ):
            offences.append(f"{node.func.attr}() at line {node.lineno}")
    assert offences == [], f"{path.name} must stay pure but uses {offences}"
