"""The radial-integral table against its definition, integrated by scipy's adaptive quad."""

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import ive

from gapkit.descriptors._radial import (gto_orthonormalisation, gto_sigmas,
                                        radial_integral_table)


def _by_quad(n, l, d, n_max, sigma, radius):
    norms, lowdin = gto_orthonormalisation(n_max, radius)
    sig = gto_sigmas(n_max, radius)

    def integrand(r):
        basis = sum(lowdin[n, k] * norms[k] * r**k * np.exp(-0.5 * r**2 / sig[k] ** 2)
                    for k in range(n_max))
        x = r * d / sigma**2
        # e^{-(r^2+d^2)/2σ^2} i_l(x) = e^{-(r-d)^2/2σ^2} i_l(x) e^{-x}
        bessel = np.sqrt(np.pi / (2 * x)) * ive(l + 0.5, x) if x > 0 else float(l == 0)
        return r**2 * basis * np.exp(-0.5 * (r - d) ** 2 / sigma**2) * bessel

    value, _ = quad(integrand, 0.0, 4.0 * radius, points=[d], limit=400,
                    epsabs=0.0, epsrel=1e-13)
    return 4 * np.pi * (np.pi * sigma**2) ** -0.75 * value


@pytest.mark.parametrize("radius", [5.0, 20.0])  # 20 Å: each distance sees its window only
def test_table_is_the_integral_of_its_definition(radius):
    n_max, l_max, sigma = 4, 3, 0.5
    d = np.array([0.0, 0.3, 0.37 * radius, radius - 0.1, radius])
    values, derivs, seconds = radial_integral_table(n_max, l_max, sigma, radius, d)
    scale = np.abs(values).max()
    for i, di in enumerate(d):
        for n in range(n_max):
            for l in range(l_max + 1):
                assert values[i, n, l] == pytest.approx(
                    _by_quad(n, l, di, n_max, sigma, radius), abs=1e-11 * scale)
    # the derivatives are those of the values (central differences, step 1e-4 Å)
    h = 1e-4
    plus = radial_integral_table(n_max, l_max, sigma, radius, d[1:4] + h)
    minus = radial_integral_table(n_max, l_max, sigma, radius, d[1:4] - h)
    for k, table in enumerate((derivs, seconds)):
        fd = (plus[k] - minus[k]) / (2 * h)
        assert np.allclose(table[1:4], fd, atol=1e-6 * np.abs(table).max())
