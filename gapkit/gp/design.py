"""Design-matrix rows: observations as linear functionals of the local energies.

For a term with kernel ``k`` and sparse points ``z_m`` the local energy of centre
``c`` is ``eps(q_c) = sum_m alpha_m k(q_c, z_m)``, so every observation row is the
same functional applied to ``k(., z_m)``:

* total energy of frame A: ``sum_{c in A} k(q_c, z_m)``;
* force on atom j along a: ``-sum_e dk(q_{c_e}, z_m)/dq . dq_{c_e}/dr_{j,a}`` over the
  gradient entries ``e`` of atom j;
* virial (a, b): ``-sum_{c in A} dk(q_c, z_m)/dq . dq_c/d epsilon_ab`` (symmetrised).

The derivative rows are GEMMs of the descriptor gradients against the sparse points
(``kernel.grad_contract``), reduced with ``index_add``; nothing is differentiated by
autograd column by column. Kernels between centres of different type are zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .observations import VOIGT

__all__ = ["SparseSet", "functional_rows", "type_mask"]

#: gradient entries contracted at once (memory: entries x 3 x M floats)
ENTRY_CHUNK = 1024


@dataclass
class SparseSet:
    """Sparse (inducing) points of one term: descriptor rows and their kernel types."""

    points: torch.Tensor  # (M, D)
    types: torch.Tensor  # (M,)

    @property
    def n(self) -> int:
        return int(self.points.shape[0])


def type_mask(types1: torch.Tensor, types2: torch.Tensor, dtype) -> torch.Tensor:
    return (types1[:, None] == types2[None, :]).to(dtype)


def functional_rows(kernel, result, sparse: SparseSet, *, energy: bool, forces: bool,
                    virial: bool, local: bool = False, unit: bool = False):
    """Kernel functionals of one descriptor result against the sparse points.

    Parameters
    ----------
    kernel : gapkit.kernels.DescriptorKernel
    result : DescriptorResult
        With position gradients when ``forces`` and strain gradients when ``virial``.
    sparse : SparseSet
    unit : bool
        Use the unit kernel (``delta = 1``): rows then scale with ``delta^2``.

    Returns
    -------
    dict with (when asked) ``energy`` (n_frames, M), ``forces`` (n_atoms_total, 3, M),
    ``virial`` (n_frames, 6, M) in Voigt order, ``local`` (n_centres, M).
    """
    dtype = sparse.points.dtype
    q = result.torch("values", dtype=dtype)
    z = sparse.points
    types = torch.as_tensor(result.centre_types)
    mask = type_mask(types, sparse.types, dtype)
    value = kernel.unit_value if unit else kernel.value
    contract = kernel.unit_grad_contract if unit else kernel.grad_contract
    n_frames = result.n_structures
    out = {}
    structure = torch.as_tensor(result.centre_structure)
    if energy or local:
        kc = value(q, z) * mask
        if local:
            out["local"] = kc
        if energy:
            out["energy"] = torch.zeros((n_frames, z.shape[0]), dtype=dtype).index_add_(
                0, structure, kc)
    if forces:
        g = result.torch("gradients", dtype=dtype)
        centre = torch.as_tensor(result.gradient_centre)
        atom = torch.as_tensor(result.gradient_atom_global)
        rows = torch.zeros((int(result.n_atoms.sum()), 3, z.shape[0]), dtype=dtype)
        for e0 in range(0, g.shape[0], ENTRY_CHUNK):
            sl = slice(e0, e0 + ENTRY_CHUNK)
            part = contract(q, z, g[sl], centre[sl]) * mask[centre[sl]][:, None, :]
            rows.index_add_(0, atom[sl], part, alpha=-1.0)
        out["forces"] = rows
    if virial:
        s = result.torch("strain_gradients", dtype=dtype)
        a_idx = [a for a, _ in VOIGT]
        b_idx = [b for _, b in VOIGT]
        sym = 0.5 * (s[:, a_idx, b_idx] + s[:, b_idx, a_idx])  # (n_c, 6, D)
        rows = torch.zeros((n_frames, 6, z.shape[0]), dtype=dtype)
        centres = torch.arange(q.shape[0])
        chunk = max(1, ENTRY_CHUNK // 2)
        for c0 in range(0, q.shape[0], chunk):
            sl = slice(c0, c0 + chunk)
            part = contract(q, z, sym[sl], centres[sl]) * mask[sl][:, None, :]
            rows.index_add_(0, structure[sl], part, alpha=-1.0)
        out["virial"] = rows
    return out


def gather_rows(blocks: dict, obs, atom_offsets: np.ndarray) -> torch.Tensor:
    """Rows of ``blocks`` (from :func:`functional_rows`) in the order of ``obs``.

    ``obs.frame`` must index the frames of the result the blocks came from.
    """
    some = next(iter(blocks.values()))
    m = some.shape[-1]
    out = torch.empty((obs.n_rows, m), dtype=some.dtype)
    kinds = obs.kind
    sel = np.nonzero(kinds == 0)[0]
    if sel.size:
        out[torch.as_tensor(sel)] = blocks["energy"][torch.as_tensor(obs.frame[sel])]
    sel = np.nonzero(kinds == 1)[0]
    if sel.size:
        atoms = atom_offsets[obs.frame[sel]] + obs.atom[sel]
        out[torch.as_tensor(sel)] = blocks["forces"][torch.as_tensor(atoms),
                                                     torch.as_tensor(obs.component[sel])]
    sel = np.nonzero(kinds == 2)[0]
    if sel.size:
        out[torch.as_tensor(sel)] = blocks["virial"][torch.as_tensor(obs.frame[sel]),
                                                     torch.as_tensor(obs.component[sel])]
    return out
