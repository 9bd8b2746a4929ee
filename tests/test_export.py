"""The metatomic export (gapkit.export): the exported TorchScript model, run by
metatomic's own ASE calculator (and by i-PI's metatomic driver), gives what gapkit gives --
energies, forces, stress, per-atom energies and the energy sigma, per structure and per atom
-- to 1e-8 relative; what cannot be exported is refused by name."""

from __future__ import annotations


import numpy as np
import pytest

pytest.importorskip("metatomic.torch", reason="metatomic-torch is not installed "
                    "(pip install 'gapkit[metatomic]')")
pytest.importorskip("metatomic_ase", reason="metatomic-ase is not installed")

import torch  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.calculators.emt import EMT  # noqa: E402
from ase.io import write  # noqa: E402
from metatensor.torch import Labels  # noqa: E402
from metatomic.torch import ModelOutput, load_atomistic_model  # noqa: E402
from metatomic_ase import MetatomicCalculator  # noqa: E402

from gapkit import (  # noqa: E402
    GAP,
    SOAP,
    GAPCalculator,
    NoiseModel,
    SEKernel,
    SOAPKernel,
    SymmetryFunctions,
    Term,
)
from gapkit.baselines import CoreRepulsion, Ewald, LennardJones  # noqa: E402
from gapkit.cli import main  # noqa: E402
from gapkit.export import ExportError, export  # noqa: E402

from conftest import si_frames  # noqa: E402
from ipi_run import check_nve, run_nve  # noqa: E402
from model_cases import SI_NOISE, _cuag_cluster, _si_terms  # noqa: E402

RTOL = 1e-8


def close(x, y, rtol=RTOL):
    """|x - y| <= rtol * max|y| (relative to the array's scale)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    assert x.shape == y.shape, (x.shape, y.shape)
    scale = max(float(np.abs(y).max(initial=0.0)), 1e-300)
    err = float(np.abs(x - y).max(initial=0.0))
    assert err <= rtol * scale, (err, scale)


def sigma(calc, atoms, sample_kind):
    out = calc.run_model(atoms, {"energy_uncertainty": ModelOutput(unit="eV",
                                                                   sample_kind=sample_kind)})
    return out["energy_uncertainty"].block().values[:, 0].detach().numpy()


def check_matches(model, calc, atoms):
    """The export (``calc``) gives gapkit's E, F, stress, per-atom E and both sigma."""
    ref = atoms.copy()
    ref.calc = GAPCalculator(model)
    mine = atoms.copy()
    mine.calc = calc
    close(mine.get_potential_energy(), ref.get_potential_energy())
    close(mine.get_forces(), ref.get_forces())
    close(mine.get_stress(), ref.get_stress())
    close(mine.get_potential_energies(), ref.get_potential_energies())
    pred = model.predict([atoms])
    close(sigma(calc, atoms, "system") ** 2, pred.energy_variance)
    close(sigma(calc, atoms, "atom") ** 2, pred.local_energy_variance)
    return pred


@pytest.fixture(scope="module")
def si_export(tmp_path_factory):
    """A Si model with a SOAP and a two-body term, explicit noise (latent sigma)."""
    frames = si_frames(10)
    model = GAP(_si_terms(two_body=True), noise=SI_NOISE, energy_key="REF_energy",
                progress=False).fit(frames)
    path = model.export(tmp_path_factory.mktemp("export") / "si.pt")
    return model, path, frames


@pytest.fixture(scope="module")
def cuag_export(tmp_path_factory):
    """Two species, not periodic, EMT labels, the default fit (noise by cross-validation,
    so the energy sigma is the calibrated predictive one)."""
    frames = []
    rng = np.random.default_rng(0)
    for seed in range(24):
        atoms = _cuag_cluster(seed=seed, rattle=0.15)
        atoms.numbers[:] = 29
        atoms.numbers[rng.choice(13, size=2 + seed % 5, replace=False)] = 47
        atoms.calc = EMT()
        atoms.info["energy"] = atoms.get_potential_energy()
        atoms.arrays["forces"] = atoms.get_forces()
        atoms.calc = None
        frames.append(atoms)
    terms = [Term(SOAP(cutoff=4.5, cutoff_width=1.0, n_max=4, l_max=3), SOAPKernel(zeta=4),
                  n_sparse=30)]
    model = GAP(terms, progress=False).fit(frames)
    path = export(model, tmp_path_factory.mktemp("export") / "cuag.pt")
    return model, path


def test_periodic_two_terms_match_gapkit(si_export):
    model, path, frames = si_export
    calc = MetatomicCalculator(str(path), check_consistency=True)
    atoms = frames[3].copy()
    atoms.rattle(0.03, seed=4)
    check_matches(model, calc, atoms)


def test_two_species_cluster_calibrated_sigma_matches(cuag_export):
    model, path = cuag_export
    assert model.predictive_.get("energy"), "the default fit calibrates the energy sigma"
    # local energies of a 24-frame fit are uncertain (> metatomic's 0.1 eV warning level)
    calc = MetatomicCalculator(str(path), check_consistency=True, uncertainty_threshold=None)
    atoms = _cuag_cluster(seed=99, rattle=0.2)
    mine = atoms.copy()
    mine.calc = calc
    pred = model.predict([atoms], virial=False)
    close(mine.get_potential_energy(), pred.energy[0])
    close(mine.get_forces(), pred.forces)
    close(mine.get_potential_energies(), pred.local_energy)
    assert pred.variance_form["energy"] == "calibrated+noise"
    close(sigma(calc, atoms, "system") ** 2, pred.energy_variance)
    close(sigma(calc, atoms, "atom") ** 2, pred.local_energy_variance)


@pytest.fixture(scope="module")
def cuag_bulk():
    """Periodic fcc Cu with Ag swapped in, rattled, EMT labels (two species, stress)."""
    rng = np.random.default_rng(1)
    frames = []
    for seed in range(8):
        atoms = bulk("Cu", "fcc", a=3.62, cubic=True).repeat((2, 2, 1))
        atoms.numbers[rng.choice(len(atoms), size=3 + seed % 4, replace=False)] = 47
        atoms.rattle(0.12, seed=seed)
        atoms.calc = EMT()
        atoms.info["energy"] = atoms.get_potential_energy()
        atoms.arrays["forces"] = atoms.get_forces()
        atoms.calc = None
        frames.append(atoms)
    return frames


def test_symmetry_functions_and_pair_baselines_match_gapkit(cuag_bulk, tmp_path):
    """Symmetry functions (G2, G4 and G5; cosine and tanh cutoffs) with the SE and the
    dot-product kernels, on top of ZBL, r12 and Lennard-Jones baselines: the export gives
    gapkit's E, F, stress, per-atom E and sigma, also at a close contact where the core
    repulsion acts."""
    sf = SymmetryFunctions(cutoff=4.0, g5=[[0.05, 2.0, 1.0], [0.02, 1.0, -1.0]])
    terms = [Term(sf, SEKernel(lengthscale=4.0, delta=0.3), n_sparse=30),
             Term(SymmetryFunctions(cutoff=3.2, cutoff_function="tanh", g4=[[0.1, 4.0, -1.0]]),
                  SOAPKernel(zeta=2, delta=0.1), n_sparse=15)]
    baselines = [CoreRepulsion(), CoreRepulsion("r12", cutoff=2.0, A={"Cu-Cu": 30.0,
                                                                     "Cu-Ag": 40.0,
                                                                     "Ag-Ag": 50.0}),
                 LennardJones.from_epsilon_sigma(0.01, 2.3, cutoff=5.0)]
    model = GAP(terms, baselines=baselines, noise=NoiseModel(energy=0.01, forces=0.1),
                progress=False).fit(cuag_bulk)
    path = model.export(tmp_path / "sf.pt")
    calc = MetatomicCalculator(str(path), check_consistency=True, uncertainty_threshold=None)
    for k, atoms in enumerate([cuag_bulk[2].copy(), cuag_bulk[5].copy()]):
        atoms.rattle(0.05, seed=10 + k)
        if k == 1:  # two atoms 1.3 A apart: inside both core repulsions
            atoms.positions[0] = atoms.positions[1] + [1.0, 0.7, 0.5]
        pred = check_matches(model, calc, atoms)
    assert abs(pred.baseline_energy[0]) > 1.0  # at the close contact, the baselines matter


def test_species_mixing_matches_gapkit(cuag_bulk, tmp_path):
    """SOAP with compressed element channels (a fixed one-channel embedding; a given 2 x 2
    mixing): the export gives gapkit's E, F, stress, per-atom E and sigma."""
    terms = [Term(SOAP(cutoff=4.0, n_max=3, l_max=2, species_mixing=1), SOAPKernel(zeta=2),
                  n_sparse=20),
             Term(SOAP(cutoff=3.5, n_max=3, l_max=2,
                       species_mixing={"Cu": [1.0, 0.3], "Ag": [0.2, -0.8]}),
                  SOAPKernel(zeta=4), n_sparse=20)]
    model = GAP(terms, noise=NoiseModel(energy=0.01, forces=0.1), progress=False).fit(cuag_bulk)
    path = model.export(tmp_path / "mixed.pt")
    calc = MetatomicCalculator(str(path), check_consistency=True, uncertainty_threshold=None)
    atoms = cuag_bulk[3].copy()
    atoms.rattle(0.05, seed=7)
    check_matches(model, calc, atoms)


def test_forces_are_the_energy_gradient_of_the_export(si_export):
    """Independent of gapkit's analytic gradients: central differences of the exported
    energy."""
    _, path, frames = si_export
    calc = MetatomicCalculator(str(path))
    atoms = frames[2].copy()
    atoms.rattle(0.05, seed=1)
    atoms.calc = calc
    forces = atoms.get_forces()
    h = 1e-4
    for i, a in [(0, 0), (1, 2), (len(atoms) - 1, 1)]:
        e = []
        for s in (h, -h):
            moved = atoms.copy()
            moved.positions[i, a] += s
            moved.calc = calc
            e.append(moved.get_potential_energy())
        assert forces[i, a] == pytest.approx(-(e[0] - e[1]) / (2 * h), abs=1e-6)


def test_selected_atoms_give_their_share(si_export):
    """Domain decomposition (LAMMPS): with selected atoms, the energy is the sum of their
    local energies, and per-atom outputs list only them."""
    model, path, frames = si_export
    atoms = frames[1]
    loaded = load_atomistic_model(str(path))
    calc = MetatomicCalculator(loaded)
    chosen = [0, 3, 5]
    selected = Labels(["system", "atom"], torch.tensor([[0, i] for i in chosen]))
    outputs = {"energy": ModelOutput(unit="eV", sample_kind="system"),
               "energy_uncertainty": ModelOutput(unit="eV", sample_kind="atom")}
    out = calc.run_model(atoms, outputs, selected_atoms=selected)
    pred = model.predict([atoms])
    energy = out["energy"].block().values.detach().numpy()
    close(energy, [[pred.local_energy[chosen].sum()]])
    block = out["energy_uncertainty"].block()
    assert block.samples.values[:, 1].tolist() == chosen
    close(block.values[:, 0].numpy() ** 2, pred.local_energy_variance[chosen])


def test_uncertainty_threshold_warns(si_export):
    """metatomic-ase's warning on per-atom sigma reads the exported local sigma."""
    model, path, frames = si_export
    far = frames[0].copy()
    far.positions *= 0.93
    far.cell *= 0.93
    far.calc = MetatomicCalculator(str(path), uncertainty_threshold=1e-6)
    with pytest.warns(UserWarning, match="uncertainties are larger than the threshold"):
        far.get_potential_energy()


def test_export_bad_input(si_export, tmp_path):
    model, path, frames = si_export
    with pytest.raises(FileExistsError):
        export(model, path)
    before = path.read_bytes()
    assert export(model, path, overwrite=True) == path and path.stat().st_size > 0
    assert len(before) > 0
    with pytest.raises(RuntimeError, match="not fitted"):
        GAP().export(tmp_path / "x.pt")
    small = dict(noise=SI_NOISE, energy_key="REF_energy", progress=False)
    ewald = GAP(_si_terms(), baselines=[Ewald({"Si": 0.0})], **small).fit(frames[:3])
    with pytest.raises(ExportError, match=r"the Ewald baseline cannot be exported.*long-ranged"):
        ewald.export(tmp_path / "x.pt")
    ntk = GAP([Term(SOAP(cutoff=4.0, n_max=3, l_max=2), "ntk", n_sparse=10)],
              **small).fit(frames[:3])
    with pytest.raises(ExportError, match=r"term 0 \(SOAP descriptor with NTKKernel\)"):
        ntk.export(tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()
    # a species the model never saw: the engine refuses it before the model runs
    carbon = frames[0].copy()
    carbon.numbers[0] = 6
    carbon.calc = MetatomicCalculator(str(path))
    with pytest.raises(ValueError, match="atomic type"):
        carbon.get_potential_energy()


def test_cli_export(si_export, tmp_path, capsys):
    model, _, _ = si_export
    model.save(tmp_path / "si.gapkit")
    out = tmp_path / "si.pt"
    assert main(["export", str(tmp_path / "si.gapkit"), str(out)]) == 0
    assert "pair_style metatomic" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "si.gapkit"), str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "si.gapkit"), str(out), "--force"]) == 0


@pytest.mark.slow
def test_ipi_runs_the_exported_model(si_export, tmp_path):
    """i-PI's own metatomic driver (no gapkit code in the client) runs NVE on the export."""
    model, path, frames = si_export
    init = frames[0].copy()
    init.calc = None
    write(tmp_path / "init.xyz", init)
    rows = run_nve(tmp_path, ["-m", "metatomic", "-o",
                              f"template={tmp_path / 'init.xyz'},model={path}"], steps=10)
    ref = init.copy()
    ref.calc = GAPCalculator(model, variance=False)
    check_nve(rows, ref.get_potential_energy())
