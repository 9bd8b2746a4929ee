"""An extended-XYZ file as a sequence of frames read when they are used.

:class:`FrameFile` indexes a file once (where each frame starts and how many atoms it has:
a pass over its lines, nothing parsed beyond the atom counts) and then reads frames from
there: one by index, a range as it is iterated (a bounded chunk at a time), a slice as
another :class:`FrameFile`. A fit given one keeps no list of all frames: its passes over
the labels stream through the file, and on Dask workers (:mod:`gapkit.gp.parallel`) each
worker reads its own range of frames from the file (a path every worker sees: a shared
filesystem), so no process ever holds all frames.

Every frame read is checked as :func:`~gapkit.data.read_extxyz` checks it, and errors name
the frame's number in the file. A file changed after it was indexed is refused instead of
read at stale offsets.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import ase
import ase.io
import numpy as np

from .labels import _labels_of_frames
from .structures import validate_structure

__all__ = ["FrameFile", "READ_CHUNK"]

#: frames parsed at a time when a range of a FrameFile is iterated
READ_CHUNK = 64


def _frame_numbers(index: int | str | slice | None) -> tuple[Iterable[int], str]:
    """Map positions in the list read with ``index`` to frame numbers in the file, when that is
    possible without knowing the file's length; otherwise count from the first frame read and
    say so."""
    if index is None or index == ":":
        return range(10**18), ""
    if isinstance(index, int) and index >= 0:
        return [index], ""
    if isinstance(index, str):
        try:
            parts = [int(p) if p.strip() else None for p in index.split(":")]
        except ValueError:
            parts = []
        if 2 <= len(parts) <= 3:
            index = slice(*parts)
    if isinstance(index, slice):
        start, step = index.start or 0, index.step or 1
        if start >= 0 and step > 0:
            return range(start, 10**18, step), ""
    return range(10**18), f" (frame numbers count the frames selected by index={index!r})"


def _checked(frames: list, index: Any, names: tuple[str, ...], keys: dict, where: str) -> list:
    """``frames`` after every structure and its labels are checked; a ValueError starts
    with ``where`` and names the frame."""
    numbers, note = _frame_numbers(index)
    try:
        for atoms, k in zip(frames, numbers):
            validate_structure(atoms, frame_index=k)
        _labels_of_frames(frames, numbers, names, keys)
    except ValueError as err:
        raise ValueError(f"{where}: {err}{note}") from err
    return frames


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file; check the path (cwd is {Path.cwd()})")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give the path of {what}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty; expected {what}")


def _index(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Byte offsets of the frames of an extxyz file (with the end of the last) and their
    atom counts."""
    offsets: list[int] = []
    counts: list[int] = []
    line_no = 0
    with open(path, "rb") as fh:
        pos = 0
        while True:
            head = fh.readline()
            if not head:
                break
            line_no += 1
            if not head.strip():  # blank lines between or after frames
                pos += len(head)
                continue
            try:
                n = int(head.split()[0])
                if n < 0 or len(head.split()) != 1:
                    raise ValueError
            except ValueError:
                raise ValueError(
                    f"{path}: line {line_no} should start frame {len(offsets)} with its "
                    f"number of atoms, but reads {head[:60].decode(errors='replace')!r}; "
                    "the file is not extended XYZ or an earlier frame has more or fewer atom "
                    "lines than its count says") from None
            start = pos
            pos += len(head)
            for _ in range(n + 1):
                line = fh.readline()
                if not line:
                    raise ValueError(f"{path}: frame {len(offsets)} (line {line_no}) says "
                                     f"{n} atoms but the file ends before them")
                pos += len(line)
            line_no += n + 1
            offsets.append(start)
            counts.append(n)
        offsets.append(pos)
    return np.asarray(offsets, dtype=np.int64), np.asarray(counts, dtype=np.int64)


class FrameFile(Sequence):
    """The frames of an extended-XYZ file, read from it when used.

    Parameters
    ----------
    path : str or path-like
        The extxyz file.
    **keys : str
        The label keys (``energy_key``, ``forces_key``, ...) every frame read is checked
        with, as in :func:`~gapkit.data.read_extxyz`.

    Examples
    --------
    >>> frames = FrameFile("train.xyz")                              # doctest: +SKIP
    >>> len(frames), frames.n_atoms[:3]                              # doctest: +SKIP
    >>> GAP().fit(frames, n_workers=2)  # each worker reads its frames  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str], **keys: str):
        path = Path(path).resolve()
        _check_file(path, "an extxyz file")
        if "frame_index" in keys:
            raise TypeError("FrameFile numbers the frames itself; do not pass frame_index")
        self.path = path
        self.keys = dict(keys)
        self._stamp = self._stat()
        self._offsets, counts = _index(path)
        if counts.size == 0:
            raise ValueError(f"{path}: no extended-XYZ frames in the file")
        self._counts = counts
        self._selected = np.arange(counts.size, dtype=np.int64)

    def _stat(self) -> tuple[int, int]:
        st = os.stat(self.path)
        return st.st_size, st.st_mtime_ns

    @property
    def frame_numbers(self) -> np.ndarray:
        """The frames' numbers in the file (0 is its first frame)."""
        return self._selected.copy()

    @property
    def n_atoms(self) -> np.ndarray:
        """Atoms per frame, from the index (nothing read)."""
        return self._counts[self._selected]

    @property
    def partition_key(self) -> tuple:
        """What identifies these frames (the file, its state, the selection)."""
        return (str(self.path), self._stamp, self._selected.tobytes())

    def __len__(self) -> int:
        return int(self._selected.size)

    def __repr__(self) -> str:
        return f"FrameFile({str(self.path)!r}, {len(self)} frames)"

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, slice):
            out = object.__new__(FrameFile)
            out.__dict__.update(self.__dict__)
            out._selected = self._selected[item]
            return out
        if isinstance(item, (list, np.ndarray)):
            out = object.__new__(FrameFile)
            out.__dict__.update(self.__dict__)
            out._selected = self._selected[np.asarray(item, dtype=np.int64)]
            return out
        k = int(item)
        if not -len(self) <= k < len(self):
            raise IndexError(f"frame {k} of {len(self)}")
        return self._read([int(self._selected[k])])[0]

    def __iter__(self) -> Iterator[ase.Atoms]:
        sel = self._selected
        for i in range(0, sel.size, READ_CHUNK):
            yield from self._read(sel[i:i + READ_CHUNK].tolist())

    def _read(self, numbers: list[int]) -> list[ase.Atoms]:
        """The frames with these numbers in the file, parsed and checked (consecutive
        numbers are read as one block)."""
        try:
            stamp = self._stat()
        except FileNotFoundError:
            import socket

            raise FileNotFoundError(
                f"{self.path}: no such file on {socket.gethostname()}. Frames are read from "
                "the file where they are used: Dask workers need it at the same path (a "
                "shared filesystem), or pass the frames as a list") from None
        if stamp != self._stamp:
            raise ValueError(f"{self.path}: the file changed after it was indexed (size or "
                             "modification time); make a new FrameFile (or restart the fit) "
                             "after writing to it")
        out: list[ase.Atoms] = []
        with open(self.path, "rb") as fh:
            i = 0
            while i < len(numbers):
                j = i + 1
                while j < len(numbers) and numbers[j] == numbers[j - 1] + 1:
                    j += 1
                first, last = numbers[i], numbers[j - 1]
                fh.seek(int(self._offsets[first]))
                text = fh.read(int(self._offsets[last + 1] - self._offsets[first]))
                try:
                    got = ase.io.read(io.StringIO(text.decode()), index=":",
                                      format="extxyz")
                except (ValueError, IndexError, KeyError, TypeError) as err:
                    raise ValueError(f"{self.path}: frames {first}-{last} could not be read "
                                     f"as extended XYZ: {type(err).__name__}: {err}") from err
                out.extend(_checked(list(got), f"{first}:", (), self.keys, str(self.path)))
                i = j
        return out
