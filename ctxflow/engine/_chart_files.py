"""Chart files: find the shipped charts, and read a JSON or YAML document safely.

A chart file may come from anywhere, so reading it is bounded before any
parsing starts:

- only a regular file is read (a FIFO, a device or a directory named
  ``x.json`` is refused: a FIFO would block ``open`` forever and ``/dev/zero``
  never ends). The path is checked with ``stat`` before it is opened, opened
  without blocking, and checked again on the open descriptor (it may have been
  swapped in between);
- its size is taken from ``stat`` and at most :data:`MAX_BYTES` + 1 bytes are
  read, so a huge file is never read whole (a file that grows while it is read
  is caught by the extra byte);
- nesting is bounded at :data:`MAX_DEPTH` *before* the parser runs, because
  ``json.loads`` and PyYAML's composer recurse and a deep document would raise
  ``RecursionError``. JSON text is measured by a flat scan of its brackets
  outside strings; YAML is measured as it is composed, and cut short past
  :data:`MAX_YAML_NODES` nodes (PyYAML composes in pure Python, so a large
  flat document is slow to read even when it is shallow).

YAML is read with ``yaml.safe_load`` semantics (no Python tags), with anchors
and aliases refused outright (a "billion laughs" document cannot expand), and
with ``on``/``off``/``yes``/``no`` kept as strings so they can be state ids.
PyYAML is only needed for YAML charts; JSON charts need nothing extra.

Gotcha: ``statecharts/`` lives outside the package. A wheel ships it as
``ctxflow/_statecharts`` while an editable install reads the repository folder;
:func:`chart_path` looks in both.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import json
import os
import re
import stat
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from ctxflow.errors import ChartError

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_YAML_NODES",
    "SUFFIXES",
    "chart_names",
    "chart_path",
    "read_document",
]

#: The largest chart file read, in bytes.
MAX_BYTES = 1_000_000
#: The deepest nesting of mappings and lists in a chart document (the shipped charts use 8).
MAX_DEPTH = 32
#: The most nodes in a YAML chart: PyYAML composes in pure Python, slowly, so a large
#: document is cut short (a chart at every other limit holds about half as many).
MAX_YAML_NODES = 50_000
#: File suffixes of chart documents and their formats.
SUFFIXES = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}

# A string, its closing quote optional so that no match ever fails: one linear pass.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


# -- finding charts -------------------------------------------------------------


def _folders() -> Iterator[Path]:
    try:
        shipped = resources.files("ctxflow") / "_statecharts"
        if shipped.is_dir():
            yield Path(str(shipped))
    except (ModuleNotFoundError, NotADirectoryError):  # pragma: no cover
        pass
    repo = Path(__file__).resolve().parent.parent.parent / "statecharts"
    if repo.is_dir():
        yield repo


def chart_path(name: str) -> Path:
    """The document of the chart ``name``: from the installed wheel, else the repository."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ChartError(
            f"a chart name must be a plain name like 'agent_loop' (got {name!r})",
            rule="chart_name",
            chart=name,
        )
    stem = Path(name).stem if Path(name).suffix in SUFFIXES else name
    for folder in _folders():
        for suffix in SUFFIXES:
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    raise ChartError(
        f"no chart named {name!r} (known: {', '.join(chart_names()) or 'none'})",
        rule="chart_not_found",
        chart=name,
    )


def chart_names() -> list[str]:
    """The names of the charts shipped with ctxflow."""
    names: set[str] = set()
    for folder in _folders():
        names.update(p.stem for p in folder.iterdir() if p.suffix in SUFFIXES)
    return sorted(names)


# -- reading files --------------------------------------------------------------


def _kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def _check_file(info: os.stat_result, where: str) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise ChartError(
            f"{where}: a chart must be a regular file (got {_kind(info.st_mode)})",
            rule="chart_not_a_file",
            chart=where,
        )
    if info.st_size > MAX_BYTES:
        raise ChartError(
            f"{where}: a chart file must be at most {MAX_BYTES} bytes (got {info.st_size})",
            rule="chart_too_large",
            chart=where,
            size=info.st_size,
        )


def _read_bytes(path: Path, where: str) -> bytes:
    try:
        _check_file(os.stat(path), where)
        # Non-blocking, so a file swapped for a FIFO after the stat cannot hang the open.
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
        fd = os.open(path, flags)
    except OSError as exc:
        raise ChartError(
            f"{where}: cannot read the chart: {exc}", rule="chart_read", chart=where
        ) from None
    with os.fdopen(fd, "rb") as file:
        try:
            _check_file(os.fstat(file.fileno()), where)
            data = file.read(MAX_BYTES + 1)
        except OSError as exc:
            raise ChartError(
                f"{where}: cannot read the chart: {exc}", rule="chart_read", chart=where
            ) from None
    if len(data) > MAX_BYTES:
        raise ChartError(
            f"{where}: a chart file must be at most {MAX_BYTES} bytes "
            f"(got at least {len(data)} while reading)",
            rule="chart_too_large",
            chart=where,
        )
    return data


def read_document(path: Path) -> object:
    """The parsed document of a chart file (ChartError when it is unsafe or unreadable)."""
    where = str(path)
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ChartError(
            f"{where}: a chart file must end in .json, .yaml or .yml (got {path.suffix!r})",
            rule="chart_format",
            chart=where,
        )
    data = _read_bytes(path, where)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ChartError(
            f"{where}: a chart file must be UTF-8: {exc}", rule="chart_read", chart=where
        ) from None
    if fmt == "json":
        return _parse_json(text, where)
    return _parse_yaml(text, where)


# -- parsing --------------------------------------------------------------------


def too_deep(where: str, depth: int | None = None) -> ChartError:
    """The error for a document nested deeper than :data:`MAX_DEPTH` (``depth`` if known)."""
    got = f"at least {MAX_DEPTH + 1}" if depth is None else str(depth)
    return ChartError(
        f"{where}: a chart document must nest mappings and lists at most {MAX_DEPTH} deep "
        f"(got {got})",
        rule="chart_too_deep",
        chart=where,
        limit=MAX_DEPTH,
    )


def _json_depth(text: str) -> int:
    """How deep JSON text nests: a flat scan of its brackets outside strings (no recursion)."""
    brackets = _NOT_BRACKETS.sub("", _JSON_STRING.sub("", text))
    return max(itertools.accumulate(map(_BRACKET_STEP.__getitem__, brackets), initial=0))


def _parse_json(text: str, where: str) -> object:
    depth = _json_depth(text)
    if depth > MAX_DEPTH:
        raise too_deep(where, depth)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ChartError(
            f"{where}: not valid JSON: {exc}", rule="chart_syntax", chart=where
        ) from None


@functools.cache
def _yaml_loader() -> Any:
    try:
        yaml = importlib.import_module("yaml")
    except ModuleNotFoundError:
        raise ChartError(
            "YAML charts need PyYAML (pip install pyyaml); JSON charts need nothing",
            rule="yaml_unavailable",
        ) from None

    safe: Any = yaml.SafeLoader

    def compose_node(self: Any, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases are not allowed in charts", event.start_mark
            )
        self.chart_nodes += 1
        if self.chart_nodes > MAX_YAML_NODES:
            raise ChartError(
                f"{self.chart_where}: a YAML chart must hold at most {MAX_YAML_NODES} nodes "
                f"(got at least {MAX_YAML_NODES + 1})",
                rule="chart_too_large",
                chart=self.chart_where,
            )
        previous = self.chart_depth
        if self.check_event(yaml.MappingStartEvent, yaml.SequenceStartEvent):
            self.chart_depth += 1
            if self.chart_depth > MAX_DEPTH:
                raise too_deep(self.chart_where)
        try:
            return safe.compose_node(self, parent, index)
        finally:
            self.chart_depth = previous

    loader: Any = type(
        "ChartLoader",
        (safe,),
        {"compose_node": compose_node, "chart_where": "chart", "chart_depth": 0, "chart_nodes": 0},
    )
    # Keep on/off/yes/no as strings (they are fine state ids), as python-statemachine does.
    loader.yaml_implicit_resolvers = {
        first: [
            (tag, regexp)
            for tag, regexp in resolvers
            if not (tag == "tag:yaml.org,2002:bool" and first not in "tTfF")
        ]
        for first, resolvers in safe.yaml_implicit_resolvers.items()
    }
    return loader


def _parse_yaml(text: str, where: str) -> object:
    loader_class = _yaml_loader()
    yaml = importlib.import_module("yaml")
    loader = loader_class(text)
    loader.chart_where = where
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ChartError(
            f"{where}: not a safe YAML chart: {exc}", rule="chart_syntax", chart=where
        ) from None
    finally:
        loader.dispose()
