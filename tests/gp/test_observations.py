"""gapkit.gp.observations: e0 by least squares when the compositions do and do not
determine it."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from gapkit.data import get_all_labels, load_bundled
from gapkit.gp.observations import fit_e0


def test_one_composition_falls_back_to_the_mean_energy_per_atom():
    """Every rMD17 ethanol frame is C2H6O: least squares cannot split the energy between
    species (the minimum-norm split gave H -616 eV); every species gets the mean energy per
    atom, with a warning, and the fitted totals are as good as any split's."""
    frames = load_bundled("ethanol_rmd17_200.xyz")[:20]
    energies = np.array([lab.energy for lab in get_all_labels(frames)])
    with pytest.warns(UserWarning, match="rank 1 of 3"):
        e0 = fit_e0(frames)
    mean = energies.sum() / sum(len(a) for a in frames)
    assert e0 == pytest.approx({1: mean, 6: mean, 8: mean}, rel=1e-12)
    totals = np.array([sum(e0[int(z)] for z in a.numbers) for a in frames])
    comp = np.array([[np.sum(a.numbers == z) for z in (1, 6, 8)] for a in frames], float)
    best, *_ = np.linalg.lstsq(comp, energies, rcond=None)
    assert np.abs(totals - energies).sum() == pytest.approx(
        np.abs(comp @ best - energies).sum(), rel=1e-9)


def test_several_compositions_keep_the_exact_least_squares():
    rng = np.random.default_rng(0)
    true = {1: -13.6, 8: -432.0}
    frames = []
    for k in range(6):
        n_h, n_o = 1 + k % 3, 1 + k // 3
        atoms = Atoms("H" * n_h + "O" * n_o, positions=rng.uniform(0, 9, (n_h + n_o, 3)))
        atoms.info["energy"] = n_h * true[1] + n_o * true[8] + rng.normal(scale=0.01)
        frames.append(atoms)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        e0 = fit_e0(frames)
    assert e0[1] == pytest.approx(true[1], abs=0.05) and e0[8] == pytest.approx(true[8], abs=0.05)


def test_implausible_inputs_are_warned_about_with_the_number_and_the_fix():
    """A noise config_type no frame has, atoms 0.1 Å apart, energies in meV, a 50 Å cutoff:
    each fits, with one warning naming what triggered it; clean data warn about none."""
    import warnings

    from ase.build import bulk
    from ase.calculators.emt import EMT
    from conftest import make_strained_cells

    from gapkit import GAP, SOAP, NoiseModel, SOAPKernel, Term
    from gapkit.gp.observations import warn_implausible

    frames = make_strained_cells(bulk("Cu", "fcc", a=3.61, cubic=True), 8, seed=0,
                                 strain=0.02, rattle=0.1, calc=EMT)
    for atoms in frames:
        atoms.info["config_type"] = "bulk"
    term = Term(SOAP(cutoff=4.0, cutoff_width=1.0, n_max=3, l_max=2), SOAPKernel(zeta=4),
                n_sparse=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # clean data: no warning at all
        GAP([term], noise=NoiseModel(config_type={"bulk": {"forces": 0.1}}),
            progress=False).fit(frames)
    with pytest.warns(UserWarning, match=r"config_type \['bluk'\], which no training frame "
                                         r"has \(they have \['bulk'\]\)"):
        GAP([term], noise=NoiseModel(config_type={"bluk": {"forces": 0.1}}),
            progress=False).fit(frames)
    squeezed = [a.copy() for a in frames]
    squeezed[3].positions[1] = squeezed[3].positions[0] + [0.1, 0.0, 0.0]
    labels = get_all_labels(frames)
    e0 = {29: float(np.mean([lab.energy / len(a) for a, lab in zip(frames, labels)]))}
    with pytest.warns(UserWarning, match="closer than"):
        (msg,) = warn_implausible(squeezed, labels, NoiseModel(), e0)
    assert "1 training frames have atoms closer than 0.5 Å (frame 3: 0.1 Å)" in msg
    mev = [a.copy() for a in frames]
    for atoms in mev:
        atoms.info["energy"] *= 1000.0
    with pytest.warns(UserWarning, match=r"energies per atom \(after e0\) spread by [0-9.]+ "
                                         r"eV/atom.*are they in eV"):
        GAP([term], noise=NoiseModel(), progress=False).fit(mev)
    far = Term(SOAP(cutoff=50.0, cutoff_width=1.0, n_max=2, l_max=1), SOAPKernel(zeta=4),
               n_sparse=5)
    with pytest.warns(UserWarning, match="cutoff"):
        (msg,) = warn_implausible(frames, labels, NoiseModel(), e0, [far])
    assert "cutoff of 50 Å" in msg
