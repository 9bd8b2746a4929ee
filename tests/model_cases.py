"""Shared cases of the GAP tests (tests/test_model.py, tests/test_io.py): the Tersoff Si
labeller, the small SOAP (and two-body) terms, the noise and the test structures."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.tersoff import Tersoff, TersoffParameters
from ase.cluster import Icosahedron

from gapkit import (
    SOAP,
    NoiseModel,
    SOAPKernel,
    Term,
    TwoBody,
    TwoBodyKernel,
)


def _tersoff_si() -> Tersoff:
    """Tersoff's Si(B) potential (PRB 37, 6991 (1988)), LAMMPS ``Si.tersoff`` values."""
    p = TersoffParameters(m=3.0, gamma=1.0, lambda3=1.3258, c=4.8381, d=2.0417, h=0.0,
                          n=22.956, beta=0.33675, lambda2=1.3258, B=95.373, R=3.0, D=0.2,
                          lambda1=3.2394, A=3224.6)
    return Tersoff({("Si", "Si", "Si"): p})


def _soap(**kw) -> SOAP:
    params = dict(cutoff=4.0, cutoff_width=1.0, n_max=4, l_max=3)
    params.update(kw)
    return SOAP(**params)


def _si_terms(two_body: bool = False) -> list[Term]:
    terms = [Term(_soap(), SOAPKernel(zeta=4, delta=1.0), n_sparse=20)]
    if two_body:
        terms.append(Term(TwoBody(cutoff=4.0, cutoff_width=1.0),
                          TwoBodyKernel(cutoff=4.0, cutoff_width=1.0, lengthscale=0.5, delta=0.3),
                          n_sparse=10, sparse_method="uniform"))
    return terms


SI_NOISE = NoiseModel(energy=0.002, forces=0.1, virial=0.02)


def _si_cell(rattle: float = 0.05, seed: int = 2, a: float = 5.43) -> Atoms:
    atoms = bulk("Si", "diamond", a=a, cubic=True)
    if rattle:
        atoms.rattle(rattle, seed=seed)
    return atoms


def _cuag_cluster(seed: int = 0, rattle: float = 0.1) -> Atoms:
    """13-atom Cu icosahedron with 4 atoms swapped for Ag (not periodic), rattled (Å)."""
    atoms = Icosahedron("Cu", 2)
    atoms.numbers[[1, 4, 7, 10]] = 47
    atoms.center(vacuum=5.0)
    atoms.pbc = False
    atoms.rattle(rattle, seed=seed)
    return atoms


def _far_frames() -> list[Atoms]:
    """Si frames far from the training data (±2 % strained diamond)."""
    squeezed = _si_cell(a=5.43 * 0.8)
    stretched = _si_cell(a=5.43 * 1.2)
    rng = np.random.default_rng(3)
    gas = Atoms("Si8", positions=rng.uniform(0, 5.43, size=(8, 3)), cell=[5.43] * 3, pbc=True)
    return [squeezed, stretched, gas]
