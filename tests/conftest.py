"""Shared fixtures: small seeded structures, a seeded random generator and the one
strained-and-rattled labelled cells factory (:func:`make_strained_cells`, also the fixture
``strained_cells``; test modules import it as ``from conftest import make_strained_cells``).

Every structure fixture returns a fresh ``ase.Atoms`` (function scope), so a test may
move atoms or change the cell without affecting another test. Lengths are in Å.
Tolerances come from ``gapkit.testing.TOLERANCES``. Markers (pyproject.toml): ``slow``
(deselected by ``make test-fast``) and ``gpu`` (skipped here when torch sees no CUDA
device).
"""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from gapkit.data import bundled_path

# The test systems are small: one thread avoids OpenMP threads spin-waiting for a core
# that another process holds (10-45x slowdowns seen on a loaded 2-core machine).
torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` when there is no CUDA device, saying so."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng() -> np.random.Generator:
    """The seeded random generator of the test conventions."""
    return np.random.default_rng(0)


@pytest.fixture
def si64_rattled() -> Atoms:
    """64-atom cubic diamond Si (2x2x2 conventional cells, a = 5.43 Å), rattled by 0.05 Å."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    return atoms


@pytest.fixture
def si8_rattled() -> Atoms:
    """8-atom cubic diamond Si cell (a = 5.43 Å), rattled by 0.05 Å: cheap gradient checks."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.05, seed=2)
    return atoms


@pytest.fixture
def ethanol_rmd17() -> Atoms:
    """First frame of the bundled rMD17 ethanol subset (C2H5OH, not periodic)."""
    atoms = ase.io.read(bundled_path("ethanol_rmd17_200.xyz"), index=0)
    atoms.calc = None
    atoms.pbc = False
    return atoms


@pytest.fixture
def acetamide() -> Atoms:
    """Acetamide CH3CONH2 (C, H, O and N; not periodic), rattled by 0.05 Å."""
    atoms = molecule("CH3CONH2")
    atoms.rattle(0.05, seed=3)
    return atoms


@pytest.fixture
def triclinic_two_species() -> Atoms:
    """A periodic Si/C triclinic cell whose edges (2.5-2.8 Å) are all shorter than the
    cutoffs used in the tests, so that atoms see several images of every atom, their
    own included."""
    cell = np.array([[2.60, 0.00, 0.00],
                     [0.70, 2.45, 0.00],
                     [0.40, -0.55, 2.55]])
    scaled = np.array([[0.02, 0.03, 0.01],
                       [0.52, 0.46, 0.57]])
    return Atoms("SiC", scaled_positions=scaled, cell=cell, pbc=True)


def make_strained_cells(base: Atoms, n: int, *, seed: int, strain: float, rattle: float,
                        calc, virial: bool = True) -> list[Atoms]:
    """``n`` labelled copies of ``base``: the cell strained by a random symmetric strain
    (entries of standard deviation ``strain``, symmetrised; none when 0), then the atoms
    rattled by ``rattle`` Å, each labelled by a fresh ``calc()`` (an ASE calculator class or
    factory) through :func:`gapkit.testing.label` (energy, forces and, with ``virial`` and a
    periodic cell, the virial, under gap_fit's keys). One stream seeded by ``seed`` draws
    the strains and the rattle seeds, so a call gives the same cells every time."""
    from gapkit.testing import label

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = base.copy()
        if strain:
            eps = rng.normal(scale=strain, size=(3, 3))
            eps = 0.5 * (eps + eps.T)
            atoms.set_cell(atoms.cell @ (np.eye(3) + eps), scale_atoms=True)
        atoms.rattle(rattle, seed=int(rng.integers(1 << 30)))
        out.append(label(atoms, calc(), virial=virial))
    return out


@pytest.fixture(scope="session")
def strained_cells():
    """:func:`make_strained_cells`, as a fixture."""
    return make_strained_cells


def si_frames(n: int) -> list:
    """The first ``n`` bundled Si training frames of at most 64 atoms, with their energies
    also under ``REF_energy`` (the energy key of :func:`make_si_model`)."""
    from gapkit.data import load_bundled

    out = [a for a in load_bundled("Si_train.xyz") if len(a) <= 64][:n]
    for atoms in out:
        atoms.info["REF_energy"] = atoms.get_potential_energy()
    return out


def make_si_model(**kw):
    """An unfitted small SOAP GAP for Si with every setting away from its default: noise
    with a config_type override, e0 given, a core-repulsion baseline, another energy key,
    batch size and seed (what get_params, clone and copies must carry)."""
    from gapkit import GAP, SOAP, NoiseModel, SOAPKernel, Term
    from gapkit.baselines import CoreRepulsion

    soap = SOAP(cutoff=4.0, cutoff_width=1.0, n_max=3, l_max=2, atom_sigma=0.5)
    settings = dict(noise=NoiseModel(energy=0.003, forces=0.05, virial=0.05,
                                     config_type={"Vacancy": {"forces": 0.08}}),
                    e0={"Si": -158.5}, progress=False, baselines=[CoreRepulsion()],
                    energy_key="REF_energy", batch_atoms=128, random_state=7)
    return GAP([Term(soap, SOAPKernel(zeta=2), n_sparse=20)], **{**settings, **kw})
