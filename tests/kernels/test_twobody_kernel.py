"""gapkit.kernels.TwoBodyKernel: what the battery cannot know — the cutoff it takes from
its TwoBody descriptor (one owner: a kernel cutoff that differs is refused), the smooth
zero at that cutoff, and its float64 length scale."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.emt import EMT

from gapkit import GAP, SOAP, NoiseModel, Term, TwoBody, TwoBodyKernel
from gapkit.generate import label
from gapkit.testing import TOLERANCES

DTYPE = torch.float64
TOL = TOLERANCES[DTYPE]


# -- two-body specifics ------------------------------------------------------------------
@pytest.mark.parametrize("lengthscale", [0.0, -0.5, float("nan")])
def test_bad_lengthscale(lengthscale):
    with pytest.raises(ValueError, match="lengthscale"):
        TwoBodyKernel(lengthscale=lengthscale)


def test_twobody_vanishes_beyond_the_cutoff():
    k = TwoBodyKernel(cutoff=5.0, cutoff_width=1.0, lengthscale=0.7)
    inside = torch.tensor([[2.0], [3.9]], dtype=DTYPE)
    outside = torch.tensor([[5.0], [5.3]], dtype=DTYPE)
    assert torch.all(k.value(inside, outside) == 0)
    g = torch.ones(2, 3, 1, dtype=DTYPE)
    assert torch.all(k.grad_contract(outside, inside, g, torch.tensor([0, 1])) == 0)
    # inside the flat part of the cutoff the kernel is the bare squared exponential
    expected = math.exp(-0.5 * (2.0 - 3.9) ** 2 / 0.7**2)
    assert k.value(inside, inside)[0, 1].item() == pytest.approx(expected, rel=TOL["algebra"])


def test_twobody_lengthscale_is_exact_float64():
    k = TwoBodyKernel(lengthscale=0.3)
    assert k.raw_lengthscale.dtype == DTYPE
    assert k.lengthscale.item() == pytest.approx(0.3, rel=1e-15)


def test_twobody_without_a_cutoff_says_where_to_get_one():
    k = TwoBodyKernel(lengthscale=0.5)
    assert k.get_params()["cutoff"] is None
    with pytest.raises(ValueError, match="TwoBody descriptor"):
        k.value(torch.ones(2, 1, dtype=DTYPE), torch.ones(2, 1, dtype=DTYPE))


# -- one owner of the cutoff -------------------------------------------------------------
def _dimers(distances):
    frames = [Atoms("Cu2", positions=[[0, 0, 0], [r, 0, 0]]) for r in distances]
    return label(frames, EMT(), progress=False)


def test_two_body_kernel_takes_the_descriptor_cutoff():
    term = Term(TwoBody(cutoff=4.0, cutoff_width=0.8), "twobody")
    assert term.kernel.cutoff_fn is term.descriptor.cutoff_fn
    assert term.kernel.get_params()["cutoff"] == 4.0
    assert term.kernel.get_params()["cutoff_width"] == 0.8
    assert Term(TwoBody(cutoff=3.5), TwoBodyKernel(lengthscale=0.3)).kernel.cutoff_fn.cutoff == 3.5


def test_a_kernel_cutoff_that_differs_from_the_descriptor_is_refused():
    with pytest.raises(ValueError, match="disagrees with its descriptor"):
        Term(TwoBody(cutoff=4.0), TwoBodyKernel(cutoff=5.0, cutoff_width=1.0))
    with pytest.raises(ValueError, match="disagrees"):
        Term(TwoBody(cutoff=4.0, cutoff_width=1.0), TwoBodyKernel(cutoff=4.0, cutoff_width=0.5))
    # agreeing explicit values are fine
    Term(TwoBody(cutoff=4.0, cutoff_width=0.5), TwoBodyKernel(cutoff=4.0, cutoff_width=0.5))


def test_two_body_kernel_needs_a_pair_descriptor():
    with pytest.raises(ValueError, match="TwoBody descriptor"):
        Term(SOAP(cutoff=4.0), "twobody")


def test_unbound_two_body_kernel_says_what_to_do():
    with pytest.raises(ValueError, match="no cutoff yet"):
        import torch

        TwoBodyKernel().value(torch.ones((2, 1), dtype=torch.float64),
                              torch.ones((3, 1), dtype=torch.float64))


def test_two_body_energy_goes_smoothly_to_zero_at_the_descriptor_cutoff():
    """``Term(TwoBody(cutoff=4.0), "twobody")`` gave the kernel a 5 Å cutoff in 0.1:
    the energy jumped from 0.024 eV at 3.999 Å to 0 at 4.001 Å."""
    train = _dimers(np.linspace(2.0, 3.9, 12))
    model = GAP([Term(TwoBody(cutoff=4.0, cutoff_width=1.0), "twobody", n_sparse=10,
                      sparse_method="uniform")], noise=NoiseModel(energy=0.01, forces=0.05),
                e0="zero", progress=False).fit(train)
    probe = [Atoms("Cu2", positions=[[0, 0, 0], [r, 0, 0]]) for r in (3.999, 4.001, 3.99)]
    pred = model.predict(probe, virial=False, return_variance=False)
    e_in, e_out, e_closer = pred.energy
    assert e_out == 0.0
    assert abs(e_closer) > 1e-4  # the fit does put energy near the cutoff
    # the cosine cutoff is C1: the energy 1 mÅ inside is quadratic in the distance to
    # r_c, 1/100 of its value 10 mÅ inside (0.1: the same, 0.024 eV)
    assert abs(e_in) < 0.02 * abs(e_closer)
