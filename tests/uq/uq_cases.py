"""Shared cases of the gapkit.uq tests: synthetic Gaussian errors and a small EMT Cu GAP
(``cu_case()``: train, validation and test cells and the fitted model, which each test
module makes its module-scoped ``cu`` fixture)."""

from __future__ import annotations

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from conftest import make_strained_cells

from gapkit import GAP, SOAP, NoiseModel, SOAPKernel, Term

LOO_RTOL = 1e-6  # closed form vs refit, relative to the largest residual


N_SYNTH = 20000


def _synthetic(seed: int, n: int = N_SYNTH, scale: float = 1.0):
    """Errors e ~ N(0, sigma^2) with log-uniform sigma; returns (e, predicted var)
    where the predicted variance is ``scale^2 sigma^2`` (scale 1: calibrated)."""
    rng = np.random.default_rng(seed)
    sigma = np.exp(rng.uniform(np.log(0.01), np.log(0.3), n))
    return rng.normal(scale=sigma), (scale * sigma) ** 2


def _cells(n: int, seed: int, shift: dict | None = None, *, strain: float = 0.02,
           rattle: float = 0.1):
    """``n`` EMT-labelled 4-atom fcc Cu cells, strained (standard deviation ``strain``,
    default ±2 %) and rattled (``rattle`` Å); ``shift`` adds eV to some frames' energies."""
    out = make_strained_cells(bulk("Cu", "fcc", a=3.61, cubic=True), n, seed=seed,
                              strain=strain, rattle=rattle, calc=EMT)
    for k, atoms in enumerate(out):
        if shift and k in shift:
            atoms.info["energy"] += shift[k]
    return out


def _model(n_sparse=15, **kw):
    soap = SOAP(cutoff=4.0, cutoff_width=1.0, n_max=3, l_max=2)
    return GAP([Term(soap, SOAPKernel(zeta=4, delta=1.0), n_sparse=n_sparse)],
               noise=NoiseModel(energy=0.002, forces=0.05, virial=0.02), progress=False, **kw)


def cu_case():
    train, val, test = _cells(10, 0), _cells(8, 1), _cells(6, 2)
    return train, val, test, _model().fit(train)
