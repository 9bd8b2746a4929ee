"""The sparse (DTC) GAP against the exact dense GP (GPyTorch).

DTC replaces the prior covariance of the observations K_NN by the Nyström
projection Q_NN = K_NM K_MM^-1 K_MN. With every training environment as a sparse
point, Q_NN = K_NN for energies (sums of local energies at the sparse points), so
the two GPs coincide for any kernel. Forces are derivatives of the local energy:
their functionals lie in the span of {k(., z_m)} only when the sparse points span
the kernel's feature space. For the linear (zeta = 1) SOAP kernel that space is
the D-dimensional descriptor space, spanned once there are at least D distinct
environments per species: then the sparse GP must equal the exact GP for energies
*and* forces, means and variances. K_MM is then singular (rank D < M), so some
jitter is the numerical need: the difference to the exact GP is proportional to it
(checked below), and 1e-14 of the mean diagonal is enough for 1e-8.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from gapkit import GAP, SOAP, NoiseModel, SOAPKernel, Term
from gapkit.gp import ExactGP

RTOL = 1e-8


def _clusters(n_frames, seed):
    """``n_frames`` EMT-labelled Cu4Al4 clusters: uniform positions in a 4.2 Å box, kept
    when no two atoms are closer than 2.1 Å (about 1 draw in 30 000 is kept).

    The candidates are drawn in batches from one generator, which gives the same
    sequence (and the same clusters) as drawing them one at a time, 10x faster.
    """
    rng = np.random.default_rng(seed)
    first, second = np.triu_indices(8, 1)
    positions = []
    while len(positions) < n_frames:
        candidates = rng.uniform(0.0, 4.2, size=(20_000, 8, 3))
        closest = np.linalg.norm(candidates[:, first] - candidates[:, second], axis=-1)
        positions.extend(candidates[closest.min(axis=1) >= 2.1])
    frames = []
    for pos in positions[:n_frames]:
        atoms = Atoms("Cu4Al4", positions=pos)
        atoms.calc = EMT()
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f)
        frames.append(atoms)
    return frames


def _soap():
    return SOAP(cutoff=4.0, cutoff_width=1.0, n_max=2, l_max=1, atom_sigma=0.5,
                species=[13, 29])


@pytest.fixture(scope="module")
def data():
    return _clusters(8, seed=1), _clusters(3, seed=2)


def _pair(train, use, zeta, jitter):
    noise = NoiseModel(energy=0.01, forces=0.05)
    sparse = GAP([Term(_soap(), SOAPKernel(zeta=zeta, delta=1.3), n_sparse="all",
                       sparse_method="random")], noise=noise, use=use, jitter=jitter,
                 e0="zero", progress=False).fit(train)
    exact = ExactGP(_soap(), SOAPKernel(zeta=zeta, delta=1.3), noise=noise, e0="zero",
                    use=use).fit(train)
    return sparse, exact


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_training_environments_span_the_linear_feature_space(data):
    train, _ = data
    res = _soap().compute(train)
    for z in (13, 29):
        q = res.values[res.centre_species == z]
        sv = np.linalg.svd(q, compute_uv=False)
        assert q.shape[0] >= q.shape[1]
        assert sv[-1] / sv[0] > 1e-4, "environments do not span the descriptor space"


@pytest.mark.parametrize("use, zeta", [(("energy",), 4), (("energy", "forces"), 1)])
def test_sparse_gp_with_all_environments_equals_exact_gp(data, use, zeta):
    train, test = data
    sparse, exact = _pair(train, use, zeta, jitter=1e-14 if zeta == 1 else 1e-12)
    p = sparse.predict(test, forces_variance="exact", virial=False)
    q = exact.predict(test)
    assert _rel(p.energy, q.energy) < RTOL
    assert _rel(p.forces, q.forces) < RTOL
    assert _rel(p.energy_variance, q.energy_variance) < RTOL
    assert _rel(p.forces_variance, q.forces_variance) < RTOL
    local = q.local_energy_variance
    assert _rel(p.local_energy_variance, local) < RTOL


def test_fewer_sparse_points_differ_from_exact_gp(data):
    """The identity above is not vacuous: a real sparse set changes the answer."""
    train, test = data
    noise = NoiseModel(energy=0.01, forces=0.05)
    sparse = GAP([Term(_soap(), SOAPKernel(zeta=4, delta=1.3), n_sparse=8)], noise=noise,
                 e0="zero", progress=False).fit(train)
    exact = ExactGP(_soap(), SOAPKernel(zeta=4, delta=1.3), noise=noise, e0="zero").fit(train)
    assert _rel(sparse.predict(test, return_variance=False).forces,
                exact.predict(test).forces) > 1e-3


def test_difference_to_exact_gp_is_proportional_to_the_jitter(data):
    train, test = data
    errors = []
    for jitter in (1e-9, 1e-11):
        sparse, exact = _pair(train, ("energy", "forces"), 1, jitter)
        p = sparse.predict(test, forces_variance="exact", virial=False)
        q = exact.predict(test)
        errors.append([_rel(p.forces, q.forces),
                       _rel(p.forces_variance, q.forces_variance)])
    ratio = np.array(errors[0]) / np.array(errors[1])
    assert np.all((ratio > 30) & (ratio < 300)), ratio
