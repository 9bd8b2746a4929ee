"""Tests of :class:`gapkit.GAPCalculator`, the ASE calculator of a fitted GAP.

The calculator must give what ``GAP.predict`` gives, in ASE's property names and units
(energy eV, forces eV/Å, stress eV/Å^3 with ASE's sign, per-atom ``energies`` eV), be
consistent with ASE's own finite-difference forces and stress, carry the predictive
variances in ``results``, and only recompute when the atoms change.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.emt import EMT
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.cluster import Icosahedron

from gapkit import GAP, SOAP, GAPCalculator, NoiseModel, SOAPKernel, Term
from gapkit.testing import TOLERANCES, label

TOL = TOLERANCES[np.float64]
FD_STEP = TOL["force_step"]  # Å for forces; strain for the stress
FD_RTOL = TOL["finite_difference"]  # relative to the largest component
ALGEBRA_RTOL = TOL["algebra"]
SUM_RTOL = TOL["solve"]  # sums of large, cancelling alpha_m k_m terms


def _label(atoms: Atoms) -> Atoms:
    return label(atoms, EMT())


def _bulk_cu(seed: int, rattle: float = 0.1, strain: float = 0.02) -> Atoms:
    """32-atom fcc Cu (2x2x2 cubic cells), strained and rattled (Å)."""
    rng = np.random.default_rng(seed)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    eps = rng.normal(scale=strain, size=(3, 3))
    atoms.set_cell(atoms.cell @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
    atoms.rattle(rattle, seed=seed)
    return atoms


def _cluster(seed: int, rattle: float = 0.1) -> Atoms:
    """13-atom Cu icosahedron (not periodic), rattled (Å)."""
    atoms = Icosahedron("Cu", 2)
    atoms.center(vacuum=5.0)
    atoms.pbc = False
    atoms.rattle(rattle, seed=seed)
    return atoms


@pytest.fixture(scope="module")
def model() -> GAP:
    """SOAP GAP for Cu fitted on EMT bulk cells and clusters (energies, forces, virials)."""
    frames = [_label(_bulk_cu(k)) for k in range(4)] + [_label(_cluster(k)) for k in range(4)]
    term = Term(SOAP(cutoff=4.0, cutoff_width=1.0, n_max=4, l_max=3),
                SOAPKernel(zeta=4, delta=1.0), n_sparse=20)
    return GAP([term], noise=NoiseModel(energy=0.002, forces=0.1, virial=0.02),
               progress=False).fit(frames)


@pytest.fixture(params=["bulk", "cluster"])
def atoms(request) -> Atoms:
    if request.param == "bulk":  # 4-atom cubic cell: every atom sees periodic images of itself
        atoms = bulk("Cu", "fcc", a=3.63, cubic=True)
        atoms.rattle(0.05, seed=11)
        return atoms
    return _cluster(12, rattle=0.05)


def _max_rel(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(b).max())


def test_results_match_model_predict(model, atoms):
    atoms.calc = GAPCalculator(model, forces_variance="projected")
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    energies = atoms.get_potential_energies()
    pred = model.predict([atoms.copy()], forces_variance="projected")
    assert energy == pred.energy[0]
    assert atoms.get_potential_energy(force_consistent=True) == pred.energy[0]
    np.testing.assert_array_equal(forces, pred.forces)
    np.testing.assert_array_equal(energies, pred.local_energy)
    res = atoms.calc.results
    assert res["energy_variance"] == pred.energy_variance[0]
    np.testing.assert_array_equal(res["energies_variance"], pred.local_energy_variance)
    np.testing.assert_array_equal(res["forces_variance"], pred.forces_variance)
    if atoms.pbc.all():
        stress = atoms.get_stress(voigt=False)
        np.testing.assert_allclose(stress, -pred.virial[0] / atoms.get_volume(),
                                   rtol=0, atol=ALGEBRA_RTOL * np.abs(stress).max())
        voigt = atoms.get_stress()
        np.testing.assert_array_equal(voigt, stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]])


def test_variances_in_results(model, atoms):
    """energy, per-atom and (exact, DTC) force variances by default; projected force
    variances on request; none with variance=False or forces_variance=None."""
    n = len(atoms)
    default = GAPCalculator(model)
    default.get_forces(atoms)
    assert isinstance(default.results["energy_variance"], float)
    assert default.results["energy_variance"] >= 0
    assert default.results["energies_variance"].shape == (n,)
    assert np.all(default.results["energies_variance"] >= 0)
    assert default.results["forces_variance"].shape == (n, 3)
    no_forces = GAPCalculator(model, forces_variance=None)
    no_forces.get_forces(atoms)
    assert "forces_variance" not in no_forces.results
    projected = GAPCalculator(model, forces_variance="projected")
    projected.get_forces(atoms)
    res = projected.results
    assert res["energy_variance"] == default.results["energy_variance"]
    assert res["forces_variance"].shape == (n, 3) and np.all(res["forces_variance"] >= 0)
    exact = GAPCalculator(model, forces_variance="exact")
    exact.get_forces(atoms)
    np.testing.assert_array_equal(exact.results["forces_variance"],
                                  default.results["forces_variance"])
    assert np.all(exact.results["forces_variance"] >= res["forces_variance"] * (1 - 1e-9))
    plain = GAPCalculator(model, variance=False)
    np.testing.assert_array_equal(plain.get_forces(atoms), res["forces"])
    assert not {"energy_variance", "energies_variance", "forces_variance"} & set(plain.results)


def test_energies_sum_to_energy(model, atoms):
    atoms.calc = GAPCalculator(model)
    # the two sums round differently: E = sum_m alpha_m k_m with |alpha| ~ 1e4 here
    assert atoms.get_potential_energies().sum() == pytest.approx(
        atoms.get_potential_energy(), rel=SUM_RTOL, abs=SUM_RTOL * len(atoms))


def test_forces_match_ase_numerical_forces(model, atoms):
    atoms.calc = GAPCalculator(model, variance=False)
    analytic = atoms.get_forces()
    numeric = calculate_numerical_forces(atoms, eps=FD_STEP)
    assert _max_rel(analytic, numeric) < FD_RTOL


def test_stress_matches_ase_numerical_stress(model):
    atoms = _bulk_cu(13, rattle=0.05)
    atoms.calc = GAPCalculator(model, variance=False)
    analytic = atoms.get_stress()
    # Richardson-extrapolated ASE central differences, (4 S(h) - S(2h)) / 3: plain
    # differences leave an O(h^2) error of 2e-6 of the stress at h = 1e-4 (falling as
    # h^2 from 2e-4 at h = 1e-3) and meet the energy round-off below h ~ 1e-5; the
    # extrapolated value agrees to 4e-8..6e-8 (measured).
    numeric = (4 * calculate_numerical_stress(atoms, eps=FD_STEP)
               - calculate_numerical_stress(atoms, eps=2 * FD_STEP)) / 3
    assert _max_rel(analytic, numeric) < FD_RTOL


def test_stress_needs_a_periodic_cell(model):
    atoms = _cluster(3)
    atoms.calc = GAPCalculator(model)
    atoms.get_potential_energy()
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()
    slab = _bulk_cu(3)
    slab.pbc = [True, True, False]
    slab.calc = GAPCalculator(model)
    with pytest.raises(PropertyNotImplementedError):
        slab.get_stress()


def _counting(model: GAP) -> list:
    """Wrap ``model.predict`` (on this instance) to count its calls."""
    calls = []
    original = model.predict

    def predict(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    model.predict = predict
    return calls


def test_results_are_cached_until_atoms_change(model):
    atoms = _bulk_cu(5, rattle=0.05)
    calc = GAPCalculator(model)
    atoms.calc = calc
    calls = _counting(model)
    try:
        energy = atoms.get_potential_energy()  # energy only: forces and stress skipped
        assert "forces" not in calc.results and "stress" not in calc.results
        assert len(calls) == 1
        atoms.get_forces()  # forces bring the stress along (MD asks for both)
        results = calc.results
        atoms.get_stress()
        atoms.get_potential_energies()
        assert atoms.get_potential_energy() == energy
        assert len(calls) == 2
        assert calc.results is results
        calls.clear()
        atoms.positions[0, 0] += 0.01  # a change: recompute once
        assert atoms.get_potential_energy() != energy
        atoms.get_forces()
        assert len(calls) == 2
        atoms.set_cell(atoms.cell * 1.01, scale_atoms=True)
        atoms.get_stress()
        atoms.get_forces()
        assert len(calls) == 3
        atoms.numbers[0] = atoms.numbers[0]  # no change
        atoms.get_forces()
        assert len(calls) == 3
    finally:
        del model.predict


def test_unknown_species_raises_valueerror(model):
    atoms = _cluster(1)
    atoms.numbers[0] = 79  # Au
    atoms.calc = GAPCalculator(model)
    with pytest.raises(ValueError, match=r"species Au\b"):
        atoms.get_potential_energy()


def test_unfitted_model_is_rejected():
    term = Term(SOAP(cutoff=4.0, cutoff_width=1.0, n_max=4, l_max=3), SOAPKernel(), n_sparse=5)
    with pytest.raises(RuntimeError, match="not fitted"):
        GAPCalculator(GAP([term], progress=False))


def test_a_calculator_shared_by_threads_gives_each_its_own_results(model):
    """Two threads share one calculator, each asking for the energy and forces of its own
    frames (of different sizes); every answer equals the sequential one."""
    import copy
    import threading

    frames = [_bulk_cu(seed) for seed in range(4)] + [bulk("Cu", "fcc", a=3.6).repeat(3)]
    for atoms in frames[-1:]:
        atoms.rattle(0.05, seed=9)
    calc = GAPCalculator(model)
    expected = []
    for atoms in frames:
        a = atoms.copy()
        a.calc = calc
        expected.append((a.get_potential_energy(), a.get_forces()))
    got: dict = {}

    def work(tid):
        for rep in range(6):
            for k, atoms in enumerate(frames):
                a = atoms.copy()
                a.calc = calc
                got[(tid, rep, k)] = (a.get_potential_energy(), a.get_forces())

    threads = [threading.Thread(target=work, args=(t,)) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 2 * 6 * len(frames)
    for (_, _, k), (energy, forces) in got.items():
        assert energy == expected[k][0]
        np.testing.assert_array_equal(forces, expected[k][1])
    clone = copy.deepcopy(calc)  # a copy gets its own lock
    assert clone._lock is not calc._lock


def test_ase_rules_get_properties_set_and_variance_properties(model):
    """GAPCalculator by ASE's rules (issue 14 item 2): ``atoms.get_properties`` works (the
    variances used to raise KeyError in ASE's Properties), variances are properties computed
    when asked even with ``variance=False``, ``set`` changes a setting and discards the
    results, an energy-only call predicts no forces."""
    atoms = _bulk_cu(7, rattle=0.05)
    calc = GAPCalculator(model)
    atoms.calc = calc
    props = atoms.get_properties(["energy", "forces", "stress"])
    ref = model.predict([atoms])
    assert props["energy"] == pytest.approx(ref.energy[0], rel=1e-12)
    np.testing.assert_allclose(props["forces"], ref.forces, rtol=0, atol=1e-12)
    assert "energy_variance" in calc.results  # kept for the documented results access
    calls = _counting(model)
    try:
        calc.set(variance=False)
        assert calc.results == {}  # a changed setting discards the results
        assert calc.set(variance=False) == {}  # unchanged: nothing discarded
        atoms.get_potential_energy()
        assert calls[-1]["forces"] is False and calls[-1]["return_variance"] is False
        assert "energy_variance" not in calc.results
        fv = calc.get_property("forces_variance", atoms)  # asked: computed
        np.testing.assert_allclose(fv, ref.forces_variance, rtol=1e-10, atol=1e-15)
        assert calls[-1]["return_variance"] is True
        assert calc.get_property("energy_variance", atoms) == pytest.approx(
            ref.energy_variance[0], rel=1e-10)
    finally:
        del model.predict
    with pytest.raises(ValueError, match="forces_variance must be"):
        calc.set(forces_variance="full")


def test_get_properties_with_baselines_and_without_variance():
    """A model with physics baselines and ``variance=False``: ``atoms.get_properties``
    works (it raised KeyError: 'baseline_energy')."""
    from gapkit.baselines import CoreRepulsion

    frames = [_label(_bulk_cu(k)) for k in range(3)]
    term = Term(SOAP(cutoff=4.0, cutoff_width=1.0, n_max=3, l_max=2),
                SOAPKernel(zeta=4, delta=1.0), n_sparse=10)
    m = GAP([term], noise=NoiseModel(energy=0.002, forces=0.1, virial=0.02),
            baselines=[CoreRepulsion()], progress=False).fit(frames)
    atoms = _bulk_cu(9)
    atoms.calc = GAPCalculator(m, variance=False)
    props = atoms.get_properties(["energy", "forces", "energies"])
    assert props["energy"] == pytest.approx(m.predict([atoms]).energy[0], rel=1e-12)
    assert "baseline_energy" in atoms.calc.results


def test_ase_io_write_keeps_the_variances(model, tmp_path):
    """The variances go into the atoms (the names ``gapkit predict`` writes), so an extxyz
    written by ase.io.write and read back holds them beside energy and forces; a request
    without variances removes them (no value of earlier positions survives)."""
    from ase.io import read, write

    atoms = _bulk_cu(3)
    atoms.calc = GAPCalculator(model)
    forces = atoms.get_forces()
    calc = atoms.calc
    write(tmp_path / "out.xyz", atoms)
    back = read(tmp_path / "out.xyz")
    assert back.info["gap_energy_variance"] == pytest.approx(calc.results["energy_variance"],
                                                             rel=1e-12)
    # extxyz writes per-atom columns with 8 decimals
    np.testing.assert_allclose(back.arrays["gap_forces_variance"],
                               calc.results["forces_variance"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(back.arrays["gap_local_energy_variance"],
                               calc.results["energies_variance"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(back.get_forces(), forces, rtol=0, atol=1e-8)
    assert calc.results["forces_variance"].shape == (len(atoms), 3)
    assert np.all(calc.results["forces_variance"] > 0)

    calc.set(variance=False)
    atoms.rattle(0.01, seed=3)
    atoms.get_forces()
    assert "gap_energy_variance" not in atoms.info
    assert "gap_forces_variance" not in atoms.arrays

    quiet = _bulk_cu(4)
    quiet.calc = GAPCalculator(model, store_variances=False)
    quiet.get_forces()
    assert "gap_forces_variance" not in quiet.arrays
    assert quiet.calc.todict()["store_variances"] is False
