"""Rows of several distribution files brought together by a key, on disk, for readers that join large files
(SNOMED CT's concepts, descriptions, relationships and language refsets; LOINC's table, parts, part links
and hierarchy) without holding an edition in memory.

Each row is a tuple whose first field is its key (a concept's code, a description's id) and second a tag
saying which file it came from. `grouped` sorts them by key with an external merge sort — runs of
`run_rows` rows sorted in memory and written with `marshal` to a temporary directory, then merged with
`heapq.merge` — and yields each key with its rows. Memory: one run, and one block of each run file while
merging (runs are written and read in blocks of `BLOCK_ROWS` rows). The sort is stable and the input order fixed, so the same files always give the same groups in
the same order (an upload's parse step, run again, emits the same chunks).
"""

from __future__ import annotations

import heapq
import marshal
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import groupby
from operator import itemgetter

Row = tuple
RUN_ROWS = 200_000  # rows sorted in memory at a time: tens of MB for SNOMED's descriptions
# Rows per marshal record of a run file: `marshal.load` of one row at a time from a file was half of a
# SNOMED CT edition's parse (py-spy); a block of rows is read with one call.
BLOCK_ROWS = 1000
_KEY = itemgetter(0)


@contextmanager
def workspace() -> Iterator[str]:
    """A temporary directory for the runs of one reading, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="terminology-") as directory:
        yield directory


def grouped(rows: Iterable[Row], directory: str, run_rows: int = RUN_ROWS) -> Iterator[tuple[str, list[Row]]]:
    """(key, its rows in input order), keys in ascending order."""
    for key, group in groupby(_sorted(rows, directory, run_rows), key=_KEY):
        yield key, list(group)


def _sorted(rows: Iterable[Row], directory: str, run_rows: int) -> Iterator[Row]:
    runs: list[str] = []
    batch: list[Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= run_rows:
            runs.append(_write_run(sorted(batch, key=_KEY), directory))
            batch = []
    batch.sort(key=_KEY)
    if not runs:
        yield from batch
        return
    if batch:
        runs.append(_write_run(batch, directory))
    try:
        yield from heapq.merge(*(_read_run(path) for path in runs), key=_KEY)
    finally:
        for path in runs:
            os.unlink(path)


def _write_run(rows: list[Row], directory: str) -> str:
    handle, path = tempfile.mkstemp(dir=directory, suffix=".run")
    with os.fdopen(handle, "wb", buffering=1024 * 1024) as run:
        for start in range(0, len(rows), BLOCK_ROWS):
            marshal.dump(rows[start : start + BLOCK_ROWS], run)
    return path


def _read_run(path: str) -> Iterator[Row]:
    with open(path, "rb", buffering=256 * 1024) as run:
        while True:
            try:
                block = marshal.load(run)
            except EOFError:
                return
            yield from block
