"""Tests for gapkit.data: reading extxyz reference data, labels, checks and bundled files."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.calculators.lj import LennardJones
from ase.calculators.singlepoint import SinglePointCalculator

from gapkit.data import (
    Labels,
    bundled_path,
    composition,
    get_all_labels,
    get_labels,
    load_bundled,
    read_extxyz,
    stress_to_virial,
    validate_structure,
    virial_to_stress,
)

SI_CONFIG_TYPES = {"AIMD-NVT", "Vacancy", "Elastic", "Surface"}


@pytest.fixture(scope="module")
def si_train() -> list[Atoms]:
    return load_bundled("Si_train.xyz")


@pytest.fixture(scope="module")
def si_test() -> list[Atoms]:
    return load_bundled("Si_test.xyz")


def _si_frame(energy: float = -10.0, forces=None, **info) -> Atoms:
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.05, seed=1)
    f = np.zeros((len(atoms), 3)) if forces is None else forces
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=f)
    atoms.info.update(info)
    return atoms


# ---------------------------------------------------------------------------- bundled Si data


@pytest.mark.parametrize(
    ("fixture", "n_frames", "n_atoms_total"), [("si_train", 214, 13233), ("si_test", 25, 1525)]
)
def test_bundled_si_labels(request, fixture, n_frames, n_atoms_total):
    frames = request.getfixturevalue(fixture)
    assert len(frames) == n_frames
    assert sum(len(a) for a in frames) == n_atoms_total
    labels = get_all_labels(frames, require=("energy", "forces", "virial"))
    assert len(labels) == n_frames
    for atoms, lab in zip(frames, labels):
        assert set(atoms.get_chemical_symbols()) == {"Si"}
        assert atoms.pbc.all()
        assert isinstance(lab.energy, float)
        # total VASP energies: a few eV per atom below zero
        assert -6.0 < lab.energy / len(atoms) < -4.0
        assert lab.forces.shape == (len(atoms), 3)
        assert lab.virial.shape == (3, 3)
        np.testing.assert_array_equal(lab.forces, atoms.calc.results["forces"])
        assert lab.energy == atoms.calc.results["energy"]
    assert {lab.config_type for lab in labels} == SI_CONFIG_TYPES


def test_si_train_config_type_counts(si_train):
    counts: dict[str, int] = {}
    for lab in get_all_labels(si_train):
        counts[lab.config_type] = counts.get(lab.config_type, 0) + 1
    assert counts == {"AIMD-NVT": 90, "Vacancy": 57, "Elastic": 55, "Surface": 12}


def test_si_virial_matches_raw_vasp_stress(si_train):
    """The stored virial is +VASP stress (kBar) * 0.1 GPa * V, with mlearn's component order:
    xx yy zz xy yz zx, except on the AIMD-NVT and Vacancy frames (``virial_offdiag_fixed``),
    where it is xx yy zz xy zx yz (data/zuo2020_Si_PROVENANCE.md, correction 2026-12-03)."""
    fixed = [a for a in si_train if a.info.get("virial_offdiag_fixed")]
    assert {a.info["config_type"] for a in fixed} == {"AIMD-NVT", "Vacancy"}
    for atoms in si_train[::10]:
        xx, yy, zz, xy, yz, zx = atoms.info["vasp_stress_kbar"]
        if atoms.info.get("virial_offdiag_fixed"):
            yz, zx = zx, yz
        vasp = np.array([[xx, xy, zx], [xy, yy, yz], [zx, yz, zz]])
        expected = vasp * 0.1 * units.GPa * atoms.get_volume()
        np.testing.assert_allclose(get_labels(atoms).virial, expected, rtol=1e-9, atol=1e-9)


def test_virial_stress_round_trip_on_si_frame(si_train):
    atoms = si_train[100]
    virial = get_labels(atoms).virial
    volume = atoms.get_volume()
    stress = virial_to_stress(virial, volume)
    assert stress.shape == (6,)
    # ASE sign: stress = -virial / V; Voigt order xx yy zz yz xz xy
    assert stress[0] == pytest.approx(-virial[0, 0] / volume)
    assert stress[3] == pytest.approx(-virial[1, 2] / volume)
    assert stress[5] == pytest.approx(-virial[0, 1] / volume)
    np.testing.assert_allclose(stress_to_virial(stress, volume), virial, rtol=1e-12, atol=1e-12)


def test_virial_derived_from_stress_in_file(tmp_path, si_train):
    """A frame carrying an ASE stress (no virial) reads back with virial = -stress * V."""
    source = si_train[100]
    virial = get_labels(source).virial
    atoms = Atoms(source.numbers, source.positions, cell=source.cell, pbc=True)
    stress = virial_to_stress(virial, atoms.get_volume())
    atoms.calc = SinglePointCalculator(
        atoms, energy=source.get_potential_energy(), forces=source.get_forces(), stress=stress
    )
    path = tmp_path / "stress.xyz"
    ase.io.write(path, atoms, format="extxyz")
    (back,) = read_extxyz(path, require=("energy", "forces", "virial"))
    assert "virial" not in back.info
    np.testing.assert_allclose(get_labels(back).virial, virial, rtol=1e-8, atol=1e-8)


def test_stress_sign_and_voigt_order():
    atoms = Atoms("H", positions=[[0, 0, 0]], cell=np.diag([2.0, 2.0, 3.0]), pbc=True)
    stress = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) * 1e-3  # xx yy zz yz xz xy, eV/Å^3
    atoms.info["stress"] = stress
    virial = get_labels(atoms).virial
    expected = -12.0 * 1e-3 * np.array([[1.0, 6.0, 5.0], [6.0, 2.0, 4.0], [5.0, 4.0, 3.0]])
    np.testing.assert_allclose(virial, expected)


def test_stress_needs_a_cell():
    atoms = molecule("H2O")
    atoms.info["stress"] = np.zeros(6)
    with pytest.raises(ValueError, match=r"frame 7: stress .*singular"):
        get_labels(atoms, frame_index=7)


def test_virial_key_takes_precedence_over_stress():
    atoms = Atoms("H", positions=[[0, 0, 0]], cell=np.eye(3) * 2.0, pbc=True)
    atoms.info["virial"] = np.eye(3)
    atoms.info["stress"] = np.ones(6)
    np.testing.assert_array_equal(get_labels(atoms).virial, np.eye(3))


@pytest.mark.parametrize(
    "value",
    [
        np.arange(9.0).reshape(3, 3),
        np.arange(9.0),
        np.array([0.0, 4.0, 8.0, 5.0, 2.0, 1.0]),  # Voigt: xx yy zz yz xz xy
    ],
)
def test_virial_accepted_shapes(value):
    atoms = Atoms("H", positions=[[0, 0, 0]])
    atoms.info["virial"] = value
    virial = get_labels(atoms).virial
    assert virial.shape == (3, 3)
    assert virial[0, 0] == 0.0 and virial[1, 1] == 4.0 and virial[2, 2] == 8.0
    assert virial[0, 1] == 1.0 and virial[0, 2] == 2.0 and virial[1, 2] == 5.0


def test_virial_wrong_shape():
    atoms = Atoms("H", positions=[[0, 0, 0]])
    atoms.info["virial"] = np.zeros(4)
    with pytest.raises(ValueError, match=r"frame 3: virial \(atoms.info\['virial'\]\).*shape"):
        get_labels(atoms, frame_index=3)


# ---------------------------------------------------------------------------- invalid labels


def test_nan_forces_raise_naming_the_frame(tmp_path):
    frames = [_si_frame(energy=-10.0 - k) for k in range(3)]
    bad = np.zeros((len(frames[2]), 3))
    bad[5, 1] = np.nan
    frames[2].calc = SinglePointCalculator(frames[2], energy=-12.0, forces=bad)
    path = tmp_path / "nan.xyz"
    ase.io.write(path, frames, format="extxyz")
    with pytest.raises(ValueError, match=r"nan\.xyz: frame 2: forces .*NaN or inf") as err:
        read_extxyz(path)
    assert "(5, 1)" in str(err.value)
    # file frame numbers are kept when reading a slice
    with pytest.raises(ValueError, match=r"frame 2: forces"):
        read_extxyz(path, index="1:")
    # frames before the bad one read fine
    assert len(read_extxyz(path, index=":2")) == 2


def test_nan_energy_and_wrong_force_shape():
    atoms = _si_frame()
    atoms.info["dft_energy"] = np.inf
    with pytest.raises(ValueError, match=r"frame 4: energy \(atoms.info\['dft_energy'\]\)"):
        get_labels(atoms, energy_key="dft_energy", frame_index=4)
    atoms.arrays["dft_forces"] = np.zeros((len(atoms), 2))
    with pytest.raises(ValueError, match=r"dft_forces.*expected \(8, 3\)"):
        get_labels(atoms, forces_key="dft_forces")


def test_non_numeric_energy():
    atoms = _si_frame()
    atoms.info["dft_energy"] = "oops"
    with pytest.raises(ValueError, match=r"frame 0: energy .*not numeric"):
        get_labels(atoms, energy_key="dft_energy", frame_index=0)


def test_nan_positions_raise(tmp_path):
    atoms = _si_frame()
    validate_structure(atoms, frame_index=0)
    atoms.positions[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"frame 1: positions of atoms \[3\]"):
        validate_structure(atoms, frame_index=1)
    path = tmp_path / "nanpos.xyz"
    ase.io.write(path, [_si_frame(), atoms], format="extxyz")
    with pytest.raises(ValueError, match=r"frame 1: positions"):
        read_extxyz(path)


def test_missing_required_energy_names_key_and_frame(tmp_path):
    frames = [_si_frame(), _si_frame()]
    for atoms in frames:
        atoms.info["dft_energy"] = -5.0
    del frames[1].info["dft_energy"]
    path = tmp_path / "missing.xyz"
    ase.io.write(path, frames, format="extxyz")
    with pytest.raises(ValueError) as err:
        read_extxyz(path, require=("energy",), energy_key="dft_energy")
    message = str(err.value)
    assert "frame 1" in message
    assert "energy_key='dft_energy'" in message
    assert "calculator results ['energy', 'forces']" in message  # what the frame does have
    # without require, a missing label is just None
    frames_read = read_extxyz(path, energy_key="dft_energy")
    labels = get_all_labels(frames_read, energy_key="dft_energy")
    assert labels[0].energy == -5.0 and labels[1].energy is None


def test_missing_required_virial(si_test):
    with pytest.raises(ValueError, match=r"frame 0: required virial .*virial_key='W'"):
        get_all_labels(si_test[:2], require="virial", virial_key="W")


def test_unknown_require():
    with pytest.raises(ValueError, match="unknown label"):
        get_all_labels([_si_frame()], require=("energies",))


def test_missing_and_empty_file(tmp_path):
    missing = tmp_path / "nope.xyz"
    with pytest.raises(FileNotFoundError, match="nope.xyz"):
        read_extxyz(missing)
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        read_extxyz(empty)
    garbage = tmp_path / "garbage.xyz"
    garbage.write_text("this is not\nan xyz file\n")
    with pytest.raises(ValueError, match="garbage.xyz"):
        read_extxyz(garbage)


def test_calculator_predictions_are_not_labels():
    atoms = bulk("Ar", "fcc", a=5.26)
    atoms.calc = LennardJones()
    atoms.get_potential_energy()
    labels = get_labels(atoms)
    assert labels.energy is None and labels.forces is None and labels.virial is None
    with pytest.raises(ValueError, match="LennardJones calculator"):
        get_all_labels([atoms], require=("energy",))


# ---------------------------------------------------------------------------- keys, sigmas


def test_custom_keys_round_trip(tmp_path):
    frames = []
    rng = np.random.default_rng(0)
    for k in range(3):
        atoms = molecule("CH3CH2OH")
        atoms.info["dft_energy"] = -100.0 - k
        atoms.arrays["dft_forces"] = rng.normal(size=(len(atoms), 3))
        atoms.info["dft_virial"] = rng.normal(size=(3, 3))
        frames.append(atoms)
    path = tmp_path / "custom.xyz"
    ase.io.write(path, frames, format="extxyz")
    keys = {"energy_key": "dft_energy", "forces_key": "dft_forces", "virial_key": "dft_virial"}
    back = read_extxyz(path, require=("energy", "forces", "virial"), **keys)
    labels = get_all_labels(back, **keys)
    for atoms, lab in zip(frames, labels):
        assert lab.energy == atoms.info["dft_energy"]
        np.testing.assert_allclose(lab.forces, atoms.arrays["dft_forces"], atol=1e-8)
        np.testing.assert_allclose(lab.virial, atoms.info["dft_virial"], atol=1e-8)
    # the default keys find nothing in this file
    with pytest.raises(ValueError, match=r"frame 0: required energy .*energy_key='energy'"):
        read_extxyz(path, require=("energy",))


def test_per_frame_sigmas_and_config_type(tmp_path):
    frames = [
        _si_frame(energy_sigma=0.002, config_type="liquid"),
        _si_frame(force_sigma=0.2, virial_sigma=0.05, config_type=1),
        _si_frame(forces_sigma=0.3),
    ]
    path = tmp_path / "sigmas.xyz"
    ase.io.write(path, frames, format="extxyz")
    labels = get_all_labels(read_extxyz(path))
    assert labels[0].energy_sigma == 0.002
    assert labels[0].forces_sigma is None and labels[0].virial_sigma is None
    assert labels[0].config_type == "liquid"
    assert labels[1].forces_sigma == 0.2 and labels[1].virial_sigma == 0.05
    assert labels[1].config_type == "1"  # extxyz reads config_type=1 as an integer
    assert labels[2].forces_sigma == 0.3
    assert labels[2].config_type == "default"


def test_invalid_sigma():
    atoms = _si_frame(energy_sigma=-1.0)
    with pytest.raises(ValueError, match=r"frame 2: 'energy_sigma' must be one finite positive"):
        get_labels(atoms, frame_index=2)
    atoms = _si_frame(force_sigma=0.1, forces_sigma=0.2)
    with pytest.raises(ValueError, match="conflicting"):
        get_labels(atoms)


def test_labels_are_frozen_and_read_only():
    lab = get_labels(_si_frame())
    with pytest.raises(AttributeError):
        lab.energy = 1.0
    with pytest.raises(ValueError):
        lab.forces[0, 0] = 1.0
    with pytest.raises(ValueError, match="shape"):
        Labels(forces=np.zeros((3, 2)))


# ---------------------------------------------------------------------------- structures


def test_singular_periodic_cell():
    atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]], pbc=True)
    with pytest.raises(ValueError, match=r"frame 5: .*cell vector 0 is zero"):
        validate_structure(atoms, frame_index=5)
    atoms.cell = [[3, 0, 0], [6, 0, 0], [0, 0, 3]]
    with pytest.raises(ValueError, match="linearly dependent"):
        validate_structure(atoms)
    # a slab periodic in x and y only needs those two vectors
    slab = Atoms("H", positions=[[0, 0, 0]], cell=[[3, 0, 0], [0, 3, 0], [0, 0, 0]])
    slab.pbc = [True, True, False]
    validate_structure(slab)
    # a molecule with no cell and no periodicity is fine
    validate_structure(molecule("H2O"))


def test_composition():
    frames = [molecule("CH3CH2OH"), molecule("H2O"), molecule("CH4")]
    counts = composition(frames, ["C", "H", "O"])
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, [[2, 6, 1], [0, 2, 1], [1, 4, 0]])
    np.testing.assert_array_equal(composition(frames, [8, 6, 1])[0], [1, 2, 6])
    assert composition([], ["H"]).shape == (0, 1)
    with pytest.raises(ValueError, match=r"frame 1: contains species \['O'\]"):
        composition([molecule("CH4"), molecule("H2O")], ["C", "H"])


# ---------------------------------------------------------------------------- bundled files


def test_bundled_ethanol():
    frames = load_bundled("ethanol_rmd17_200.xyz", require=("energy", "forces"))
    assert len(frames) == 200
    labels = get_all_labels(frames)
    np.testing.assert_array_equal(composition(frames, ["C", "H", "O"]), [[2, 6, 1]] * 200)
    for atoms, lab in zip(frames, labels):
        assert len(atoms) == 9 and not atoms.pbc.any()
        assert lab.virial is None
        assert lab.config_type == "rmd17_ethanol"
        assert -4211.0 < lab.energy < -4208.0  # total PBE/def2-SVP energy, eV
        np.testing.assert_allclose(lab.forces.sum(axis=0), 0.0, atol=1e-3)
    assert len({int(a.info["md17_index"]) for a in frames}) == 200


def test_bundled_path():
    path = bundled_path("Si_test.xyz")
    assert path.is_file() and path.is_absolute()
    with pytest.raises(FileNotFoundError, match=r"Si_train\.xyz"):  # lists what is there
        bundled_path("Ge_train.xyz")
    with pytest.raises(ValueError, match="bare file name"):
        bundled_path("../pyproject.toml")


def test_a_label_key_typo_is_named_with_the_keys_present():
    """energy_key='dft_energy' on frames whose energies are under 'energy' used to fit
    forces only (after an error that blamed e0); now the fit stops naming both keys and
    the two fixes. Frames that truly lack energies (nothing looks like one) still fit."""
    import pytest
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from conftest import make_strained_cells

    from gapkit import GAP, SOAP, NoiseModel, SOAPKernel, Term
    from gapkit.data import check_label_keys, get_all_labels

    frames = make_strained_cells(bulk("Cu", "fcc", a=3.61, cubic=True), 12, seed=0,
                                 strain=0.02, rattle=0.1, calc=EMT)
    gap = GAP([Term(SOAP(cutoff=4.0, cutoff_width=1.0, n_max=3, l_max=2), SOAPKernel(zeta=4),
                    n_sparse=10)], noise=NoiseModel(), energy_key="dft_energy", e0="zero",
              progress=False)
    with pytest.raises(ValueError, match=r"energy_key='dft_energy', but the frames carry "
                                         r"\['energy'\]: pass energy_key='energy'.*"
                                         r"use=\('forces', 'virial'\)"):
        gap.fit(frames)
    labels = get_all_labels(frames, forces_key="F_ref")
    with pytest.raises(ValueError, match=r"forces_key='F_ref'.*\['forces'\]"):
        check_label_keys(frames, labels, ("energy", "forces"), {"forces_key": "F_ref"})
    assert check_label_keys(frames, labels, ("energy",), {"forces_key": "F_ref"}) is labels
    bare = [a.copy() for a in frames]  # energies gone, nothing like one left
    for atoms in bare:
        del atoms.info["energy"]
    model = gap.set_params(energy_key="energy").fit(bare)
    assert model.fit_info_["n_observations"]["energy"] == 0
    # the model card says what the fit used, not what `use` allowed
    import contextlib
    import io
    import tempfile
    from pathlib import Path

    from gapkit.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        path = model.save(Path(tmp) / "m.gapkit")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["info", str(path)]) == 0
    assert "fitted on: forces, virial;" in out.getvalue()


def test_fit_refuses_no_frames_and_frames_without_any_label(tmp_path):
    """An empty list, or frames that carry no label of any kind in use, stop the fit with
    the reason (they used to fail at the e0 or species step with an unrelated message)."""
    import pytest
    from ase import Atoms
    from ase.build import bulk

    from gapkit import GAP, SOAP, NoiseModel, SOAPKernel, Term

    gap = GAP([Term(SOAP(cutoff=4.0, cutoff_width=1.0, n_max=3, l_max=2), SOAPKernel(zeta=4),
                    n_sparse=10)], noise=NoiseModel(), progress=False)
    with pytest.raises(ValueError, match="no frames to fit"):
        gap.fit([])
    bare = []
    for i in range(3):
        a = bulk("Cu", "fcc", a=3.61 + 0.01 * i, cubic=True)
        a.info["dft_E"] = -1.0
        bare.append(Atoms(a.numbers, a.positions, cell=a.cell, pbc=True, info=a.info))
    with pytest.raises(ValueError, match=r"no frame carries a label to fit \(energy under "
                       r"energy_key='energy', forces under forces_key='forces', virial under "
                       r"virial_key='virial'\); the frames carry \['dft_E'\]"):
        gap.fit(bare)
