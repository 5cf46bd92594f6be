"""Opening a history file: a path or ``-`` (stdin), plain or gzip — told by
its first bytes, not its name — as bytes (:func:`open_bytes`) or as text for
the csv module (:func:`open_text`). stdin is never closed."""

from __future__ import annotations

import gzip
import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Final, cast

from agents.files.rows import ReplayError

#: The first bytes of a gzip file.
GZIP_MAGIC: Final = b"\x1f\x8b"


@contextmanager
def open_bytes(path: str | Path) -> Iterator[IO[bytes]]:
    """``path`` (``-`` = stdin) as bytes; gzip is recognised by its magic bytes."""
    source = str(path)
    try:
        raw: Any = sys.stdin.buffer if source == "-" else open(source, "rb")  # noqa: SIM115
    except OSError as exc:
        raise ReplayError(f"cannot read {source}: {exc.strerror or exc}") from None
    wrapped = not isinstance(raw, io.BufferedReader)
    buffered: io.BufferedReader = io.BufferedReader(raw) if wrapped else raw
    try:
        try:
            gzipped = buffered.peek(2)[:2] == GZIP_MAGIC
        except OSError as exc:
            raise ReplayError(f"cannot read {source}: {exc.strerror or exc}") from None
        if gzipped:
            # closing a GzipFile leaves the file object it was given open
            with gzip.GzipFile(fileobj=buffered, mode="rb") as unzipped:
                yield cast(IO[bytes], unzipped)
        else:
            yield buffered
    finally:
        if source != "-":
            raw.close()
        elif wrapped:
            buffered.detach()  # closing the wrapper would close stdin


@contextmanager
def open_text(path: str | Path) -> Iterator[IO[str]]:
    """``path`` (``-`` = stdin) as text, as the csv module reads it: UTF-8 with
    any byte-order mark dropped, line ends untranslated (``newline=""``)."""
    with open_bytes(path) as stream:
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
        try:
            yield text
        finally:
            text.detach()  # closing it would close the stream under it
