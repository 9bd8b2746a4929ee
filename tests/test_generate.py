"""Tests of gapkit.generate: reference-data generation with an ASE calculator as labeller.

The labeller is ASE's EMT on small fcc Cu cells (a = 3.5904 Å, the EMT minimum), so every
test runs in well under a second or two. Units: eV, Å, eV/Å, K.
"""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones

from gapkit.data import get_all_labels, read_extxyz
from gapkit.generate import (
    LabellingError,
    Recipe,
    check_consistent,
    estimate_force_constants,
    generate_dataset,
    label,
    labeller_record,
    langevin_md,
    rattle,
    strain,
    vacancies,
)

A0 = 3.5904  # EMT lattice constant of Cu, Å (minimum of E(a))

# A small recipe used by several tests: every step on, a few frames each.
SMALL = dict(
    rattle_temperatures=(300.0,), rattle_copies=2, rattle_amplitudes=(0.03,),
    md_temperatures=(600.0,), md_samples=2, md_equilibration=5, md_interval=5,
    hydrostatic=(-0.01, 0.01), shear=(0.01,), strain_temperature=100.0,
    vacancy_copies=2, vacancy_temperature=300.0,
)


def cu(repeat: int = 1) -> Atoms:
    """Conventional fcc Cu cell (4 atoms), repeated ``repeat`` times along each axis."""
    return bulk("Cu", "fcc", a=A0, cubic=True).repeat(repeat)


def _same_frames(a: list[Atoms], b: list[Atoms]) -> bool:
    if len(a) != len(b):
        return False
    la, lb = get_all_labels(a), get_all_labels(b)
    for fa, fb, xa, xb in zip(a, b, la, lb):
        if len(fa) != len(fb) or fa.info["config_type"] != fb.info["config_type"]:
            return False
        if not (np.array_equal(fa.positions, fb.positions)
                and np.array_equal(fa.cell.array, fb.cell.array)
                and xa.energy == xb.energy and np.array_equal(xa.forces, xb.forces)
                and (xa.virial is None or np.array_equal(xa.virial, xb.virial))):
            return False
    return True


# --------------------------------------------------------------------------------------------
# Reproducibility
# --------------------------------------------------------------------------------------------


def test_same_seed_same_frames_other_seed_other_frames():
    first = generate_dataset(cu(), EMT(), seed=3, progress=False, **SMALL)
    again = generate_dataset(cu(), EMT(), seed=3, progress=False, **SMALL)
    other = generate_dataset(cu(), EMT(), seed=4, progress=False, **SMALL)
    assert len(first) == 1 + 2 + 2 + 2 + 5 + 2
    assert _same_frames(first, again)
    assert not _same_frames(first, other)
    assert all(f.info["dataset_seed"] == 3 for f in first)
    # a Generator is turned into a recorded int seed that reproduces the call
    frames = rattle(cu(), 3, amplitude=0.05, seed=np.random.default_rng(7))
    seed = frames[0].info["seed"]
    assert isinstance(seed, int)
    redo = rattle(cu(), 3, amplitude=0.05, seed=seed)
    assert all(np.array_equal(x.positions, y.positions) for x, y in zip(frames, redo))


# --------------------------------------------------------------------------------------------
# Rattling
# --------------------------------------------------------------------------------------------


def _msd(frames: list[Atoms], reference: Atoms, mask=None) -> tuple[float, int]:
    u = np.stack([f.positions - reference.positions for f in frames])
    if mask is not None:
        u = u[:, mask]
    return float(np.mean(u**2)), u.size


def test_rattle_follows_equipartition_per_species_and_scales_with_temperature():
    atoms = cu(2)
    atoms.numbers[::4] = 79  # a Cu3Au-like cell, so that the per-species table matters
    k = {"Cu": 6.0, "Au": 2.5}  # eV/Å²
    is_au = atoms.numbers == 79
    for t in (300.0, 900.0):
        frames = rattle(atoms, 60, temperature=t, force_constant=k, seed=11)
        for symbol, mask in (("Cu", ~is_au), ("Au", is_au)):
            msd, count = _msd(frames, atoms, mask)
            expected = units.kB * t / k[symbol]
            # mean of u² over `count` Gaussian components: standard error sigma² sqrt(2/count)
            assert abs(msd - expected) < 5 * expected * np.sqrt(2.0 / count), (symbol, t)
    assert frames[0].info["config_type"] == "rattle_900K"
    assert frames[0].info["temperature"] == 900.0
    assert json.loads(frames[0].info["force_constant"]) == k
    # a 3x hotter rattle has 3x the mean square displacement
    cold, n_cold = _msd(rattle(atoms, 60, temperature=300.0, force_constant=4.0, seed=1), atoms)
    hot, _ = _msd(rattle(atoms, 60, temperature=900.0, force_constant=4.0, seed=2), atoms)
    assert abs(hot / cold - 3.0) < 3.0 * 5 * np.sqrt(2 * 2.0 / n_cold)
    # an explicit amplitude is the standard deviation of every component
    frames = rattle(atoms, 40, amplitude=0.04, seed=5, prefix="bulk_")
    msd, count = _msd(frames, atoms)
    assert abs(msd - 0.04**2) < 5 * 0.04**2 * np.sqrt(2.0 / count)
    assert frames[0].info["config_type"] == "bulk_rattle_0.04A"


def test_force_constant_estimate_matches_energy_curvature_and_drives_rattle():
    atoms = cu(2)
    estimate = estimate_force_constants(atoms, EMT())
    # independent check: second difference of the *energy* moving atom 0 along x
    calc, delta, energies = EMT(), 0.005, []
    for shift in (-delta, 0.0, delta):
        probe = atoms.copy()
        probe.positions[0, 0] += shift
        probe.calc = calc
        energies.append(probe.get_potential_energy())
    curvature = (energies[0] - 2 * energies[1] + energies[2]) / delta**2
    assert estimate["Cu"] == pytest.approx(curvature, rel=0.01)
    # fcc Cu: an Einstein frequency sqrt(k/M) of a few THz
    nu_thz = np.sqrt(estimate["Cu"] / atoms.get_masses()[0]) / (2 * np.pi) * units.fs * 1e3
    assert 3.0 < nu_thz < 10.0
    # the default force_constant="estimate" uses the labeller
    frames = rattle(atoms, 50, temperature=500.0, calculator=EMT(), seed=0)
    assert json.loads(frames[0].info["force_constant"]) == pytest.approx(estimate)
    msd, count = _msd(frames, atoms)
    expected = units.kB * 500.0 / estimate["Cu"]
    assert abs(msd - expected) < 5 * expected * np.sqrt(2.0 / count)


def test_rattle_cell_strain_scales_positions_and_records_strain():
    atoms = cu()
    frames = rattle(atoms, 5, amplitude=1e-9, cell_strain=0.01, seed=2)
    for frame in frames:
        eps = np.array(frame.info["strain"]).reshape(3, 3)
        assert np.allclose(eps, eps.T) and np.abs(eps).max() > 0
        assert np.allclose(frame.cell.array, atoms.cell.array @ (np.eye(3) + eps).T)
        assert np.allclose(frame.get_scaled_positions(wrap=False),
                           atoms.get_scaled_positions(wrap=False), atol=1e-8)


# --------------------------------------------------------------------------------------------
# Langevin MD
# --------------------------------------------------------------------------------------------


@pytest.mark.slow  # 4-15 s (machine load): Langevin MD at two temperatures
def test_langevin_samples_have_target_kinetic_temperature_and_energy_rises():
    atoms = cu(2)  # 32 atoms, 96 thermostatted degrees of freedom (no centre-of-mass constraint)
    temps = (300.0, 900.0)
    n = 20
    frames = langevin_md(atoms, EMT(), temperatures=temps, n_samples=n, friction=0.05,
                         seed=1, progress=False)
    assert len(frames) == 2 * n
    assert frames[0].info["md_step"] == 5 * 20 + 20  # default interval ceil(2 / (0.05 * 2))
    labels = get_all_labels(frames, require=("energy", "forces", "virial"))
    mean_pe = {}
    for i, t in enumerate(temps):
        block = frames[i * n:(i + 1) * n]
        assert {f.info["config_type"] for f in block} == {f"md_{t:g}K"}
        t_kin = np.array([f.get_temperature() for f in block])
        # per-sample relative spread sqrt(2 / 3N); 4 standard errors of the mean
        bound = 4 * t * np.sqrt(2.0 / (3 * len(atoms))) / np.sqrt(n)
        assert abs(t_kin.mean() - t) < bound, (t, t_kin.mean(), bound)
        mean_pe[t] = np.mean([x.energy for x in labels[i * n:(i + 1) * n]])
    # harmonic equipartition: <E_pot> rises by (3N/2) k_B dT
    rise = mean_pe[900.0] - mean_pe[300.0]
    expected = 1.5 * len(atoms) * units.kB * 600.0
    assert 0.7 * expected < rise < 1.3 * expected


def test_langevin_with_driver_is_relabelled_by_the_labeller():
    driver = EMT(asap_cutoff=True)  # a different potential: energies differ by ~0.02 eV
    frames = langevin_md(cu(), EMT(), temperatures=[500.0], n_samples=3, equilibration=5,
                         interval=5, driver=driver, seed=0, progress=False)
    check_consistent(frames)
    assert frames[0].info["labeller_settings"] == json.dumps({"asap_cutoff": False})
    assert frames[0].info["md_driver"] == "EMT"
    for frame in frames:
        probe = Atoms(frame.numbers, frame.positions, cell=frame.cell, pbc=True)
        probe.calc = EMT()
        assert frame.get_potential_energy() == pytest.approx(probe.get_potential_energy())
        probe.calc = driver
        assert abs(frame.get_potential_energy() - probe.get_potential_energy()) > 1e-3


# --------------------------------------------------------------------------------------------
# Strains and vacancies
# --------------------------------------------------------------------------------------------


def test_strain_cells_positions_and_records():
    atoms = cu()
    custom = np.array([[0.01, 0.002, 0.0], [0.002, -0.01, 0.0], [0.0, 0.0, 0.005]])
    frames = strain(atoms, hydrostatic=(-0.02, 0.02), shear=(0.03,), strains=[custom])
    assert len(frames) == 2 + 3 + 1
    kinds = [f.info["strain_kind"] for f in frames]
    assert kinds == ["hydrostatic"] * 2 + ["shear_yz", "shear_xz", "shear_xy", "custom"]
    expected = [-0.02 * np.eye(3), 0.02 * np.eye(3)]
    for a, b in ((1, 2), (0, 2), (0, 1)):
        e = np.zeros((3, 3))
        e[a, b] = e[b, a] = 0.03
        expected.append(e)
    expected.append(custom)
    for frame, eps in zip(frames, expected):
        assert np.allclose(np.array(frame.info["strain"]).reshape(3, 3), eps)
        assert np.allclose(frame.cell.array, atoms.cell.array @ (np.eye(3) + eps).T)
        assert np.allclose(frame.get_scaled_positions(), atoms.get_scaled_positions())
        assert frame.info["config_type"] == "strain"
    assert frames[0].get_volume() == pytest.approx(atoms.get_volume() * 0.98**3)


def test_virial_of_strained_frames_is_minus_stress_volume_and_positive_in_compression():
    values = (-0.02, -0.01, 0.01, 0.02)
    frames = label(strain(cu(), hydrostatic=values, shear=()), EMT(), progress=False)
    traces = []
    for frame in frames:
        probe = Atoms(frame.numbers, frame.positions, cell=frame.cell, pbc=True)
        probe.calc = EMT()
        expected = -probe.get_stress(voigt=False) * probe.get_volume()
        assert np.allclose(frame.info["virial"], expected, atol=1e-12)
        traces.append(np.trace(frame.info["virial"]))
    assert traces[0] > 0 and traces[1] > 0  # compressed: positive virial
    assert traces[2] < 0 and traces[3] < 0  # stretched: negative
    assert np.all(np.diff(traces) < 0)


def test_vacancies_remove_the_recorded_atoms():
    atoms = cu(2)
    atoms.numbers[:4] = 79
    frames = vacancies(atoms, 6, n_vacancies=2, seed=4)
    assert all(len(f) == len(atoms) - 2 for f in frames)
    choices = set()
    for frame in frames:
        removed = frame.info["vacancy_indices"]
        assert len(set(removed)) == 2 and frame.info["parent_n_atoms"] == 32
        keep = np.setdiff1d(np.arange(len(atoms)), removed)
        assert np.array_equal(frame.positions, atoms.positions[keep])
        assert np.array_equal(frame.numbers, atoms.numbers[keep])
        choices.add(tuple(removed))
    assert len(choices) > 1
    only_au = vacancies(atoms, 5, species="Au", seed=1)
    assert all(set(f.info["vacancy_indices"]) <= {0, 1, 2, 3} for f in only_au)
    assert all(int(np.sum(f.numbers == 79)) == 3 for f in only_au)


# --------------------------------------------------------------------------------------------
# Labels, files and consistency
# --------------------------------------------------------------------------------------------


def test_labels_survive_extxyz_round_trip_with_provenance(tmp_path):
    water = molecule("H2O")
    water.center(vacuum=4.0)
    water.pbc = False
    frames = generate_dataset(cu(), EMT(), seed=5, progress=False, path=tmp_path / "d.xyz",
                              prefix="Cu_", **SMALL)
    frames += label(rattle(water, 2, amplitude=0.02, seed=1), EMT(), progress=False)
    ase.io.write(tmp_path / "all.xyz", frames, format="extxyz")
    back = read_extxyz(tmp_path / "all.xyz")
    assert len(back) == len(frames)
    before, after = get_all_labels(frames), get_all_labels(back)
    for k, (f, g, x, y) in enumerate(zip(frames, back, before, after)):
        assert y.energy == pytest.approx(x.energy, abs=1e-12)
        assert np.allclose(y.forces, x.forces, atol=1e-12)
        if f.pbc.all():
            assert np.allclose(y.virial, x.virial, atol=1e-10), k
        else:
            assert x.virial is None and y.virial is None
        assert y.config_type == x.config_type == f.info["config_type"]
        for key in ("labeller", "labeller_settings", "gapkit_generate", "parent", "seed",
                    "temperature", "source_index"):
            if key in f.info:
                assert g.info[key] == f.info[key], (k, key)
        for key in ("strain", "vacancy_indices"):
            if key in f.info:
                assert np.allclose(g.info[key], f.info[key]), (k, key)
    types = {f.info["config_type"] for f in back}
    assert {"Cu_reference", "Cu_rattle_300K", "Cu_rattle_0.03A", "Cu_md_600K", "Cu_strain",
            "Cu_vacancy"} <= types
    assert check_consistent(back)["labeller"] == "EMT"
    # the file written by generate_dataset reads back with every label of a periodic frame
    written = read_extxyz(tmp_path / "d.xyz", require=("energy", "forces", "virial"))
    assert len(written) == len(frames) - 2
    with pytest.raises(FileExistsError, match="overwrite=True"):
        generate_dataset(cu(), EMT(), seed=5, path=tmp_path / "d.xyz", **SMALL)


def test_label_does_not_carry_parent_labels_and_records_the_labeller():
    atoms = cu()
    atoms.info["energy"] = 123.0
    atoms.arrays["forces"] = np.ones((4, 3))
    [frame] = rattle(atoms, 1, amplitude=0.05, seed=0)
    assert "energy" not in frame.info and "forces" not in frame.arrays
    lj = LennardJones(sigma=2.3, epsilon=0.4, rc=5.0)
    [done] = label(frame, lj, progress=False)
    assert done.info["labeller"] == "LennardJones"
    assert json.loads(done.info["labeller_settings"])["sigma"] == 2.3
    assert "energy" not in frame.info and frame.calc is None  # input untouched


def test_check_consistent_catches_another_labeller():
    frames = rattle(cu(), 4, amplitude=0.05, seed=0)
    good = label(frames, EMT(), progress=False)
    assert check_consistent(good)["labeller_settings"] == json.dumps({"asap_cutoff": False})
    mixed = good[:2] + label(frames[2:3], EMT(asap_cutoff=True), progress=False) + good[3:]
    with pytest.raises(ValueError, match=r"frame 2 .*labeller_settings"):
        check_consistent(mixed)
    other = good[:3] + label(frames[3:], LennardJones(), progress=False)
    with pytest.raises(ValueError, match=r"frame 3 .*labeller='LennardJones'"):
        check_consistent(other)
    free = good[:1] + label(frames[1:], EMT(), energy_property="free_energy", progress=False)
    with pytest.raises(ValueError, match=r"frame 1 .*energy_property"):
        check_consistent(free)
    with pytest.raises(ValueError, match=r"frame 1 .*no labeller record"):
        check_consistent(good[:1] + frames[1:])


def test_a_parameter_record_is_recorded_by_its_values():
    """ase's Tersoff holds its parameters as dataclasses: two parameter sets must not record
    as the same labeller (before, both were "<TersoffParameters>")."""
    tersoff = pytest.importorskip("ase.calculators.tersoff")  # ase >= 3.25
    si_b = [3.0, 1.0, 1.3258, 4.8381, 2.0417, 0.0, 22.956, 0.33675, 1.3258, 95.373, 3.0, 0.2,
            3.2394, 3264.7]  # Tersoff 1988 silicon, as LAMMPS's Si.tersoff gives it
    one = tersoff.Tersoff({("Si", "Si", "Si"): tersoff.TersoffParameters.from_list(si_b)})
    changed = si_b[:-1] + [3000.0]
    two = tersoff.Tersoff({("Si", "Si", "Si"): tersoff.TersoffParameters.from_list(changed)})
    (_, a), (_, b) = labeller_record(one), labeller_record(two)
    assert a != b and json.loads(a)["('Si', 'Si', 'Si')"]["A"] == 3264.7


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [0.0, -10.0, np.nan, np.inf])
def test_bad_temperature_is_refused(t):
    with pytest.raises(ValueError, match="temperature"):
        rattle(cu(), 2, temperature=t, force_constant=5.0)
    with pytest.raises(ValueError, match=r"temperatures\[1\]"):
        langevin_md(cu(), EMT(), temperatures=[300.0, t], n_samples=1)
    with pytest.raises(ValueError, match=r"md_temperatures\[0\]"):
        Recipe(md_temperatures=(t,))


@pytest.mark.parametrize("kwargs, match", [
    (dict(hydrostatic=(-1.0,)), r"hydrostatic\[0\].*>= 1"),
    (dict(hydrostatic=(0.01, 1.5)), r"hydrostatic\[1\].*>= 1"),
    (dict(shear=(-0.98,)), r"shear\[0\].*degenerates"),
    (dict(strains=[np.full((3, 3), -0.6) + 0.6 * np.eye(3)]), r"strains\[0\].*inverts"),
    (dict(strains=[[[0, 0.1, 0], [0, 0, 0], [0, 0, 0]]]), r"strains\[0\].*symmetric"),
    (dict(strains=[np.zeros(6)]), r"strains\[0\].*3x3"),
])
def test_bad_strain_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        strain(cu(), **kwargs)


def test_other_bad_input_is_refused():
    with pytest.raises(ValueError, match="n_vacancies=4 .*smaller"):
        vacancies(cu(), 1, n_vacancies=4)
    with pytest.raises(ValueError, match="exactly one of temperature"):
        rattle(cu(), 1, temperature=300.0, amplitude=0.1)
    with pytest.raises(ValueError, match="needs calculator="):
        rattle(cu(), 1, temperature=300.0)
    with pytest.raises(ValueError, match=r"force_constant has no value for species \['Au'\]"):
        rattle(Atoms("CuAu", positions=[[0, 0, 0], [2, 0, 0]]), 1, temperature=300.0,
               force_constant={"Cu": 5.0})
    with pytest.raises(TypeError, match="unknown Recipe field"):
        generate_dataset(cu(), EMT(), md_temprature=(300,))
    # a molecule can be strained (positions) but has no virial
    water = molecule("H2O")
    with pytest.warns(UserWarning, match="no virial"):
        strained = strain(water, hydrostatic=(0.01,), shear=())
    assert np.allclose(strained[0].positions, water.positions * 1.01)
    with pytest.raises(ValueError, match=r"frame 0 .*not fully periodic.*drop 'virial'"):
        label(strained, EMT(), properties=("energy", "forces", "virial"))
    with pytest.raises(ValueError, match="not fully periodic"):
        langevin_md(water, EMT(), temperatures=[300.0], n_samples=1, properties=["virial"])
    [done] = label(strained, EMT(), progress=False)  # default: virial only where periodic
    assert "virial" not in done.info


def test_failing_labeller_names_frame_and_config_type():
    frames = rattle(cu(), 3, amplitude=0.02, seed=0) + strain(cu(), hydrostatic=(0.01,),
                                                             shear=())
    frames[3].numbers[0] = 92  # uranium: EMT has no parameters for it
    with pytest.raises(LabellingError, match=r"frame 3 \(config_type 'strain'\).*EMT.*U") as err:
        label(frames, EMT(), progress=False)
    assert isinstance(err.value, ValueError)
    assert isinstance(err.value.__cause__, NotImplementedError)


# --------------------------------------------------------------------------------------------
# End to end: generated data teach a GAP something
# --------------------------------------------------------------------------------------------


def test_generated_data_fit_a_gap_that_predicts_held_out_frames():
    from gapkit import GAP, SOAP, NoiseModel, SOAPKernel, Term

    recipe = Recipe(include_reference=False, rattle_temperatures=(300.0, 900.0),
                    rattle_copies=6, md_temperatures=(600.0,), md_samples=4,
                    md_equilibration=30, md_interval=10, hydrostatic=(-0.01, 0.01), shear=(),
                    strain_temperature=300.0)
    train = generate_dataset(cu(2), EMT(), recipe=recipe, seed=10, progress=False)
    test = generate_dataset(cu(2), EMT(), recipe=recipe, seed=11, progress=False,
                            rattle_copies=2, md_samples=2)
    assert len(train) == 18 and len(test) == 8
    term = Term(SOAP(cutoff=4.0, cutoff_width=1.0, n_max=4, l_max=3),
                SOAPKernel(zeta=4, delta=1.0), n_sparse=30)
    model = GAP([term], noise=NoiseModel(energy=0.002, forces=0.05, virial=0.05),
                progress=False).fit(train)
    reference = np.concatenate([x.forces for x in get_all_labels(test)])
    predicted = model.predict(test).forces
    mae = float(np.mean(np.abs(predicted - reference)))
    spread = float(np.std(reference))
    assert mae < 0.3 * spread, (mae, spread)


def test_one_label_copies_and_can_store_in_info():
    """testing.label is generate.label with store="info": both copy, neither modifies."""
    from ase.build import bulk as _bulk

    from gapkit.testing import label as test_label

    atoms = _bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=1)
    atoms.info["config_type"] = "bulk"
    a = label([atoms], EMT(), progress=False)[0]
    b = label([atoms], EMT(), progress=False, store="info")[0]
    c = test_label(atoms, EMT())
    assert atoms.calc is None and "energy" not in atoms.info and "forces" not in atoms.arrays
    assert b.calc is None and c.calc is None
    assert b.info["energy"] == c.info["energy"] == a.get_potential_energy()
    np.testing.assert_array_equal(b.arrays["forces"], a.get_forces())
    np.testing.assert_array_equal(b.info["virial"], a.info["virial"])
    assert b.info["config_type"] == "bulk" and b.info["labeller"] == "EMT"
    with pytest.raises(ValueError, match="store must be"):
        label([atoms], EMT(), progress=False, store="file")
