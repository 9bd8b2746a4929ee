"""``gapkit.kernels.padded_entries_by_atom``, the layout the kernels' batched force prior
variances read: every atom's gradient entries in their order, zero padding, a mask of
real same-type pairs, and the same blocks whatever the chunk size."""

from __future__ import annotations

import numpy as np
import torch

from gapkit import SOAPKernel
from gapkit.kernels import DescriptorKernel, padded_entries_by_atom


def _layout(rng, n_atoms=7, n_centres=9, d=5):
    """Entries in a shuffled order, atoms with 1 to 6 entries (one atom with none)."""
    atom = np.concatenate([np.full(int(c), a) for a, c in
                           enumerate(rng.integers(1, 7, size=n_atoms))])
    atom[atom == 3] = 4  # atom 3 owns no entry
    rng.shuffle(atom)
    centre = torch.as_tensor(rng.integers(0, n_centres, size=atom.size))
    types = torch.as_tensor(rng.integers(0, 2, size=n_centres))
    q = torch.as_tensor(rng.normal(size=(n_centres, d)))
    q = q / q.norm(dim=1, keepdim=True)
    g = torch.as_tensor(rng.normal(size=(atom.size, 3, d)))
    return q, g, centre, atom, types, n_atoms


def test_blocks_hold_each_atoms_entries_in_order_with_zero_padding(rng):
    q, g, centre, atom, types, n_atoms = _layout(rng)
    counts = np.bincount(atom, minlength=n_atoms)
    seen = 0
    for target in (1, 3 * int(counts.max()) * q.shape[1] * 8 * 2, 1 << 30):  # 1, 2+, all
        seen = 0
        widths = []
        for a0, a1, qa, ga, mask in padded_entries_by_atom(q, g, centre, atom, types, n_atoms,
                                                           target_bytes=target):
            # padded to the chunk's largest count, within target_bytes (or one atom)
            width = max(int(counts[a0:a1].max()), 1)
            widths.append(width)
            assert qa.shape == (a1 - a0, width, q.shape[1])
            assert a1 - a0 == 1 or (a1 - a0) * width * 3 * q.shape[1] * 8 <= target
            for i in range(a0, a1):
                ent = np.flatnonzero(atom == i)  # this atom's entries, in their order
                n = ent.size
                assert torch.equal(ga[i - a0, :n], g[ent])
                assert torch.equal(ga[i - a0, n:], torch.zeros_like(ga[i - a0, n:]))
                assert torch.equal(qa[i - a0, :n], q[centre[ent]])
                assert torch.all(qa[i - a0].norm(dim=1) > 0)  # padding: a real descriptor
                t = types[centre[ent]]
                expected = torch.zeros((width, width), dtype=torch.bool)
                expected[:n, :n] = t[:, None] == t[None, :]
                assert torch.equal(mask[i - a0], expected)
            seen += a1 - a0
        assert seen == n_atoms
        if target == 1:  # one atom per chunk: each padded to its own count
            assert widths == [max(int(c), 1) for c in counts]


def test_soap_force_prior_variance_equals_the_generic_loop_on_uneven_atoms(rng):
    q, g, centre, atom, types, n_atoms = _layout(rng)
    kernel = SOAPKernel(zeta=4, delta=0.7)
    with torch.no_grad():
        fast = kernel.force_prior_variance(q, g, centre, atom, types, n_atoms)
        generic = DescriptorKernel.force_prior_variance(kernel, q, g, centre, atom, types,
                                                        n_atoms)
    assert float(fast[3].abs().max()) == 0.0  # no entries, no variance
    torch.testing.assert_close(fast, generic, rtol=1e-12, atol=1e-14)
