"""Files: extended XYZ reading with frame numbers in every message, the bundled data
files, and "frames" as a path, one Atoms or an iterable."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import ase
import ase.io

from .framefile import FrameFile, _check_file, _checked
from .labels import _normalise_require

_DATA_DIR = Path(__file__).resolve().parents[2] / "data"


def read_extxyz(
    path: str | os.PathLike[str],
    index: int | str | slice = ":",
    *,
    require: str | Iterable[str] = (),
    **keys: str,
) -> list[ase.Atoms]:
    """Read an extended-XYZ file and check every configuration and its labels.

    Parameters
    ----------
    path : str or path-like
        The extxyz file (positions in Å, energies in eV, forces in eV/Å, virials in eV).
    index : int, str or slice, default ":"
        Which frames to read, as in ``ase.io.read`` (``":"`` for all, ``"10:20"``, ``-1``).
    require : iterable of {"energy", "forces", "virial"}, default ()
        Labels every configuration must have.
    **keys : str
        Key names passed on to :func:`get_labels`: ``energy_key``, ``forces_key``,
        ``virial_key``, ``stress_key``, ``config_type_key``.

    Returns
    -------
    list of ase.Atoms
        The configurations, always a list (also for an integer ``index``), with the
        calculator results ASE attached intact. Get their labels with :func:`get_all_labels`
        using the same keys.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is empty, cannot be parsed, or a configuration is invalid (see
        :func:`validate_structure`), has malformed labels (see :func:`get_labels`) or lacks a
        required label. The message starts with the path and names the frame.
    """
    path = Path(path)
    _check_file(path, "an extxyz file")
    names = _normalise_require(require)
    if "frame_index" in keys:
        raise TypeError("read_extxyz numbers the frames itself; do not pass frame_index")

    try:
        frames = ase.io.read(path, index=index, format="extxyz")
    except (ValueError, IndexError, KeyError, TypeError, OSError) as err:
        raise ValueError(
            f"{path}: could not be read as extended XYZ (index={index!r}): "
            f"{type(err).__name__}: {err}"
        ) from err
    if isinstance(frames, ase.Atoms):
        frames = [frames]
    frames = list(frames)
    if not frames:
        raise ValueError(
            f"{path}: no frames read with index={index!r}; the file holds no extended-XYZ "
            "frames or the index selects none"
        )

    return _checked(frames, index, names, keys, str(path))


#: ase.io formats that hold no training labels: what gapkit says instead of reading them
_NOT_LABELS = {
    "lammps-dump-text": "a LAMMPS dump holds no energies (ASE reads 0.0) and names atoms by "
                        "type number (ASE reads types 1, 2, ... as H, He, ...)",
    "lammps-dump-binary": "a LAMMPS dump holds no energies (ASE reads 0.0) and names atoms by "
                          "type number (ASE reads types 1, 2, ... as H, He, ...)",
    "lammps-data": "a LAMMPS data file holds no energies or forces",
}
_EXTXYZ = ("extxyz", "xyz")
#: the label-key arguments of the readers (what a FrameFile takes)
_KEY_NAMES = {"energy_key", "forces_key", "virial_key", "stress_key", "config_type_key"}


def _file_format(path: Path, format: str | None) -> str:
    """``format``, or the one ase.io finds from the name and content of ``path``."""
    from ase.io.formats import UnknownFileTypeError, filetype, ioformats

    if format is not None:
        if format not in ioformats:
            raise ValueError(f"{path}: format={format!r} is not one ase.io knows (e.g. "
                             "'extxyz', 'vasp-out', 'vasp-xml', 'traj', 'db')")
        return format
    try:
        fmt = filetype(str(path))
        if fmt not in ioformats:
            raise UnknownFileTypeError(f"no ase.io format {fmt!r}")
        return fmt
    except (UnknownFileTypeError, OSError, ValueError) as err:
        raise ValueError(
            f"{path}: ase.io cannot tell this file's format ({err}); pass format=... (`gapkit "
            "... --format NAME`) with one of ase.io's formats, or convert the file to extended "
            "XYZ: ase.io.write('data.xyz', ase.io.read(path, ':', format=NAME))") from None


def _select(items: list, index: int | str | slice) -> list:
    """``items[index]`` with ase.io.read's index forms (an int, ":", "10:20", a slice)."""
    from ase.io.formats import string2index

    picked = string2index(index) if isinstance(index, str) else index
    if isinstance(picked, str):
        raise ValueError(f"index={index!r} is not a frame index (an int or 'start:stop:step')")
    return items[picked] if isinstance(picked, slice) else [items[picked]]


def _read_db(path: Path, index: int | str | slice) -> list[ase.Atoms]:
    """An ASE database's rows as Atoms with their key-value pairs in ``info`` (config_type,
    energy_sigma, ...), which ``ase.io.read`` drops, and their labels as ASE stores them."""
    from ase.db import connect

    with connect(path) as db:
        rows = list(db.select())
    out = []
    for row in _select(rows, index):
        atoms = row.toatoms()
        atoms.info.update(row.key_value_pairs)
        out.append(atoms)
    return out


def read_frames(
    path: str | os.PathLike[str],
    index: int | str | slice = ":",
    *,
    format: str | None = None,
    require: str | Iterable[str] = (),
    **keys: str,
) -> list[ase.Atoms]:
    """Read training or test frames from any file ``ase.io`` reads, and check every
    configuration and its labels.

    Extended XYZ is read as by :func:`read_extxyz`; an ASE database (``.db``) keeps each
    row's key-value pairs in ``atoms.info`` (``config_type``, ``energy_sigma``, ...); VASP
    ``OUTCAR`` / ``vasprun.xml``, ASE trajectories and the other formats of ``ase.io`` give
    the labels of the calculator ASE attaches. Files that hold no labels (a LAMMPS dump,
    whose energies ASE reads as 0.0 and whose atom types as H, He, ...) are refused.

    Parameters
    ----------
    path : str or path-like
    index : int, str or slice, default ":"
        Which frames, as in ``ase.io.read``.
    format : str, optional
        An ``ase.io`` format name; by default ase.io's guess from the name and content.
    require, **keys
        As in :func:`read_extxyz`.

    Returns
    -------
    list of ase.Atoms

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`read_extxyz`; also for a format ase cannot tell or read (the message names
        it and how to convert) and for a format that holds no labels.
    """
    path = Path(path)
    _check_file(path, "a data file ase.io reads (extxyz, ASE db, OUTCAR, vasprun.xml, traj)")
    fmt = _file_format(path, format)
    if fmt in _EXTXYZ:
        return read_extxyz(path, index, require=require, **keys)
    if fmt in _NOT_LABELS:
        raise ValueError(
            f"{path}: {fmt}: {_NOT_LABELS[fmt]}, so it cannot give training labels. Write "
            "the structures with their species and reference energies and forces to extended "
            "XYZ (e.g. ase.io.read(path, ':', format='lammps-dump-text', specorder=['Si']), "
            "label each frame, then ase.io.write('data.xyz', frames))")
    names = _normalise_require(require)
    if "frame_index" in keys:
        raise TypeError("read_frames numbers the frames itself; do not pass frame_index")
    frames: Any
    try:
        if fmt == "db":
            frames = _read_db(path, index)
        else:
            frames = ase.io.read(path, index=index, format=fmt)
    except (ValueError, IndexError, KeyError, TypeError, OSError, AttributeError) as err:
        raise ValueError(
            f"{path}: could not be read as {fmt} (index={index!r}): {type(err).__name__}: "
            f"{err}. If the format is another, pass format=...; or convert the file to "
            "extended XYZ with ase.io") from err
    if isinstance(frames, ase.Atoms):
        frames = [frames]
    frames = list(frames)
    if not frames:
        raise ValueError(f"{path}: no frames read as {fmt} with index={index!r}")
    return _checked(frames, index, names, keys, f"{path} ({fmt})")


def bundled_path(name: str) -> Path:
    """Path of a data file bundled in the repository's ``data/`` folder.

    Parameters
    ----------
    name : str
        File name, e.g. ``"Si_train.xyz"``, ``"Si_test.xyz"`` or ``"ethanol_rmd17_200.xyz"``.

    Returns
    -------
    pathlib.Path
        Absolute path of the file.

    Raises
    ------
    FileNotFoundError
        If there is no such file; the message lists the bundled files. The ``data/`` folder
        sits beside the ``gapkit`` package in a source checkout (editable install); it is not
        part of a wheel.
    """
    if Path(name).name != name:
        raise ValueError(f"name must be a bare file name inside data/, got {name!r}")
    path = _DATA_DIR / name
    if not path.is_file():
        available = (
            sorted(p.name for p in _DATA_DIR.iterdir() if p.suffix == ".xyz")
            if _DATA_DIR.is_dir()
            else []
        )
        if available:
            hint = f"bundled files are {available}"
        else:
            hint = (
                f"the data folder {_DATA_DIR} is missing: bundled data come with a source "
                "checkout of gapkit (pip install -e .), not with an installed wheel"
            )
        raise FileNotFoundError(f"no bundled data file {name!r} in {_DATA_DIR}; {hint}")
    return path


def load_bundled(name: str, **kw: Any) -> list[ase.Atoms]:
    """Read a bundled extxyz file with :func:`read_extxyz`.

    Parameters
    ----------
    name : str
        File name in the repository's ``data/`` folder (see :func:`bundled_path`).
    **kw
        Passed on to :func:`read_extxyz` (``index``, ``require``, key names).

    Returns
    -------
    list of ase.Atoms
    """
    return read_extxyz(bundled_path(name), **kw)


def as_frames(frames: Any, *, require: str | None = None, lazy: bool = False,
              **read_kwargs: Any) -> list:
    """``frames`` as a list of ase.Atoms: a path of any file ase.io reads (read by
    :func:`read_frames` with ``read_kwargs``, e.g. the label keys), one Atoms, or any
    iterable of them. ``require``: the name of the caller, and an empty list raises
    ValueError ("no frames given to ...") instead of being returned. A
    :class:`~gapkit.data.framefile.FrameFile` is returned as it is (read when used); with
    ``lazy``, so is an extended-XYZ path, as a FrameFile with the label keys of
    ``read_kwargs``."""
    if isinstance(frames, FrameFile):  # a Sequence of Atoms, as a list is to its users
        return frames  # type: ignore[return-value]
    if lazy and isinstance(frames, (str, Path)) and set(read_kwargs) <= _KEY_NAMES:
        path = Path(frames)
        _check_file(path, "a data file ase.io reads")
        if _file_format(path, None) in _EXTXYZ:
            return FrameFile(path, **read_kwargs)  # type: ignore[return-value]
    if isinstance(frames, (str, Path)):
        out = read_frames(frames, **read_kwargs)
    elif isinstance(frames, ase.Atoms):
        out = [frames]
    else:
        out = list(frames)
    if require and not out:
        raise ValueError(f"no frames given to {require}")
    return out
