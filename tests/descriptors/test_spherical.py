"""The spherical harmonics SOAP uses: sphericart against gapkit's own recurrences.

sphericart is a dependency (it is 20-30x faster, see
:func:`gapkit.descriptors._spherical.spherical_harmonics`); the torch recurrences stay as
the fallback (no sphericart) and as the independent check of its
convention here: same orthonormal real harmonics, same order and signs.
"""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from gapkit import SOAP
from gapkit.descriptors import _spherical
from gapkit.descriptors._spherical import (harmonics_backend, real_spherical_harmonics,
                                           spherical_harmonics)


def _vectors():
    rng = np.random.default_rng(3)
    v = rng.normal(size=(400, 3)) * rng.uniform(0.2, 6.0, size=(400, 1))
    axes = np.concatenate([np.eye(3), -np.eye(3), [[1e-3, 0, 2.0], [0, -1e-9, 1.0]]])
    return torch.as_tensor(np.concatenate([v, 2.5 * axes]))


@pytest.mark.parametrize("l_max", [0, 1, 4, 6, 9])
def test_sphericart_matches_the_recurrences(l_max):
    pytest.importorskip("sphericart")
    v = _vectors()
    assert harmonics_backend(v.device) == "sphericart"
    y, dy = spherical_harmonics(v, l_max)
    y0, dy0 = real_spherical_harmonics(v, l_max)
    assert y.shape == y0.shape and dy.shape == dy0.shape and y.dtype == torch.float64
    np.testing.assert_allclose(y.numpy(), y0.numpy(), rtol=0, atol=1e-12)
    scale = 1.0 + dy0.abs().amax().item()
    np.testing.assert_allclose(dy.numpy(), dy0.numpy(), rtol=0, atol=1e-12 * scale)
    y_only, none = spherical_harmonics(v, l_max, gradients=False)
    assert none is None
    np.testing.assert_allclose(y_only.numpy(), y0.numpy(), rtol=0, atol=1e-12)


def test_sphericart_torch_bindings_match():
    sct = pytest.importorskip("sphericart.torch")
    v = _vectors()
    y, dy = sct.SphericalHarmonics(6).compute_with_gradients(v)
    y0, dy0 = real_spherical_harmonics(v, 6)
    np.testing.assert_allclose(y.numpy(), y0.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(dy.numpy(), dy0.numpy(), rtol=0,
                               atol=1e-12 * (1 + dy0.abs().amax().item()))


def test_sphericart_runs_on_torch_thread_count():
    pytest.importorskip("sphericart")
    v = _vectors()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        spherical_harmonics(v, 3)
        _, runtimes = _spherical._sphericart_cpu(3)
        assert runtimes, "sphericart's OpenMP runtime was not found"
        assert all(lib.num_threads == 1 for lib in runtimes)
    finally:
        torch.set_num_threads(before)


def _soap_results():
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    si.rattle(0.05, seed=1)
    mol = molecule("CH3CH2OH")
    out = []
    for frames, species in ((si, [14]), (mol, [1, 6, 8])):
        d = SOAP(cutoff=4.0, n_max=5, l_max=4, species=species).compute(
            frames, gradients=True)
        out.append(d)
        mixed = SOAP(cutoff=4.0, n_max=5, l_max=4, species=species, species_mixing=1)
        out.append(mixed.compute(frames, gradients=True))
    return out


def test_soap_same_with_either_backend(monkeypatch):
    pytest.importorskip("sphericart")
    fast = _soap_results()
    monkeypatch.setattr(_spherical, "BACKEND", "gapkit")
    ours = _soap_results()
    for a, b in zip(fast, ours):
        for name in ("values", "gradients", "strain_gradients"):
            x, y = getattr(a, name), getattr(b, name)
            if x is None:
                assert y is None
                continue
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-12)
