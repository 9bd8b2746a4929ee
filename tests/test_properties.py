"""Property-based checks (hypothesis) over random cells, positions and species: the SOAP
descriptor is invariant under rotation, translation, permutation and the periodic image
chosen; a fitted GAP predicts finite numbers, non-negative variances, forces equal to
−dE/dx, rotation-invariant energies and variances and rotation-covariant forces
(issue 16). Bounded time: a fixed number of examples, derandomized, so CI is reproducible.
"""

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.emt import EMT
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from gapkit import GAP, SOAP, NoiseModel, SOAPKernel, Term

SPECIES = (29, 47)  # Cu, Ag: EMT labels them
MIN_DIST = 1.9  # Å
BOUNDED = settings(max_examples=25, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.too_slow,
                                          HealthCheck.filter_too_much])


def _soap() -> SOAP:
    return SOAP(cutoff=4.0, cutoff_width=1.0, n_max=3, l_max=2, atom_sigma=0.5,
                species=list(SPECIES))


def _min_distance(atoms: Atoms) -> float:
    if len(atoms) < 2:
        return np.inf
    d = atoms.get_all_distances(mic=bool(atoms.pbc.any()))
    return float(d[np.triu_indices(len(atoms), 1)].min())


@st.composite
def frames(draw, periodic: bool | None = None):
    """A random frame: 2–6 atoms of Cu/Ag, a periodic triclinic cell (side 4.5–7 Å, shear
    up to 0.3) or an open cluster, no two atoms closer than 1.9 Å."""
    n = draw(st.integers(2, 6))
    numbers = draw(st.lists(st.sampled_from(SPECIES), min_size=n, max_size=n))
    if periodic is None:
        periodic = draw(st.booleans())
    floats = st.floats(0.0, 1.0, allow_nan=False)
    frac = np.array(draw(st.lists(st.lists(floats, min_size=3, max_size=3),
                                  min_size=n, max_size=n)))
    if periodic:
        sides = draw(st.lists(st.floats(4.5, 7.0), min_size=3, max_size=3))
        shear = draw(st.lists(st.floats(-0.3, 0.3), min_size=3, max_size=3))
        cell = np.diag(sides)
        cell[1, 0], cell[2, 0], cell[2, 1] = (s * sides[0] for s in shear)
        atoms = Atoms(numbers=numbers, scaled_positions=frac, cell=cell, pbc=True)
    else:
        atoms = Atoms(numbers=numbers, positions=frac * 4.0 * n ** (1 / 3))
    assume(_min_distance(atoms) > MIN_DIST)
    return atoms


def _rotate(atoms: Atoms, R: np.ndarray) -> Atoms:
    out = atoms.copy()
    out.positions = atoms.positions @ R.T
    if atoms.pbc.any():
        out.cell = atoms.cell.array @ R.T
    return out


rotations = st.integers(0, 2**31 - 1).map(lambda s: Rotation.random(random_state=s).as_matrix())


@BOUNDED
@given(frames(), rotations, st.integers(0, 2**31 - 1))
def test_soap_invariances(atoms, R, seed):
    soap = _soap()
    ref = soap.compute([atoms]).values
    assert np.all(np.isfinite(ref))
    # rotation (cell rotated with the atoms)
    np.testing.assert_allclose(soap.compute([_rotate(atoms, R)]).values, ref, atol=1e-10)
    # translation, and for a periodic cell the image each atom is wrapped to
    moved = atoms.copy()
    moved.positions += np.array([0.37, -1.2, 2.9])
    if atoms.pbc.any():
        moved.wrap()
    np.testing.assert_allclose(soap.compute([moved]).values, ref, atol=1e-10)
    # permutation: the centres follow their atoms
    perm = np.random.default_rng(seed).permutation(len(atoms))
    np.testing.assert_allclose(soap.compute([atoms[perm]]).values, ref[perm], atol=1e-10)


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(0)
    train = []
    while len(train) < 16:
        n = int(rng.integers(3, 7))
        a = Atoms(numbers=rng.choice(SPECIES, n), scaled_positions=rng.random((n, 3)),
                  cell=np.diag(rng.uniform(4.5, 6.5, 3)), pbc=True)
        if _min_distance(a) > 2.0:
            a.calc = EMT()
            a.info["energy"] = a.get_potential_energy()
            a.arrays["forces"] = a.get_forces()
            a.calc = None
            train.append(a)
    return GAP([Term(_soap(), SOAPKernel(zeta=2, delta=0.5), n_sparse=30)],
               noise=NoiseModel(energy=0.005, forces=0.05, virial=0.05),
               use=("energy", "forces"), progress=False).fit(train)


@BOUNDED
@given(frames(), rotations)
def test_prediction_properties(model, atoms, R):
    pred = model.predict([atoms], virial=False, forces_variance="exact")
    assert np.isfinite(pred.energy).all() and np.isfinite(pred.forces).all()
    assert (pred.energy_variance >= 0).all() and (pred.forces_variance >= 0).all()
    assert np.isfinite(pred.energy_variance).all() and np.isfinite(pred.forces_variance).all()
    # rotation: energy and variance invariant, forces covariant
    rot = model.predict([_rotate(atoms, R)], virial=False)
    np.testing.assert_allclose(rot.energy, pred.energy, atol=1e-8)
    np.testing.assert_allclose(rot.energy_variance, pred.energy_variance,
                               rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(rot.forces, pred.forces @ R.T, atol=1e-7)


@BOUNDED
@given(frames(), st.integers(0, 5), st.integers(0, 2))
def test_forces_are_minus_energy_gradient(model, atoms, atom, axis):
    atom = atom % len(atoms)
    forces = model.predict([atoms], virial=False).forces
    h = 1e-4
    energies = []
    for sign in (1, -1):
        moved = atoms.copy()
        moved.positions[atom, axis] += sign * h
        energies.append(model.predict([moved], virial=False).energy[0])
    numeric = -(energies[0] - energies[1]) / (2 * h)
    assert abs(numeric - forces[atom, axis]) < 1e-5 + 1e-4 * abs(numeric)
