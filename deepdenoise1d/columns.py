"""A record that is one column of a text table, and the table written back with that column denoised.

Instruments export tables: ``time_s,counts`` with a header row. :func:`find_column` names the column
(by its header name or its 0-based index), :func:`read_column` reads it as one record without loading
the table, and :func:`write_column` copies the table line by line with that column's values replaced:
the header, the time column, the other columns and comment lines come out as they went in.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepdenoise1d.errors import InputError, show_path
from deepdenoise1d.io import (TEXT_ROWS, TEXT_SUFFIXES, _SEPARATOR, _is_data, _is_header, _text_lines, read_text_signals,
                              release_pages, temp_memmap)
from deepdenoise1d.safewrite import atomic_write

PathLike = str | os.PathLike
_SPLIT = re.compile(f"({_SEPARATOR.pattern})")  # keeps the separators, so a line is rebuilt as it was
_HEADER_SPLIT = re.compile(r"[ \t]*[,;\t][ \t]*")  # names may hold blanks ("Time (s)"); columns are split by , ; or tab


@dataclass(frozen=True)
class Column:
    """One column of a text table: its index, its name (None without a header) and the header line."""

    index: int
    name: str | None
    header: str | None
    names: tuple[str, ...]
    width: int

    def label(self) -> str:
        """``counts`` or ``column 1`` (for messages and plots)."""
        return self.name if self.name else f"column {self.index}"


def is_table(path: PathLike) -> bool:
    """A text file (by suffix)."""
    return Path(path).suffix.lower() in TEXT_SUFFIXES


def table_layout(path: PathLike) -> tuple[str | None, int]:
    """The header line (None when the first data line holds numbers) and the values per row."""
    header = None
    for _, line in _text_lines(Path(path)):
        if not _is_data(line):
            continue
        if header is None and _is_header(line):
            header = line.strip()
            continue
        return header, len(_fields(line))
    raise InputError(f"{show_path(path)}: file holds no values")


def header_names(header: str | None, width: int) -> tuple[str, ...]:
    """The header's column names, when it has one per column (else none: columns go by index)."""
    if header is None:
        return ()
    names = tuple(name for name in _HEADER_SPLIT.split(header.strip().strip(",;")) if name)
    if len(names) != width:
        names = tuple(header.split())
    return names if len(names) == width else ()


def find_column(path: PathLike, spec: str | int | None) -> Column | None:
    """The column ``spec`` names (a header name, or a 0-based index) in the text table ``path``.

    With ``spec`` None: a one-column file with a header gives that column (so the header is written back),
    a file without a header gives None (rows are signals), and a table of several columns with a header is
    refused with its column names, since a time column read as a signal is a wrong answer.
    """
    header, width = table_layout(path)
    names = header_names(header, width)
    if spec is None:
        if header is not None and width == 1:
            return Column(0, names[0] if names else None, header, names, width)
        if header is not None:
            shown = ", ".join(names) if names else f"{width} columns"
            raise InputError(f"{show_path(path)}: a table with a header ({shown}): name the column to denoise "
                             "with --column NAME (or its 0-based index)")
        return None
    text = str(spec).strip()
    if re.fullmatch(r"[0-9]+", text):
        index = int(text)
        if index >= width:
            raise InputError(f"{show_path(path)}: --column {index} is past the last column (the table has {width}, "
                             "counted from 0)")
        return Column(index, names[index] if names else None, header, names, width)
    matches = [i for i, name in enumerate(names) if name == text] or \
              [i for i, name in enumerate(names) if name.casefold() == text.casefold()]
    if len(matches) != 1:
        have = ", ".join(names) if names else "no header row: give a 0-based index"
        raise InputError(f"{show_path(path)}: no single column named {text!r} (columns: {have})")
    return Column(matches[0], names[matches[0]], header, names, width)


def read_column(path: PathLike, column: Column, allow_nan: bool = False) -> tuple[np.ndarray, tuple[int, ...]]:
    """The column as one record, (1, L) float64 in a temporary memory map, and its stored shape (L,).

    ``allow_nan``: NaN cells (``nan``) are let through as gaps (:func:`deepdenoise1d.io.scan_gaps`).
    """
    table, stored = read_text_signals(path, allow_nan)
    if len(stored) == 1:  # one value per row: the file is the record
        return table, stored
    out = temp_memmap((1, table.shape[0]), np.float64)
    for start in range(0, table.shape[0], TEXT_ROWS):
        out[0, start : start + TEXT_ROWS] = table[start : start + TEXT_ROWS, column.index]
    return out, (table.shape[0],)


def write_column(path: PathLike, source: PathLike, column: Column, values: np.ndarray, reads=()) -> Path:
    """Copy the table ``source`` to ``path`` (atomically), the column's values replaced by ``values`` (L,).

    Every other character of the table is kept: header, comments, blank lines, separators, the other
    columns' text. float32 values are written with 9 significant digits, float64 with 17 (both round-trip).
    """
    digits = 9 if values.dtype == np.float32 else 17
    count = values.shape[-1]

    def write(f) -> None:
        row, header_seen = 0, column.header is None
        for _, line in _text_lines(Path(source)):
            if _is_data(line) and not header_seen:
                header_seen = True  # the header row, kept as it was
            elif _is_data(line):
                if row >= count:
                    raise InputError(f"{show_path(source)}: changed while being denoised (more rows than read)")
                line = _replace(line, column.index, format(float(values[row]), f".{digits}g"))
                row += 1
                if row % TEXT_ROWS == 0:
                    release_pages(values)
            f.write((line + "\n").encode("utf-8"))
        if row != count:
            raise InputError(f"{show_path(source)}: changed while being denoised ({row} rows, {count} values)")

    return atomic_write(path, write, reads)


def _fields(line: str) -> list[str]:
    text = line.strip()
    if text[-1:] in (",", ";"):
        text = text[:-1].rstrip(" \t")
    return _SEPARATOR.split(text)


def _replace(line: str, index: int, value: str) -> str:
    """``line`` with its ``index``-th value replaced by ``value``, every separator and blank kept."""
    lead = line[: len(line) - len(line.lstrip())]
    parts = _SPLIT.split(line.strip())
    parts[2 * index] = value
    return lead + "".join(parts)
