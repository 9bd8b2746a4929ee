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
