"""Reusable checks for gapkit descriptors, kernels and models.

Like e3nn's ``assert_equivariant`` and gpytorch's shipped test cases, these helpers are
public so that anyone who writes a new descriptor, kernel or model can run the same
battery on it::

    from gapkit.testing import assert_invariant, check_forces, check_gradients, check_kernel

    assert_invariant(descriptor, atoms)          # rotation, inversion, translation, ...
    errors = check_gradients(descriptor, atoms)  # analytic vs central differences
    check_kernel(lambda: MyKernel(delta=1.3), sample)   # the descriptor-kernel battery
    errors = check_forces(model, atoms)          # forces (and virial) = -dE/dx

Every check raises :class:`AssertionError` with a message that names what failed, the
worst entry and the tolerance; the tolerances come from one table, :data:`TOLERANCES`,
keyed by dtype.

A *descriptor* here is any object with a method

``compute(frames: list[ase.Atoms], *, gradients: bool | list[str] = False)``

that returns a :class:`gapkit.descriptors.base.DescriptorResult`, where
``gradients=True`` means ``["positions", "strain"]``. Only the result's attributes are
used (``values``, ``centre_structure``, ``centre_atom``, ``n_atoms``, ``gradients``,
``gradient_centre``, ``gradient_atom``, ``strain_gradients``). A *kernel* is a
:class:`gapkit.kernels.DescriptorKernel`; a *model* is an ASE calculator, an object
with ``predict(frames)`` (:class:`gapkit.GAP`, :class:`gapkit.gp.ExactGP`) or a
function of the atoms (see :func:`check_forces`). Units: lengths Å, energies eV,
forces eV/Å, virials eV (ASE's ``-stress * volume``).

The strain convention is the one of ``DescriptorResult``: the homogeneous deformation
:math:`\\mathbf r \\to (\\mathbf 1 + \\epsilon)\\, \\mathbf r` of every position and cell
vector, i.e. ``positions @ (I + eps).T`` and ``cell @ (I + eps).T``, with the nine
components :math:`\\epsilon_{ab}` treated as independent (not symmetrised).

The package: :mod:`~gapkit.testing.tolerances` (:data:`TOLERANCES`),
:mod:`~gapkit.testing.descriptors` (invariances, gradients), :mod:`~gapkit.testing.kernels`
(:func:`check_kernel`) and :mod:`~gapkit.testing.forces` (:func:`check_forces`);
:func:`label` labels one frame for a test.
"""

from __future__ import annotations

from typing import Any

from ase import Atoms

from .descriptors import (
    TRANSFORMS,
    assert_invariant,
    check_gradients,
    dense_position_gradients,
    numerical_gradients,
    per_atom_values,
    random_rotation,
)
from .forces import check_forces
from .kernels import KERNEL_CHECKS, check_kernel
from .tolerances import (
    FINITE_DIFFERENCE_STEP,
    GRADIENT_RTOL,
    INVARIANCE_ATOL,
    TOLERANCES,
    tolerances_for,
)

__all__ = [
    "FINITE_DIFFERENCE_STEP",
    "GRADIENT_RTOL",
    "INVARIANCE_ATOL",
    "KERNEL_CHECKS",
    "TOLERANCES",
    "TRANSFORMS",
    "assert_invariant",
    "check_forces",
    "check_gradients",
    "check_kernel",
    "dense_position_gradients",
    "label",
    "numerical_gradients",
    "per_atom_values",
    "random_rotation",
    "tolerances_for",
]


def label(atoms: Atoms, calc: Any, *, virial: bool = True) -> Atoms:
    """A labelled copy of one frame: :func:`gapkit.generate.label` with ``store="info"``.

    ``calc``'s energy (eV) goes to ``info["energy"]``, its forces (eV/Å) to
    ``arrays["forces"]`` and, for periodic cells with ``virial``, the virial (eV,
    ``-stress * volume``) to ``info["virial"]`` (gap_fit's keys), with no calculator
    attached, so the frame reads like one loaded from a reference-data file and a test
    can edit a label. ``atoms`` itself is not modified (before 0.2 it was): use the
    returned frame.
    """
    from ..labelling import label as generate_label

    properties = ["energy", "forces"] + (["virial"] if virial and atoms.pbc.all() else [])
    return generate_label([atoms], calc, properties=properties, progress=False,
                          store="info")[0]
