"""gapkit.kernels.SOAPKernel: argument checks the battery does not make."""

from __future__ import annotations

import pytest

from gapkit import SOAPKernel


@pytest.mark.parametrize("zeta", [0, -1, 2.5, True])
def test_bad_zeta(zeta):
    with pytest.raises(ValueError, match="zeta"):
        SOAPKernel(zeta=zeta)
