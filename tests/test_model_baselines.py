"""A GAP fitted on top of physics baselines: the GP learns the residual, predictions add
the baselines back (energies, forces, virials, local energies), they survive save/load
and the command-line config, and a core repulsion keeps atoms apart where the data end."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.verlet import VelocityVerlet

from gapkit import GAP, SOAP, GAPCalculator, NoiseModel, SOAPKernel, Term
from gapkit.baselines import CoreRepulsion, LennardJones, evaluate
from gapkit.data import get_all_labels, load_bundled


def _model(baselines=None, n_sparse=40):
    soap = SOAP(cutoff=4.0, cutoff_width=1.0, n_max=4, l_max=3, atom_sigma=0.5)
    return GAP([Term(soap, SOAPKernel(zeta=2, delta=1.0), n_sparse=n_sparse,
                     sparse_method="cur")],
               noise=NoiseModel(energy=0.003, forces=0.05, virial=0.05), progress=False,
               baselines=baselines)


@pytest.fixture(scope="module")
def si_frames():
    frames = load_bundled("Si_train.xyz")
    return [a for a in frames if len(a) <= 64][:12]


def _subtracted(frames, baselines):
    """Copies of ``frames`` whose labels have the baselines removed (by hand)."""
    out = []
    labels = get_all_labels(frames)
    for atoms, lab, res in zip(frames, labels, evaluate(baselines, frames)):
        a = atoms.copy()
        a.calc = None
        a.info = {k: v for k, v in atoms.info.items()
                  if k not in ("energy", "virial", "stress")}
        a.calc = SinglePointCalculator(a, energy=lab.energy - res.energy,
                                       forces=lab.forces - res.forces)
        a.info["virial"] = lab.virial - res.virial
        out.append(a)
    return out


def test_gap_on_a_baseline_equals_gap_on_the_residual_plus_the_baseline(si_frames):
    # a deliberately strong baseline, so that a missing or doubled term shows
    lj = LennardJones.from_epsilon_sigma(0.05, 2.1, cutoff=4.0)
    with_base = _model([lj]).fit(si_frames)
    on_residual = _model().fit(_subtracted(si_frames, [lj]))
    test = load_bundled("Si_test.xyz")[:4]
    p1 = with_base.predict(test, forces_variance="exact")
    p0 = on_residual.predict(test, forces_variance="exact")
    res = evaluate([lj], test)
    b_energy = np.array([r.energy for r in res])
    assert np.abs(b_energy).max() > 1.0  # the baseline matters
    np.testing.assert_allclose(p1.energy, p0.energy + b_energy, rtol=0, atol=1e-8)
    np.testing.assert_allclose(p1.baseline_energy, b_energy, rtol=0, atol=1e-12)
    np.testing.assert_allclose(p1.forces, p0.forces + np.concatenate([r.forces for r in res]),
                               rtol=0, atol=1e-8)
    np.testing.assert_allclose(p1.virial, p0.virial + np.array([r.virial for r in res]),
                               rtol=0, atol=1e-7)
    np.testing.assert_allclose(
        p1.local_energy, p0.local_energy + np.concatenate([r.energies for r in res]),
        rtol=0, atol=1e-8)
    # the variances are those of the GP on the residual
    np.testing.assert_allclose(p1.energy_variance, p0.energy_variance, rtol=1e-8)
    np.testing.assert_allclose(p1.forces_variance, p0.forces_variance, rtol=1e-8)
    assert p0.baseline_energy is None


def test_baseline_model_saves_loads_and_runs_as_a_calculator(si_frames, tmp_path):
    core = CoreRepulsion()
    model = _model([core]).fit(si_frames)
    path = model.save(tmp_path / "m.gapkit")
    import json
    import zipfile

    with zipfile.ZipFile(path) as zf:
        meta = json.loads(zf.read("metadata.json"))
    assert meta["format_version"] == 2 and meta["baselines"][0]["type"] == "CoreRepulsion"
    loaded = GAP.load(path)
    assert [b.to_dict() for b in loaded.baselines] == [core.to_dict()]
    atoms = load_bundled("Si_test.xyz")[0]
    atoms.positions[1] = atoms.positions[0] + [1.2, 0.3, 0.1]  # inside the core
    p, q = model.predict([atoms]), loaded.predict([atoms])
    np.testing.assert_array_equal(p.energy, q.energy)
    np.testing.assert_array_equal(p.forces, q.forces)
    atoms.calc = GAPCalculator(loaded)
    e = atoms.get_potential_energy()
    assert e == pytest.approx(p.energy[0], abs=1e-10)
    assert atoms.calc.results["baseline_energy"] == pytest.approx(p.baseline_energy[0])
    assert atoms.calc.results["baseline_energy"] > 1.0
    # the calculator's forces are minus the gradient of its energy, baseline included
    f = atoms.get_forces()
    h = 1e-4
    for i, a in ((0, 0), (1, 2)):
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, a] += h
        minus.positions[i, a] -= h
        plus.calc = minus.calc = GAPCalculator(loaded, variance=False)
        fd = -(plus.get_potential_energy() - minus.get_potential_energy()) / (2 * h)
        assert f[i, a] == pytest.approx(fd, abs=1e-4 * max(1.0, abs(fd)))


def test_model_without_baselines_is_written_as_format_1(si_frames, tmp_path):
    import json
    import zipfile

    path = _model().fit(si_frames[:3]).save(tmp_path / "m.gapkit")
    with zipfile.ZipFile(path) as zf:
        meta = json.loads(zf.read("metadata.json"))
    assert meta["format_version"] == 1 and "baselines" not in meta


def test_bad_baselines_are_rejected():
    with pytest.raises(TypeError, match="Baseline"):
        _model(["zbl"])


def test_cli_config_round_trips_baselines():
    from gapkit.cli import config_to_model, model_to_config

    cfg = model_to_config(_model([CoreRepulsion(), LennardJones(A=1e3, B=10.0, cutoff=5.0)]))
    assert [b["type"] for b in cfg["baselines"]] == ["CoreRepulsion", "LennardJones"]
    model, _, _ = config_to_model(cfg)
    assert [b.to_dict() for b in model.baselines] == \
        [CoreRepulsion().to_dict(), LennardJones(A=1e3, B=10.0, cutoff=5.0).to_dict()]


def _knock_on(model, energy_ev, steps=150):
    """Give atom 0 of 8-atom diamond Si ``energy_ev`` towards its neighbour 1; NVE with
    0.1 fs steps. Returns the closest approach of the pair and the energy drift."""
    from ase.build import bulk

    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.calc = GAPCalculator(model, variance=False)
    d = atoms.get_distance(0, 1, mic=True, vector=True)
    v = np.zeros((len(atoms), 3))
    v[0] = np.sqrt(2 * energy_ev / atoms.get_masses()[0]) * d / np.linalg.norm(d)
    atoms.set_velocities(v)
    e_start = atoms.get_total_energy()
    dyn = VelocityVerlet(atoms, 0.1 * units.fs)
    closest = np.inf
    for _ in range(steps):
        try:
            dyn.run(1)
        except ValueError as err:  # the descriptor refuses atoms on top of each other
            assert "apart" in str(err)
            return 0.0, np.nan
        closest = min(closest, atoms.get_distance(0, 1, mic=True))
    return closest, atoms.get_total_energy() - e_start


def test_core_repulsion_keeps_atoms_apart_in_a_head_on_collision(si_frames):
    # no training pair is closer than 1.83 Å: below that the bare GP reverts to its prior
    # and nothing stops a 30 eV knock-on atom; ZBL does, and conserves energy doing it
    bare = _model().fit(si_frames)
    guarded = _model([CoreRepulsion()]).fit(si_frames)
    closest_bare, _ = _knock_on(bare, 30.0)
    closest_core, drift = _knock_on(guarded, 30.0)
    assert closest_bare < 0.8, closest_bare
    assert closest_core > 1.2, closest_core
    assert abs(drift) < 0.01, drift
    # the pair stops near where ZBL alone would stop it: the turning point of a 30 eV
    # head-on collision with a resting partner of equal mass (15 eV in the centre of mass)
    zbl = CoreRepulsion()
    rs = np.linspace(0.5, 2.0, 3001)
    e = np.array([zbl.compute(Atoms("Si2", positions=[[0, 0, 0], [r, 0, 0]]), forces=False,
                              virial=False).energy for r in rs])
    turning = rs[e > 15.0].max()
    assert abs(closest_core - turning) < 0.3, (closest_core, turning)


def test_ewald_baseline_leaves_the_gap_only_the_short_range_part():
    """E = E_short(GAP) + E_long: ions with fixed charges ±1 plus a short-range r^-12
    repulsion (the reference). A two-body GAP with a 4 Å cutoff cannot see the 1/r tail;
    with the Ewald sum as its baseline it only has to learn the repulsion, and it
    transfers from 8-ion cells to 64-ion cells."""
    from ase.build import bulk

    from gapkit import TwoBody, TwoBodyKernel
    from gapkit.baselines import BaselineCalculator, Ewald
    from gapkit.generate import label, rattle

    ewald = Ewald({"Na": 1.0, "Cl": -1.0})
    reference = BaselineCalculator(
        [ewald, CoreRepulsion(kind="r12", A=1.3e5, cutoff=4.0, cutoff_width=1.5)])
    cell = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    train = label(rattle(cell, 12, amplitude=0.1, seed=0), reference, progress=False)
    test = label(rattle(cell.repeat(2), 3, amplitude=0.1, seed=1), reference, progress=False)
    f_ref = np.concatenate([a.get_forces() for a in test])
    e_ref = np.array([a.get_potential_energy() for a in test])
    errors = {}
    for name, baselines in (("bare", None), ("ewald", [ewald])):
        term = Term(TwoBody(cutoff=4.0, cutoff_width=1.0),
                    TwoBodyKernel(cutoff=4.0, cutoff_width=1.0, lengthscale=0.5),
                    n_sparse=20, sparse_method="uniform")
        model = GAP([term], noise=NoiseModel(energy=0.001, forces=0.01, virial=0.01),
                    progress=False, baselines=baselines).fit(train)
        pred = model.predict(test, return_variance=False)
        errors[name] = (np.sqrt(((pred.forces - f_ref) ** 2).mean()),
                        np.abs(pred.energy - e_ref).max() / 64)
    # measured: forces 0.020 vs 0.114 eV/Å (|F| rms 2.5), energies 0.2 vs 3.5 meV/atom
    assert errors["ewald"][0] < 0.05 and errors["ewald"][0] < 0.3 * errors["bare"][0], errors
    assert errors["ewald"][1] < 0.3 * errors["bare"][1], errors
