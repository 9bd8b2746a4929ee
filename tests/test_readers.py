"""Users' data in the formats ase.io reads (issue 14 item 4): an ASE database keeps its
key-value pairs (config_type, per-frame sigmas), trajectories keep their labels, a LAMMPS
dump (no energies, atom types read as H, He, ...) and an unreadable file are clear errors,
and the command line and ``GAP.fit(path)`` take them all."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.db import connect

from gapkit import GAP, SOAP, NoiseModel, SOAPKernel, Term
from gapkit.cli import main
from gapkit.data import get_all_labels, read_frames

LAMMPS_DUMP = """ITEM: TIMESTEP
0
ITEM: NUMBER OF ATOMS
2
ITEM: BOX BOUNDS pp pp pp
0 5
0 5
0 5
ITEM: ATOMS id type x y z fx fy fz
1 1 0 0 0 0.1 0 0
2 1 1.5 1.5 1.5 -0.1 0 0
"""


def _frames(n: int = 6) -> list:
    out = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
        atoms.rattle(0.05, seed=k)
        atoms.calc = EMT()
        atoms.get_forces(), atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, **atoms.calc.results)  # labels, as read
        atoms.info["config_type"] = "bulk" if k % 2 else "rattled"
        out.append(atoms)
    return out


def _check_same_labels(read, frames, atol=1e-12):
    """Same labels; ``atol``: what the file keeps (extxyz writes forces with 8 decimals)."""
    got, ref = get_all_labels(read), get_all_labels(frames)
    assert len(got) == len(ref)
    for a, b in zip(got, ref):
        assert a.energy == pytest.approx(b.energy, rel=1e-12, abs=atol)
        np.testing.assert_allclose(a.forces, b.forces, rtol=1e-12, atol=atol)
        np.testing.assert_allclose(a.virial, b.virial, rtol=1e-10, atol=max(atol, 1e-10))
        assert a.config_type == b.config_type


def test_ase_db_keeps_config_type_and_sigmas(tmp_path):
    frames = _frames()
    with connect(tmp_path / "data.db") as db:
        for k, atoms in enumerate(frames):
            db.write(atoms, config_type=atoms.info["config_type"], energy_sigma=0.001 * (k + 1))
    assert "config_type" not in ase.io.read(tmp_path / "data.db", 0).info  # what ASE drops
    read = read_frames(tmp_path / "data.db")
    _check_same_labels(read, frames)
    assert [a.info["energy_sigma"] for a in read] == pytest.approx(
        [0.001 * (k + 1) for k in range(6)])
    assert len(read_frames(tmp_path / "data.db", "2:4")) == 2
    assert read_frames(tmp_path / "data.db", -1)[0].info["energy_sigma"] == pytest.approx(0.006)


def test_trajectory_and_explicit_format(tmp_path):
    frames = _frames(3)
    ase.io.write(tmp_path / "md.traj", frames)
    _check_same_labels(read_frames(tmp_path / "md.traj"), frames)
    ase.io.write(tmp_path / "data.txt", frames, format="extxyz")
    _check_same_labels(read_frames(tmp_path / "data.txt", format="extxyz"), frames, atol=1e-7)
    with pytest.raises(ValueError, match="format='nonsense' is not one ase.io knows"):
        read_frames(tmp_path / "data.txt", format="nonsense")


def test_lammps_dump_and_unknown_files_are_refused(tmp_path):
    (tmp_path / "dump.lammpstrj").write_text(LAMMPS_DUMP)
    # what ASE makes of it: hydrogen atoms with energy 0.0
    raw = ase.io.read(tmp_path / "dump.lammpstrj")
    assert raw.get_chemical_symbols() == ["H", "H"] and raw.get_potential_energy() == 0.0
    with pytest.raises(ValueError, match="LAMMPS dump holds no energies"):
        read_frames(tmp_path / "dump.lammpstrj")
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="cannot tell this file's format.*format="):
        read_frames(tmp_path / "blob.bin")
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_frames(tmp_path / "missing.db")


def test_fit_and_cli_read_a_database(tmp_path, capsys):
    """GAP.fit(path) and gapkit fit/eval read an ASE db; the fit equals the one on the
    frames themselves."""
    frames = _frames()
    with connect(tmp_path / "data.db") as db:
        for atoms in frames:
            db.write(atoms, config_type=atoms.info["config_type"])
    term = Term(SOAP(cutoff=4.0, cutoff_width=1.0, n_max=3, l_max=2, species=["Cu"]),
                SOAPKernel(zeta=2), n_sparse=10)
    noise = NoiseModel(energy=0.002, forces=0.05, virial=0.02)
    a = GAP([term], noise=noise, progress=False).fit(str(tmp_path / "data.db"))
    b = GAP([term], noise=noise, progress=False).fit(frames)
    np.testing.assert_allclose(a.alpha_.numpy(), b.alpha_.numpy(), rtol=1e-10, atol=1e-12)
    a.save(tmp_path / "cu.gapkit")
    assert main(["eval", str(tmp_path / "cu.gapkit"), str(tmp_path / "data.db"),
                 "--json", "--quiet"]) == 0
    errors = json.loads(capsys.readouterr().out)
    assert errors["energy_n"] == 6 and errors["forces_n"] == 6 * 8 * 3
    (tmp_path / "dump.lammpstrj").write_text(LAMMPS_DUMP)
    assert main(["eval", str(tmp_path / "cu.gapkit"), str(tmp_path / "dump.lammpstrj"),
                 "--quiet"]) == 2
    assert "LAMMPS dump" in capsys.readouterr().err
