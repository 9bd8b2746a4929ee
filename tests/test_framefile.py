"""FrameFile: an extxyz file read frame by frame when used gives the frames, labels and
checks of read_extxyz, and refuses a file changed after it was indexed."""

from __future__ import annotations

import os
import pickle

import ase.io
import numpy as np
import pytest

from gapkit.data import FrameFile, as_frames, bundled_path, get_all_labels, read_extxyz
from gapkit.data import framefile


@pytest.fixture(scope="module")
def path():
    return bundled_path("Si_train.xyz")


def _same(a, b):
    assert np.array_equal(a.numbers, b.numbers)
    assert np.array_equal(a.positions, b.positions)
    assert np.array_equal(a.cell[:], b.cell[:]) and np.array_equal(a.pbc, b.pbc)
    assert a.info.keys() == b.info.keys()
    assert all(np.array_equal(a.info[k], b.info[k]) for k in a.info)
    assert a.calc.results.keys() == b.calc.results.keys()
    assert all(np.array_equal(a.calc.results[k], b.calc.results[k]) for k in a.calc.results)


def test_frames_and_labels_as_read_extxyz(path, monkeypatch):
    monkeypatch.setattr(framefile, "READ_CHUNK", 7)  # several chunks
    ref = read_extxyz(path)
    lazy = FrameFile(path)
    assert len(lazy) == len(ref)
    assert np.array_equal(lazy.n_atoms, [len(a) for a in ref])
    for a, b in zip(ref, lazy):
        _same(a, b)
    la, lb = get_all_labels(ref), get_all_labels(lazy)
    assert [x.energy for x in la] == [x.energy for x in lb]
    _same(lazy[-1], ref[-1])
    part = lazy[10:30:3]
    assert np.array_equal(part.frame_numbers, np.arange(10, 30, 3))
    for a, b in zip(ref[10:30:3], part):
        _same(a, b)
    picked = lazy[[5, 2, 40]]
    for a, k in zip(picked, (5, 2, 40)):
        _same(a, ref[k])
    with pytest.raises(IndexError):
        lazy[len(ref)]


def test_as_frames_lazy_only_for_extxyz(path, tmp_path):
    assert isinstance(as_frames(path, lazy=True), FrameFile)
    assert isinstance(as_frames(path), list)
    ff = FrameFile(path)
    assert as_frames(ff) is ff
    traj = tmp_path / "a.traj"
    ase.io.write(traj, read_extxyz(path)[:3])
    assert isinstance(as_frames(traj, lazy=True), list)


def test_a_partition_pickles_without_its_frames(path):
    """What goes to a worker is the path and the frames' offsets, not the frames."""
    lazy = FrameFile(path)
    small, whole = len(pickle.dumps(lazy[:2])), len(pickle.dumps(lazy))
    assert whole < 20 * small < os.path.getsize(path)
    _same(pickle.loads(pickle.dumps(lazy[3:5]))[1], lazy[4])


def test_bad_frame_named_by_its_number_in_the_file(path, tmp_path):
    frames = read_extxyz(path)[:6]
    frames[4].calc.results["forces"][1, 0] = np.nan
    bad = tmp_path / "bad.xyz"
    ase.io.write(bad, frames)
    lazy = FrameFile(bad)
    lazy[3]  # fine
    with pytest.raises(ValueError, match="frame 4"):
        lazy[4]
    with pytest.raises(ValueError, match="frame 4"):
        list(lazy[2:])


def test_malformed_and_changed_files(path, tmp_path):
    text = path.read_text().splitlines(keepends=True)
    n = int(text[0])
    broken = tmp_path / "broken.xyz"
    broken.write_text("".join(text[:n + 2] + text[:n + 1]))  # second frame one line short
    with pytest.raises(ValueError, match="frame 1 .* says .* atoms but the file ends"):
        FrameFile(broken)
    junk = tmp_path / "junk.xyz"
    junk.write_text("".join(text[:n + 2]) + "hello world\n")
    with pytest.raises(ValueError, match="line .* should start frame 1"):
        FrameFile(junk)
    copy = tmp_path / "copy.xyz"
    copy.write_text("".join(text))
    lazy = FrameFile(copy)
    lazy[0]
    with open(copy, "a") as fh:
        fh.write("".join(text[:n + 2]))
    with pytest.raises(ValueError, match="changed after it was indexed"):
        lazy[0]
    gone = tmp_path / "gone.xyz"
    gone.write_text("".join(text[:n + 2]))
    lazy = FrameFile(gone)
    gone.unlink()
    with pytest.raises(FileNotFoundError, match="same path"):
        list(lazy)
