"""ExactGP: the dense GPyTorch reference GP on energies, forces and virials.

Data: small rattled Cu-Al clusters (energies + forces) and small periodic Cu-Al fcc cells
(energies + forces + virials), labelled by ASE's EMT calculator. Descriptor
``SOAP(n_max=3, l_max=2, cutoff=4.0)``, kernel ``SOAPKernel(zeta=2)``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

import gapkit
from gapkit.gp.exact import ExactGP, Functionals, functional_covariance
from gapkit.gp.observations import VOIGT, NoiseModel
from gapkit.kernels import SOAPKernel, TwoBodyKernel
from gapkit.testing import TOLERANCES, check_forces

SPECIES = (13, 29)  # Al, Cu
DELTA, ZETA = 1.5, 2
TOL = TOLERANCES[torch.float64]
#: the GPyTorch posterior against a dense numpy one: two different solves
RTOL_ALGEBRA = 1e-8
#: finite differences of the energy, absolute (eV/Å for forces, eV for the virial)
FD_ATOL = 1e-6


def _soap():
    return gapkit.SOAP(n_max=3, l_max=2, cutoff=4.0)


def _labelled(atoms: Atoms) -> Atoms:
    """``atoms`` with EMT energy, forces (and stress when periodic) as labels."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        results["stress"] = atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def _cluster(seed: int, n_atoms: int = 6) -> Atoms:
    """Random Cu-Al cluster in a 4.4 Å box, atoms at least 2.2 Å apart (not periodic)."""
    rng = np.random.default_rng(seed)
    positions = []
    while len(positions) < n_atoms:
        p = rng.uniform(-2.2, 2.2, 3)
        if all(np.linalg.norm(p - q) > 2.2 for q in positions):
            positions.append(p)
    return Atoms(list(rng.choice(["Cu", "Al"], n_atoms)), positions=positions)


def _cell(seed: int) -> Atoms:
    """4-atom cubic fcc Cu-Al cell (a = 3.85 Å), rattled by 0.1 Å and sheared slightly."""
    rng = np.random.default_rng(seed)
    atoms = bulk("Cu", "fcc", a=3.85, cubic=True)
    atoms.symbols[rng.permutation(4)[: 1 + seed % 3]] = "Al"
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + 0.03 * rng.normal(size=(3, 3))),
                   scale_atoms=True)
    atoms.rattle(0.1, seed=seed)
    return atoms


@pytest.fixture(scope="module")
def clusters():
    return [_labelled(_cluster(seed)) for seed in range(5)]


@pytest.fixture(scope="module")
def cells():
    return [_labelled(_cell(seed)) for seed in range(4)]


@pytest.fixture(scope="module")
def probe_cluster():
    """A cluster that is not in the training set."""
    return _cluster(100)


@pytest.fixture(scope="module")
def probe_cell():
    """A periodic cell that is not in the training set."""
    return _cell(100)


NOISE = NoiseModel(energy=0.01, forces=0.05, virial=0.05)


@pytest.fixture(scope="module")
def gp_clusters(clusters):
    return ExactGP(_soap(), SOAPKernel(zeta=ZETA, delta=DELTA), noise=NOISE).fit(clusters)


@pytest.fixture(scope="module")
def gp_cells(cells):
    return ExactGP(_soap(), SOAPKernel(zeta=ZETA, delta=DELTA), noise=NOISE).fit(cells)


def _labels(frames):
    energy = np.array([a.get_potential_energy() for a in frames])
    forces = np.concatenate([a.get_forces() for a in frames])
    virial = np.array([-a.get_stress(voigt=False) * a.get_volume() if a.pbc.all()
                       else np.full((3, 3), np.nan) for a in frames])
    return energy, forces, virial


# -- fitting behaviour ------------------------------------------------------------------


@pytest.mark.parametrize("data", ["clusters", "cells"])
def test_interpolates_training_data_as_noise_goes_to_zero(data, request):
    frames = request.getfixturevalue(data)
    tiny = NoiseModel(energy=1e-6, forces=1e-5, virial=1e-5)
    gp = ExactGP(_soap(), SOAPKernel(zeta=ZETA, delta=DELTA), noise=tiny).fit(frames)
    pred = gp.predict(frames)
    prior = gp.predict(frames, prior=True)
    energy, forces, virial = _labels(frames)
    np.testing.assert_allclose(pred.energy, energy, atol=1e-6)
    np.testing.assert_allclose(pred.forces, forces, atol=1e-5)
    assert pred.energy_variance.max() < 1e-8 * prior.energy_variance.max()
    assert pred.forces_variance.max() < 1e-8 * prior.forces_variance.max()
    if data == "cells":
        np.testing.assert_allclose(pred.virial, virial, atol=1e-5)
        assert pred.virial_variance.max() < 1e-8 * prior.virial_variance.max()


@pytest.mark.parametrize("data", ["clusters", "cells"])
def test_posterior_variance_never_exceeds_prior(data, request):
    gp = request.getfixturevalue(f"gp_{data}")
    frames = request.getfixturevalue(data)[:2] + [request.getfixturevalue(f"probe_{data[:-1]}")]
    post, prior = gp.predict(frames), gp.predict(frames, prior=True)
    prior_arrays = prior.as_dict()
    for key, value in post.as_dict().items():
        if key.endswith("_variance"):
            assert np.all(value >= 0), key
            assert np.all(value <= prior_arrays[key] * (1 + TOL["algebra"])
                          + TOL["algebra_atol"]), key
    # the prior: e0 baseline and zero latent means, k(q, q) = delta^2 for unit descriptors
    e0_atoms = np.array([gp.e0_[int(z)] for a in frames for z in a.numbers])
    assert np.all(prior.forces == 0) and np.all(prior.local_energy == e0_atoms)
    np.testing.assert_allclose(prior.local_energy_variance, DELTA**2, rtol=TOL["algebra"])


def test_energy_is_the_sum_of_local_energies(gp_clusters, probe_cluster):
    pred = gp_clusters.predict([probe_cluster])
    # per-atom energies carry their e0, as GAP.predict's do
    assert pred.energy[0] == pytest.approx(pred.local_energy.sum(), abs=1e-10)
    assert pred.local_energy.shape == (len(probe_cluster),)
    # an isolated cluster feels no net force
    np.testing.assert_allclose(pred.forces.sum(axis=0), 0.0, atol=1e-10)


def test_rotation_and_translation(gp_clusters, probe_cluster, rng):
    rot, _ = np.linalg.qr(rng.normal(size=(3, 3)))  # random orthogonal, maybe improper
    moved = probe_cluster.copy()
    moved.positions = probe_cluster.positions @ rot.T + rng.normal(size=3)
    a, b = gp_clusters.predict([probe_cluster]), gp_clusters.predict([moved])
    transform = f"rotation {rot.tolist()}"
    np.testing.assert_allclose(b.energy, a.energy, rtol=1e-10, err_msg=transform)
    np.testing.assert_allclose(b.energy_variance, a.energy_variance, rtol=1e-8,
                               err_msg=transform)
    np.testing.assert_allclose(b.local_energy, a.local_energy, atol=1e-10,
                               err_msg=transform)
    np.testing.assert_allclose(b.forces, a.forces @ rot.T, atol=1e-9, err_msg=transform)
    # the trace of each atom's force covariance is invariant
    np.testing.assert_allclose(b.forces_variance.sum(1), a.forces_variance.sum(1),
                               rtol=1e-8, atol=1e-12, err_msg=transform)


def test_forces_are_minus_the_energy_gradient(gp_clusters, probe_cluster):
    check_forces(gp_clusters, probe_cluster, rtol=0.0, atol=FD_ATOL)


def test_virial_is_minus_the_strain_derivative(gp_cells, probe_cell):
    """All nine strain components (and the forces of the cell), step 1e-5."""
    errors = check_forces(gp_cells, probe_cell, step=1e-5, rtol=0.0, atol=FD_ATOL)
    assert set(errors) == {"forces", "virial"}


def test_two_body_model(clusters, probe_cluster):
    """Pair centres (two per pair, typed by species pair) go through the same functionals."""
    descriptor = gapkit.TwoBody(cutoff=4.0, cutoff_width=1.0)
    kernel = TwoBodyKernel(cutoff=4.0, cutoff_width=1.0, lengthscale=0.5, delta=0.2)
    gp = ExactGP(descriptor, kernel, noise=NOISE).fit(clusters)
    check_forces(gp, probe_cluster, rtol=0.0, atol=FD_ATOL)
    pred, prior = gp.predict([probe_cluster]), gp.predict([probe_cluster], prior=True)
    # per-atom energies (each atom owns its pair centres), e0 included
    assert descriptor.compute(probe_cluster).n_centres > len(probe_cluster)
    assert pred.local_energy.shape == (len(probe_cluster),)
    assert pred.energy[0] == pytest.approx(pred.local_energy.sum(), abs=1e-10)
    prior_arrays = prior.as_dict()
    for key, value in pred.as_dict().items():
        if key.endswith("_variance"):
            assert np.all(value <= prior_arrays[key] * (1 + TOL["algebra"])
                          + TOL["algebra_atol"]), key


# -- cross-check of the GPyTorch plumbing against dense numpy ------------------------------


def _dense_reference(train, test, e0, noise, use_virial):
    """Posterior of the same model, written out densely in numpy.

    The latent vector is ``z = [eps(q_c) for all centres; d eps/dq (q_c) for all centres]``
    with the SOAP kernel ``k = delta^2 (q.q')^zeta`` and its derivatives written out;
    every observation is a row of ``L`` acting on ``z``; ``K = L cov(z) L^T``.
    """
    soap = gapkit.SOAP(n_max=3, l_max=2, cutoff=4.0, species=SPECIES)
    results = [soap.compute(train, gradients=True), soap.compute(test, gradients=True)]
    q = np.concatenate([r.values for r in results])
    types = np.concatenate([r.centre_types for r in results])
    n_c, d = q.shape
    s = q @ q.T
    same = (types[:, None] == types[None, :]).astype(float)
    z = ZETA
    cov = np.zeros((n_c * (1 + d), n_c * (1 + d)))
    cov[:n_c, :n_c] = DELTA**2 * s**z * same
    # cov(eps_c, d eps_c'/dq_j) = delta^2 zeta s^(zeta-1) q_c,j
    keg = DELTA**2 * z * (s ** (z - 1) * same)[:, :, None] * q[:, None, :]
    cov[:n_c, n_c:] = keg.reshape(n_c, n_c * d)
    cov[n_c:, :n_c] = cov[:n_c, n_c:].T
    # cov(d eps_c/dq_i, d eps_c'/dq_j)
    #   = delta^2 zeta [(zeta-1) s^(zeta-2) q_c',i q_c,j + s^(zeta-1) delta_ij]
    outer = np.einsum("bi,aj->aibj", q, q)  # [c, i, c', j] = q_c',i q_c,j
    kgg = (z * (z - 1) * s ** (z - 2) * same)[:, None, :, None] * outer
    kgg = kgg + (z * s ** (z - 1) * same)[:, None, :, None] * np.eye(d)[None, :, None, :]
    cov[n_c:, n_c:] = DELTA**2 * kgg.reshape(n_c * d, n_c * d)

    def rows(result, frames, centre_offset, labelled):
        """(L, y, sigma^2) for labelled frames, or L of (energy, forces, virial, local)."""
        ls, ys, sig = [], [], []
        atom_offsets = result.atom_offsets

        def grad_block(c):
            return slice(n_c + (centre_offset + c) * d, n_c + (centre_offset + c + 1) * d)

        for f, atoms in enumerate(frames):
            n = len(atoms)
            centres = np.nonzero(result.centre_structure == f)[0]
            row = np.zeros(n_c * (1 + d))
            row[centre_offset + centres] = 1.0
            ls.append(row)
            if labelled:
                ys.append(atoms.get_potential_energy() - sum(e0[zz] for zz in atoms.numbers))
                sig.append((noise.energy * np.sqrt(n)) ** 2)
            for k in range(n):
                entries = np.nonzero(result.gradient_atom_global == atom_offsets[f] + k)[0]
                for a in range(3):
                    row = np.zeros(n_c * (1 + d))
                    for e in entries:
                        row[grad_block(result.gradient_centre[e])] -= result.gradients[e, a]
                    ls.append(row)
                    if labelled:
                        ys.append(atoms.get_forces()[k, a])
                        sig.append(noise.forces**2)
            if use_virial or not labelled:
                virial = (-atoms.get_stress(voigt=False) * atoms.get_volume()
                          if labelled else None)
                for a, b in VOIGT:
                    row = np.zeros(n_c * (1 + d))
                    for c in centres:
                        sg = result.strain_gradients[c]
                        row[grad_block(c)] -= 0.5 * (sg[a, b] + sg[b, a])
                    ls.append(row)
                    if labelled:
                        ys.append(virial[a, b])
                        sig.append((noise.virial * np.sqrt(n)) ** 2)
        if not labelled:
            for c in range(result.n_centres):
                row = np.zeros(n_c * (1 + d))
                row[centre_offset + c] = 1.0
                ls.append(row)
        return np.array(ls), np.array(ys), np.array(sig)

    l_train, y, sigma2 = rows(results[0], train, 0, True)
    l_test, _, _ = rows(results[1], test, results[0].n_centres, False)
    k_train = l_train @ cov @ l_train.T + np.diag(sigma2)
    k_cross = l_test @ cov @ l_train.T
    k_test = np.einsum("ij,jk,ik->i", l_test, cov, l_test)
    chol = np.linalg.cholesky(k_train)
    alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, y))  # R&W Alg. 2.1
    v = np.linalg.solve(chol, k_cross.T)
    mean = k_cross @ alpha
    variance = k_test - (v * v).sum(0)
    lml = (-0.5 * y @ alpha - np.log(np.diag(chol)).sum() - 0.5 * len(y) * np.log(2 * np.pi))
    return mean, variance, lml


def _flatten(pred, frames):
    """Prediction arrays (a dict) -> vector in the order of ``_dense_reference``'s test rows."""
    out_mean, out_var = [], []
    atom = 0
    for f, atoms in enumerate(frames):
        out_mean.append([pred["energy"][f]])
        out_var.append([pred["energy_variance"][f]])
        n = len(atoms)
        out_mean.append(pred["forces"][atom:atom + n].ravel())
        out_var.append(pred["forces_variance"][atom:atom + n].ravel())
        atom += n
        out_mean.append([pred["virial"][f][a, b] for a, b in VOIGT])
        out_var.append([pred["virial_variance"][f][a, b] for a, b in VOIGT])
    out_mean.append(pred["local_energy"])
    out_var.append(pred["local_energy_variance"])
    return np.concatenate(out_mean), np.concatenate(out_var)


@pytest.mark.parametrize("data", ["clusters", "cells"])
def test_matches_dense_numpy_posterior(data, request):
    gp = request.getfixturevalue(f"gp_{data}")
    train = request.getfixturevalue(data)
    test = [request.getfixturevalue(f"probe_{data[:-1]}"), train[1]]
    mean, variance, lml = _dense_reference(train, test, gp.e0_, NOISE,
                                           use_virial=data == "cells")
    pred = gp.predict(test)
    baseline = np.array([sum(gp.e0_[z] for z in a.numbers) for a in test])
    e0_atoms = np.array([gp.e0_[int(z)] for a in test for z in a.numbers])
    # the dense reference has latent values: no e0 (SOAP: one centre per atom)
    pred = dict(pred.as_dict(), energy=pred.energy - baseline,
                local_energy=pred.local_energy - e0_atoms)
    got_mean, got_var = _flatten(pred, test)
    scale = np.abs(mean).max()
    np.testing.assert_allclose(got_mean, mean, rtol=RTOL_ALGEBRA, atol=RTOL_ALGEBRA * scale)
    np.testing.assert_allclose(got_var, variance, rtol=RTOL_ALGEBRA,
                               atol=RTOL_ALGEBRA * variance.max())
    assert gp.log_marginal_likelihood() == pytest.approx(lml, rel=RTOL_ALGEBRA)


def test_only_energy_rows_lie_in_the_span_of_the_training_centres(gp_clusters, clusters):
    """Why a sparse GP with every training centre as a sparse point matches ExactGP on
    energies only: ``K_NN = K_NZ K_ZZ^-1 K_ZN`` holds for energy rows, not for force rows."""
    result = gp_clusters.descriptor_.compute(clusters)
    local = Functionals.from_descriptor(result, local_rows=np.arange(result.n_centres),
                                        n_rows=result.n_centres)
    train = gp_clusters.functionals_
    rows, centres = torch.arange(train.n_rows), torch.arange(local.n_rows)
    with torch.no_grad():
        k_nn = functional_covariance(gp_clusters.kernel_, train, rows, train, rows).numpy()
        k_nz = functional_covariance(gp_clusters.kernel_, train, rows, local, centres).numpy()
        k_zz = functional_covariance(gp_clusters.kernel_, local, centres, local,
                                     centres).numpy()
    q_nn = k_nz @ np.linalg.lstsq(k_zz, k_nz.T, rcond=1e-12)[0]
    energy = gp_clusters.observations_.kind == 0
    np.testing.assert_allclose(q_nn[np.ix_(energy, energy)], k_nn[np.ix_(energy, energy)],
                               rtol=1e-9, atol=1e-9 * np.abs(k_nn).max())
    forces = ~energy
    assert np.abs(q_nn - k_nn)[np.ix_(forces, forces)].max() > 0.1 * np.abs(
        k_nn[np.ix_(forces, forces)]).max()


# -- hyper-parameters ----------------------------------------------------------------------


def test_log_marginal_likelihood_gradient_and_delta(gp_clusters):
    gp = gp_clusters
    kernel = gp.kernel_
    original = kernel.delta.item()
    try:
        lml = gp.log_marginal_likelihood(as_tensor=True)
        (grad,) = torch.autograd.grad(lml, kernel.raw_delta)
        h = 1e-5
        raw = kernel.raw_delta.detach().clone()
        values = []
        for sign in (1, -1):
            with torch.no_grad():
                kernel.raw_delta.copy_(raw + sign * h)
            values.append(gp.log_marginal_likelihood())
        assert grad.item() == pytest.approx((values[0] - values[1]) / (2 * h), rel=1e-5)
        # predictions follow a change of delta on kernel_
        kernel.delta = 2 * original
        doubled = gp.predict([_cluster(100)])
        kernel.delta = original
        back = gp.predict([_cluster(100)])
        assert not np.allclose(doubled.energy_variance, back.energy_variance)
    finally:
        kernel.delta = original


def test_hyper_parameters_belong_to_the_gpytorch_model(gp_clusters):
    names = dict(gp_clusters.model_.named_parameters())
    assert any(name.endswith("raw_delta") for name in names)
    assert all(p.dtype == torch.float64 for p in names.values())
    noise = gp_clusters.model_.likelihood.noise
    np.testing.assert_allclose(noise.numpy(), gp_clusters.observations_.sigma**2, rtol=1e-15)


# -- errors ----------------------------------------------------------------------------------


def test_errors(clusters):
    gp = ExactGP(_soap(), SOAPKernel(zeta=2))
    with pytest.raises(RuntimeError, match="fit"):
        gp.predict(clusters)
    with pytest.raises(ValueError, match="use="):
        ExactGP(_soap(), SOAPKernel(zeta=2), use=("energy", "stress"))
    with pytest.raises(ValueError, match="e0"):
        ExactGP(_soap(), SOAPKernel(zeta=2), e0="mean")
    with pytest.raises(TypeError, match="NoiseModel"):
        ExactGP(_soap(), SOAPKernel(zeta=2), noise=0.01)
    fitted = ExactGP(_soap(), SOAPKernel(zeta=2), use=("energy",)).fit(clusters)
    assert fitted.observations_.counts() == {"energy": 5, "forces": 0, "virial": 0}
    with pytest.raises(ValueError, match="species"):
        fitted.predict(Atoms("Ni2", positions=[[0, 0, 0], [0, 0, 2.3]]))
