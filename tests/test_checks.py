"""gapkit._checks: the one "integer >= n" and "finite number > 0" rule of every layer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gapkit._checks import count, is_integer, is_number, positive


@pytest.mark.parametrize("value", [4, np.int64(4), 4.0, np.array([4])])
def test_count_takes_integers_and_integral_floats(value):
    assert count(value, "zeta") == 4 and type(count(value, "zeta")) is int


@pytest.mark.parametrize("value", [True, "4", 0, 2.5, math.nan, math.inf, None, [1, 2]])
def test_count_refuses_the_rest_naming_the_argument(value):
    with pytest.raises(ValueError, match=r"zeta must be an integer >= 1, got "):
        count(value, "zeta")


@pytest.mark.parametrize("value", [1.5, np.float64(1.5), torch.tensor(1.5),
                                   torch.tensor([1.5], requires_grad=True), 3])
def test_positive_takes_numbers_and_tensors(value):
    assert positive(value, "delta", "eV") == pytest.approx(1.5 if value != 3 else 3.0)


@pytest.mark.parametrize("value", [0, -1.0, math.inf, math.nan, True, "1.0", None,
                                   np.ones(2)])
def test_positive_refuses_the_rest_with_unit(value):
    with pytest.raises(ValueError, match=r"cutoff must be a finite number > 0 Å, got "):
        positive(value, "cutoff", "Å")


def test_allow_zero_and_what():
    assert positive(0.0, "b_std", allow_zero=True) == 0.0
    with pytest.raises(ValueError, match=r"b_std must be a finite number >= 0, got -1"):
        positive(-1, "b_std", allow_zero=True)
    with pytest.raises(ValueError, match=r"timestep must be a finite time > 0 fs"):
        positive(0, "timestep", "fs", what="time")


def test_predicates():
    assert is_integer(3) and is_integer(np.int32(3))
    assert not is_integer(True) and not is_integer(3.0)
    assert is_number(2) and is_number(np.float32(2.5)) and is_number(torch.tensor(1.0))
    assert not is_number(True) and not is_number("2") and not is_number(math.inf)


def test_constructors_use_the_rule():
    """A kernel, a descriptor and the model say the same thing for the same mistake."""
    from gapkit import GAP, SOAP, SOAPKernel

    with pytest.raises(ValueError, match="zeta must be an integer >= 1, got True"):
        SOAPKernel(zeta=True)
    with pytest.raises(ValueError, match="delta must be a finite number > 0 eV, got 'a'"):
        SOAPKernel(delta="a")
    with pytest.raises(ValueError, match="delta must be a finite number > 0 eV, got True"):
        SOAPKernel(delta=True)  # taken as 1 eV before
    with pytest.raises(ValueError, match="atom_sigma must be a finite number > 0 Å"):
        SOAP(atom_sigma=0.0)
    with pytest.raises(ValueError, match="batch_atoms must be an integer >= 1, got 0"):
        GAP(batch_atoms=0)
