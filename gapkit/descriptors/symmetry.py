"""Atom-centred symmetry functions (Behler–Parrinello), with analytic gradients."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .._checks import is_number, positive
from ..neighbors import build_neighbor_list
from .base import Descriptor, DescriptorResult, fold_pair_gradients, resolve_species
from .cutoff import CosineCutoff
from .twobody import species_pairs

__all__ = ["CUTOFF_FUNCTIONS", "SymmetryFunctions", "default_g2", "default_g4"]

#: Names of the radial cutoff functions :class:`SymmetryFunctions` knows.
CUTOFF_FUNCTIONS = ("cosine", "tanh", "polynomial")

#: Triplets (neighbour pairs j < k of one centre) processed at once; the working set is
#: a few tens of floats per triplet and angular function.
TRIPLET_CHUNK = 16384


# ------------------------------------------------------------------------------------------
# default parameter sets
# ------------------------------------------------------------------------------------------
def default_g2(cutoff: float, n: int = 5) -> list[list[float]]:
    """The default radial set: ``n + 1`` centred and ``n`` shifted Gaussians, Å^-2 and Å.

    Centred (``r_s = 0``): ``η_m = (n^{m/n} / r_c)^2`` for ``m = 0..n``, Gaussian widths
    ``1/sqrt(2η)`` from ``r_c/√2`` down to ``r_c/(n√2)``. Shifted: centres on the
    geometric grid ``r_{s,m} = r_c / n^{m/n}`` (``m = 1..n``, from about 0.72 r_c down to
    r_c/n), each as wide as its gap to the next centre, ``η_m = 1/(r_{s,m} -
    r_{s,m+1})^2``. The grid is densest at short range, where bonds are (1-1.5 Å in CHNO
    molecules, 2.35 Å in Si for r_c = 5 Å). This is the "centred + shifted" recipe of
    Imbalzano et al., J. Chem. Phys. 148, 241730 (2018).

    Parameters
    ----------
    cutoff : float
        ``r_c``, Å.
    n : int
        Grid size (``2n + 1`` functions).

    Returns
    -------
    list of [eta, r_s]
        ``eta`` in Å^-2, ``r_s`` in Å.
    """
    rc = float(cutoff)
    centred = [[(n ** (m / n) / rc) ** 2, 0.0] for m in range(n + 1)]
    shifts = [rc / n ** (m / n) for m in range(1, n + 2)]
    shifted = [[1.0 / (shifts[m] - shifts[m + 1]) ** 2, shifts[m]] for m in range(n)]
    return centred + shifted


def default_g4(cutoff: float) -> list[list[float]]:
    """The default angular set: ``η ∈ {1, 4} / r_c²``, ``ζ ∈ {1, 2, 4, 16}``, ``λ = ±1``.

    ``ζ`` sharpens the angular resolution around θ = 0 (λ = +1) and θ = π (λ = -1); the
    two η weight triplets of size ``sqrt(r_ij² + r_ik² + r_jk²)`` about ``r_c`` and
    ``r_c / 2`` (the tetrahedral first shell of Si, CHNO bond angles) by ``1/e``.
    16 functions per neighbour-species pair.

    Returns
    -------
    list of [eta, zeta, lambda]
        ``eta`` in Å^-2.
    """
    rc = float(cutoff)
    return [[eta / rc**2, float(zeta), float(lam)]
            for eta in (1.0, 4.0) for zeta in (1, 2, 4, 16) for lam in (1, -1)]


# ------------------------------------------------------------------------------------------
# cutoff functions
# ------------------------------------------------------------------------------------------
class _TanhCutoff:
    """``f_c(r) = tanh^3(1 - r/r_c)`` (Behler 2011), zero for ``r >= r_c``; C2 at r_c."""

    def __init__(self, cutoff: float):
        self.cutoff = float(cutoff)

    def __call__(self, r: torch.Tensor):
        inside = r < self.cutoff
        t = torch.tanh((1.0 - r / self.cutoff).clamp(min=0.0))
        value = torch.where(inside, t**3, torch.zeros_like(r))
        deriv = torch.where(inside, -3.0 * t**2 * (1.0 - t**2) / self.cutoff,
                            torch.zeros_like(r))
        return value, deriv


class _PolynomialCutoff:
    """``f_c(r) = 1 - 10x^3 + 15x^4 - 6x^5``, ``x = r/r_c``: C2 at ``r_c`` and at 0."""

    def __init__(self, cutoff: float):
        self.cutoff = float(cutoff)

    def __call__(self, r: torch.Tensor):
        inside = r < self.cutoff
        x = (r / self.cutoff).clamp(0.0, 1.0)
        value = torch.where(inside, 1.0 - x**3 * (10.0 - 15.0 * x + 6.0 * x * x),
                            torch.zeros_like(r))
        deriv = torch.where(inside, -30.0 * x * x * (1.0 - x) ** 2 / self.cutoff,
                            torch.zeros_like(r))
        return value, deriv


def _make_cutoff(name: str, cutoff: float):
    if name == "cosine":
        # GAP's shifted cosine with the transition over the whole range is Behler's
        # 0.5 [cos(pi r / r_c) + 1]
        return CosineCutoff(cutoff, cutoff)
    if name == "tanh":
        return _TanhCutoff(cutoff)
    if name == "polynomial":
        return _PolynomialCutoff(cutoff)
    raise ValueError(f"cutoff_function must be one of {list(CUTOFF_FUNCTIONS)}, got {name!r}")


# ------------------------------------------------------------------------------------------
# parameter validation
# ------------------------------------------------------------------------------------------
def _check_g2(g2) -> list[list[float]]:
    out = []
    for k, row in enumerate(g2):
        row = list(row)
        if len(row) != 2 or not all(is_number(x) for x in row):
            raise ValueError(f"g2[{k}] must be a pair [eta, r_s] of finite numbers, got {row!r}")
        eta, rs = float(row[0]), float(row[1])
        if eta < 0 or rs < 0:
            raise ValueError(f"g2[{k}] = {row!r}: eta (Å^-2) and r_s (Å) must be >= 0")
        out.append([eta, rs])
    return out


def _check_angular(params, name) -> list[list[float]]:
    out = []
    for k, row in enumerate(params):
        row = list(row)
        if len(row) != 3 or not all(is_number(x) for x in row):
            raise ValueError(f"{name}[{k}] must be a triple [eta, zeta, lambda] of finite "
                             f"numbers, got {row!r}")
        eta, zeta, lam = (float(x) for x in row)
        if eta < 0:
            raise ValueError(f"{name}[{k}] = {row!r}: eta must be >= 0 Å^-2")
        if zeta < 1:
            raise ValueError(f"{name}[{k}] = {row!r}: zeta must be >= 1 (smaller zeta makes "
                             "(1 + lambda cos) ^ zeta non-differentiable at cos = -lambda)")
        if lam not in (1.0, -1.0):
            raise ValueError(f"{name}[{k}] = {row!r}: lambda must be +1 or -1")
        out.append([eta, zeta, lam])
    return out


def _pair_codes(lo, hi, n_species):
    """Index of the unordered species-index pair (lo <= hi) in the upper triangle."""
    return lo * n_species - lo * (lo - 1) // 2 + (hi - lo)


class SymmetryFunctions(Descriptor):
    """Atom-centred symmetry functions (ACSF) of Behler and Parrinello, species-resolved.

    For centre ``i``, with pair vectors ``r_ij = r_j + S h - r_i`` of the full periodic
    neighbour list (``r_ij < r_c``) and a smooth cutoff ``f_c``:

    Radial functions, one per neighbour species ``a`` and per ``(η, r_s)`` of ``g2``:

    .. math::

        G^2_{a}(i) = \\sum_{j \\in a} e^{-\\eta (r_{ij} - r_s)^2} f_c(r_{ij}).

    Angular functions, one per *unordered* neighbour-species pair ``{a, b}`` and per
    ``(η, ζ, λ)`` of ``g4``; the sum runs over unordered pairs of neighbours ``{j, k}``
    (``j < k``: each triangle ``i, j, k`` counted once, as in dscribe's ACSF, which the
    tests reproduce; a sum over ordered pairs ``j ≠ k`` is twice this):

    .. math::

        G^4_{ab}(i) = 2^{1-\\zeta} \\sum_{\\{j, k\\} \\in \\{a, b\\}}
            (1 + \\lambda \\cos\\theta_{ijk})^\\zeta\\,
            e^{-\\eta (r_{ij}^2 + r_{ik}^2 + r_{jk}^2)}\\,
            f_c(r_{ij}) f_c(r_{ik}) f_c(r_{jk}),

    with ``cos θ_ijk = r_ij · r_ik / (r_ij r_ik)``. The ``g5`` functions are the same
    without the ``r_jk`` terms (no ``r_jk^2`` in the exponent, no ``f_c(r_jk)``), so
    they also see neighbour pairs further apart than ``r_c`` (Behler 2011).
    Periodic images count as separate neighbours (an atom may be its own neighbour in
    a small cell). The centre's species is not a feature: it is ``centre_types``, and
    kernels between centres of different species are zero (one model per species, as
    for SOAP). An isolated atom has all-zero features.

    Feature layout (``feature_labels`` columns ``kind, species_a, species_b,
    parameter``): first the G2 block of every neighbour species ``a`` in increasing
    atomic number (``kind = 2``, ``species_b = 0``, ``parameter`` the row of ``g2``),
    then, for every species pair ``a <= b`` in the order of
    :func:`~gapkit.descriptors.twobody.species_pairs`, its G4 functions (``kind = 4``,
    row of ``g4``) followed by its G5 functions (``kind = 5``, row of ``g5``).
    ``info["feature_parameters"]`` holds ``[eta, r_s, zeta, lambda]`` of every column
    (NaN where it does not apply), and :meth:`feature_names` readable names.

    Gradients are analytic. Each term depends on the positions only through its pair
    vectors ``u = r_ij`` and ``v = r_ik`` (``r_jk = v - u``), and every derivative of
    a triplet term ``T`` lies in the span of ``u`` and ``v``:
    ``dT/du = A u + C v``, ``dT/dv = B v + C u``, with, for
    ``P = 2^{1-ζ} (1 + λc)^ζ E``, ``Q = 2^{1-ζ} ζ λ (1 + λc)^{ζ-1} E F``,
    ``E`` the exponential, ``F`` the product of cutoffs, ``s`` = 1 for G4 and 0 for G5
    and ``g = s f_c(r_ij) f_c(r_ik) f_c'(r_jk) / r_jk``:

    .. math::

        A &= -\\frac{Q c}{r_{ij}^2} - 2\\eta (1 + s) P F
             + P \\frac{f_c'(r_{ij}) f_c(r_{ik}) F_{jk}}{r_{ij}} + P g,\\\\
        C &= \\frac{Q}{r_{ij} r_{ik}} + 2 \\eta s P F - P g,

    (``F_jk = f_c(r_jk)`` for G4, 1 for G5; ``B`` is ``A`` with ``j`` and ``k``
    swapped). They are folded into the sparse (centre, atom) layout by
    :func:`~gapkit.descriptors.base.fold_pair_gradients`; strain gradients are
    ``Σ_pairs dq/dr_ij ⊗ r_ij``. Triplets are enumerated without Python loops over
    atoms: the pairs of a group of centres are padded per centre, one batched GEMM
    gives every ``r_ij · r_ik``, and the upper triangle of each centre's block lists its
    triplets; they are then processed in chunks of :data:`TRIPLET_CHUNK` as elementwise
    (triplet x function) arrays reduced with ``index_add``.

    Parameters
    ----------
    cutoff : float
        Radial cutoff ``r_c``, Å.
    g2 : sequence of [eta, r_s], optional
        Radial functions: ``eta`` in Å^-2 (>= 0), ``r_s`` in Å (>= 0). Default
        :func:`default_g2` (11 functions). ``[]`` for none.
    g4 : sequence of [eta, zeta, lambda], optional
        Angular functions: ``eta`` Å^-2 (>= 0), ``zeta >= 1``, ``lambda = ±1``.
        Default :func:`default_g4` (16 functions). ``[]`` for none.
    g5 : sequence of [eta, zeta, lambda]
        Angular functions without the ``r_jk`` terms (same units). None by default.
    species : sequence of int, optional
        Atomic numbers the descriptor knows (fixes the feature layout). Inferred from
        each ``compute`` call when None.
    cutoff_function : {"cosine", "tanh", "polynomial"}
        ``"cosine"``: ``½[cos(π r/r_c) + 1]`` (Behler and Parrinello 2007; C1 at ``r_c``).
        ``"tanh"``: ``tanh³(1 - r/r_c)`` (Behler 2011; C2). ``"polynomial"``:
        ``1 - 10x³ + 15x⁴ - 6x⁵``, ``x = r/r_c`` (C2).
    dtype : torch.dtype
        Floating type of the computation (float64 by default).
    device : str or torch.device, optional
        Where the computation runs ("cpu" by default).
    batch_atoms : int
        Number of atoms processed at once (memory vs overhead).
    progress : bool
        Show a progress bar over batches.

    Raises
    ------
    ValueError
        A bad cutoff, parameter row, cutoff function or batch size, or no function at all.

    Examples
    --------
    >>> from ase.build import bulk
    >>> sf = SymmetryFunctions(cutoff=4.0)
    >>> sf.n_features(1), sf.n_features(4)
    (27, 204)
    >>> sf.compute(bulk("Si", "diamond", a=5.43)).values.shape
    (2, 27)
    """

    name = "symmetry_functions"

    def __init__(self, *, cutoff: float = 5.0, g2: Sequence | None = None,
                 g4: Sequence | None = None, g5: Sequence = (),
                 species: Sequence[int] | None = None, cutoff_function: str = "cosine",
                 dtype: torch.dtype = torch.float64, device=None, batch_atoms: int = 512,
                 progress: bool = False):
        positive(cutoff, "cutoff", "Å")
        self._set_runtime(species, dtype, device, batch_atoms, progress)
        self.cutoff = float(cutoff)
        self.cutoff_function = str(cutoff_function)
        self.cutoff_fn = _make_cutoff(self.cutoff_function, self.cutoff)
        self.g2 = _check_g2(default_g2(self.cutoff) if g2 is None else g2)
        self.g4 = _check_angular(default_g4(self.cutoff) if g4 is None else g4, "g4")
        self.g5 = _check_angular(() if g5 is None else g5, "g5")
        if not (self.g2 or self.g4 or self.g5):
            raise ValueError("no symmetry functions: give at least one row of g2, g4 or g5")

    # -- settings ---------------------------------------------------------
    def get_params(self) -> dict:
        """The settings as a plain, JSON-able dict (round-trips through
        ``SymmetryFunctions(**params)``). The parameter sets are written out, so a
        model does not depend on the defaults of the version that made it.
        ``dtype``, ``device``, ``batch_atoms`` and ``progress`` do not change the
        result and are left out (as for SOAP)."""
        return {"cutoff": self.cutoff, "g2": [list(r) for r in self.g2],
                "g4": [list(r) for r in self.g4], "g5": [list(r) for r in self.g5],
                "species": None if self.species is None else list(self.species),
                "cutoff_function": self.cutoff_function}

    def __repr__(self) -> str:
        sp = None if self.species is None else list(self.species)
        return (f"SymmetryFunctions(cutoff={self.cutoff!r}, n_g2={len(self.g2)}, "
                f"n_g4={len(self.g4)}, n_g5={len(self.g5)}, species={sp!r}, "
                f"cutoff_function={self.cutoff_function!r})")

    def n_features(self, n_species: int | None = None) -> int:
        """``S n_g2 + S (S + 1) / 2 (n_g4 + n_g5)`` for ``S`` species."""
        s = len(self.species) if n_species is None else int(n_species)
        return s * len(self.g2) + s * (s + 1) // 2 * (len(self.g4) + len(self.g5))

    def _layout(self, species):
        """Integer labels and float parameters of every column."""
        sp = list(species)
        s = len(sp)
        labels, params = [], []
        nan = float("nan")
        for a in range(s):
            for k, (eta, rs) in enumerate(self.g2):
                labels.append([2, sp[a], 0, k])
                params.append([eta, rs, nan, nan])
        for a in range(s):
            for b in range(a, s):
                for kind, rows in ((4, self.g4), (5, self.g5)):
                    for k, (eta, zeta, lam) in enumerate(rows):
                        labels.append([kind, sp[a], sp[b], k])
                        params.append([eta, nan, zeta, lam])
        return (np.asarray(labels, dtype=np.int64).reshape(-1, 4),
                np.asarray(params, dtype=np.float64).reshape(-1, 4))

    def feature_names(self, species: Sequence[int] | None = None) -> list[str]:
        """Readable name of every column, e.g. ``"G2[H](eta=0.04,rs=0)"`` or
        ``"G4[C,H](eta=0.04,zeta=2,lambda=-1)"`` (eta in Å^-2, r_s in Å)."""
        from ase.data import chemical_symbols

        species = self.species if species is None else resolve_species([], species)
        if species is None:
            raise ValueError("species unknown: pass species=[...]")
        labels, params = self._layout(species)
        out = []
        for (kind, a, b, _), (eta, rs, zeta, lam) in zip(labels, params):
            if kind == 2:
                out.append(f"G2[{chemical_symbols[a]}](eta={eta:.6g},rs={rs:.6g})")
            else:
                out.append(f"G{kind}[{chemical_symbols[a]},{chemical_symbols[b]}]"
                           f"(eta={eta:.6g},zeta={zeta:.6g},lambda={lam:+.0f})")
        return out

    # -- public -----------------------------------------------------------
    def compute(self, frames, *, gradients=False) -> DescriptorResult:
        """Symmetry functions of every atom of ``frames``.

        Parameters
        ----------
        frames : ase.Atoms or sequence of ase.Atoms
        gradients : bool or list of {"positions", "strain"}
            ``True`` computes both. Position gradients (Å^-1 per unit of the function)
            are stored sparsely per (centre, atom) pair, the centre's own atom included
            and periodic images folded onto their atom; strain gradients per centre.

        Returns
        -------
        DescriptorResult
            ``values`` of shape (n_atoms_total, n_features) (dimensionless: sums of
            Gaussians times cutoffs); ``centre_types`` = ``centre_species`` = atomic
            numbers; ``feature_labels`` as in the class docstring. ``info`` holds the
            settings, ``species`` (fixed or inferred), ``species_pairs`` and
            ``feature_parameters``.

        Raises
        ------
        ValueError
            No frames, unknown ``gradients`` kind, a species not in the fixed
            ``species``, or a bad structure (see
            :func:`gapkit.neighbors.build_neighbor_list`).
        """
        return super().compute(frames, gradients=gradients)

    # -- internals ----------------------------------------------------------
    def _compute_batch(self, frames, frame_offset, species, want_pos, want_strain):
        dtype, device = self.dtype, self.device
        nl = build_neighbor_list(frames, self.cutoff, frame_offset=frame_offset)
        S = len(species)
        n_atoms = nl.n_atoms
        n2 = len(self.g2)
        n_ang = len(self.g4) + len(self.g5)
        n_blocks = S * (S + 1) // 2
        n_features = S * n2 + n_blocks * n_ang
        want_grad = want_pos or want_strain

        z_to_index = np.full(max(species) + 1, -1, dtype=np.int64)
        z_to_index[list(species)] = np.arange(S)
        order = np.argsort(nl.centers, kind="stable")
        centres = nl.centers[order]
        neighbours = nl.neighbors[order]
        n_pairs = centres.shape[0]
        sp_j = z_to_index[nl.numbers[neighbours]]
        vec = torch.as_tensor(nl.vectors[order], dtype=dtype, device=device)
        dist = torch.linalg.norm(vec, dim=1)
        fc, dfc = self.cutoff_fn(dist)

        values = torch.zeros((n_atoms, n_features), dtype=dtype, device=device)
        pair_grad = None
        if want_grad:
            pair_grad = torch.zeros((n_pairs, 3, n_features), dtype=dtype, device=device)
        centres_t = torch.as_tensor(centres, device=device)
        sp_j_t = torch.as_tensor(sp_j, device=device)

        if n2 and n_pairs:
            eta = torch.tensor([r[0] for r in self.g2], dtype=dtype, device=device)
            rs = torch.tensor([r[1] for r in self.g2], dtype=dtype, device=device)
            diff = dist[:, None] - rs
            gauss = torch.exp(-eta * diff * diff)
            acc = torch.zeros((n_atoms * S, n2), dtype=dtype, device=device)
            acc.index_add_(0, centres_t * S + sp_j_t, gauss * fc[:, None])
            values[:, :S * n2] = acc.view(n_atoms, S * n2)
            if want_grad:
                dg = gauss * (dfc[:, None] - 2.0 * eta * diff * fc[:, None])  # (P, n2)
                unit = vec / dist[:, None]
                block = pair_grad[:, :, :S * n2].view(n_pairs, 3, S, n2)
                block[torch.arange(n_pairs, device=device), :, sp_j_t, :] = \
                    unit[:, :, None] * dg[:, None, :]

        if n_ang and n_pairs:
            self._angular(centres, sp_j, vec, dist, fc, dfc, S, n_atoms, n2, n_blocks,
                          values, pair_grad)

        grads = gcentre = gatom = strain = None
        if want_grad:
            grads, gcentre, gatom_global, strain = fold_pair_gradients(
                pair_grad, centres_t, torch.arange(n_atoms, device=device),
                torch.as_tensor(neighbours, device=device), vec, n_atoms, n_atoms,
                want_strain)
            if want_pos:
                offsets = torch.as_tensor(nl.atom_offsets, device=device)
                astruct = torch.as_tensor(nl.atom_structure, device=device)
                gatom = gatom_global - offsets[astruct[gcentre]]
            else:
                grads = gcentre = None

        def np_(t):
            return None if t is None else t.detach().cpu().numpy()

        labels, params = self._layout(species)
        return DescriptorResult(
            values=np_(values), centre_structure=nl.atom_structure.copy(),
            centre_atom=np.arange(n_atoms) - nl.atom_offsets[nl.atom_structure],
            centre_species=nl.numbers.copy(), centre_types=nl.numbers.copy(),
            n_atoms=np.diff(nl.atom_offsets), feature_labels=labels,
            feature_label_names=("kind", "species_a", "species_b", "parameter"),
            gradients=np_(grads), gradient_centre=np_(gcentre), gradient_atom=np_(gatom),
            strain_gradients=np_(strain),
            info={"descriptor": "SymmetryFunctions", **self.get_params(),
                  "species": list(species),
                  "species_pairs": [list(p) for p in species_pairs(species)],
                  "feature_parameters": params})

    def _angular(self, centres, sp_j, vec, dist, fc, dfc, S, n_atoms, n2, n_blocks,
                 values, pair_grad):
        """Add the G4/G5 values (and pair gradients) of every neighbour pair {j, k}."""
        dtype, device = self.dtype, self.device
        n_pairs = centres.shape[0]
        want_grad = pair_grad is not None
        fac = self._angular_factors(dtype, device)
        n_ang = fac["n_ang"]
        ang_values = torch.zeros((n_atoms * n_blocks, n_ang), dtype=dtype, device=device)
        own = other = None
        if want_grad:
            # dT/du = a_u u + c v and dT/dv = a_v v + c u (see the class docstring): the
            # coefficient of a pair's own vector is summed as a scalar, the other part
            # as vectors, component-major so that every product is a contiguous
            # (T, A) operation
            own = torch.zeros((n_pairs * n_blocks, n_ang), dtype=dtype, device=device)
            other = torch.zeros((3, n_pairs * n_blocks, n_ang), dtype=dtype, device=device)
        centres_t = torch.as_tensor(centres, device=device)
        sp_t = torch.as_tensor(sp_j, device=device)
        pair_data = torch.stack([dist, fc, dfc], 1)
        vec_t = vec.T.contiguous()
        for p, q, dot in self._triplets(centres, n_atoms, vec):
            lo = torch.minimum(sp_t[p], sp_t[q])
            hi = torch.maximum(sp_t[p], sp_t[q])
            blk = _pair_codes(lo, hi, S)
            ru, fu, dfu = pair_data[p].unbind(1)
            rv, fv, dfv = pair_data[q].unbind(1)
            out = self._triplet_terms(ru, rv, dot, fu, fv, dfu, dfv, fac, want_grad)
            ang_values.index_add_(0, centres_t[p] * n_blocks + blk, out[0])
            if not want_grad:
                continue
            _, a_u, a_v, cross = out
            row_p, row_q = p * n_blocks + blk, q * n_blocks + blk
            own.index_add_(0, row_p, a_u)
            own.index_add_(0, row_q, a_v)
            part = torch.empty((3,) + cross.shape, dtype=dtype, device=device)
            for x in range(3):
                torch.mul(vec_t[x, q][:, None], cross, out=part[x])
            other.index_add_(1, row_p, part)
            for x in range(3):
                torch.mul(vec_t[x, p][:, None], cross, out=part[x])
            other.index_add_(1, row_q, part)

        values[:, S * n2:] = ang_values.view(n_atoms, n_blocks * n_ang)
        if want_grad:
            grad = other.view(3, n_pairs, n_blocks, n_ang).permute(1, 0, 2, 3) \
                + vec[:, :, None, None] * own.view(n_pairs, 1, n_blocks, n_ang)
            pair_grad[:, :, S * n2:] = grad.reshape(n_pairs, 3, n_blocks * n_ang)

    def _triplets(self, centres, n_atoms, vec):
        """Chunks of triplets: ``(p, q, r_ij . r_ik)`` for neighbour pairs ``p < q`` of
        the same centre (indices into the centre-sorted pair list).

        The pairs of a group of centres are padded to ``J`` slots per centre, ``(n, J,
        3)``; one batched GEMM gives all dot products ``r_ij . r_ik`` (and so ``r_jk^2 =
        r_ij^2 + r_ik^2 - 2 r_ij . r_ik``), and the upper triangle of each centre's
        ``J x J`` block, restricted to real slots (and to ``r_jk < r_c`` without G5),
        lists its triplets in the order (centre, j, k).
        """
        device = self.device
        counts = np.bincount(centres, minlength=n_atoms)
        starts = np.concatenate([[0], np.cumsum(counts)])
        n_slots = int(counts.max()) if counts.size else 0
        if n_slots < 2:
            return
        slot = torch.as_tensor(np.arange(centres.shape[0]) - starts[centres], device=device)
        starts_t = torch.as_tensor(starts, device=device)
        upper = torch.ones((n_slots, n_slots), dtype=torch.bool, device=device).triu(1)
        rc2 = self.cutoff**2
        # centres per group: about TRIPLET_CHUNK candidate triplets
        per_group = max(1, TRIPLET_CHUNK // (n_slots * (n_slots - 1) // 2))
        for c0 in range(0, n_atoms, per_group):
            c1 = min(n_atoms, c0 + per_group)
            p0, p1 = int(starts[c0]), int(starts[c1])
            if p1 - p0 < 2:
                continue
            n = c1 - c0
            local = torch.as_tensor(centres[p0:p1] - c0, device=device)
            pad = torch.zeros((n, n_slots, 3), dtype=vec.dtype, device=device)
            pad[local, slot[p0:p1]] = vec[p0:p1]
            gram = torch.bmm(pad, pad.transpose(1, 2))
            real = torch.as_tensor(counts[c0:c1], device=device)[:, None] \
                > torch.arange(n_slots, device=device)
            mask = upper & real[:, :, None] & real[:, None, :]
            if not self.g5:
                # G4 only: a pair j, k further apart than r_c contributes nothing
                r2 = torch.diagonal(gram, dim1=1, dim2=2)
                mask &= (r2[:, :, None] + r2[:, None, :] - 2.0 * gram) < rc2
            c, j, k = mask.nonzero(as_tuple=True)
            if c.numel() == 0:
                continue
            base = starts_t[c0 + c]
            p, q, dot = base + j, base + k, gram[c, j, k]
            for t0 in range(0, p.shape[0], TRIPLET_CHUNK):  # a centre with huge J
                t1 = t0 + TRIPLET_CHUNK
                yield p[t0:t1], q[t0:t1], dot[t0:t1]

    def _angular_factors(self, dtype, device) -> dict:
        """The angular parameters factorised into their distinct parts.

        A term ``2^{1-ζ}(1 + λc)^ζ · e^{-η R_s} · F_s`` is a product of an angular
        factor that depends on ``(ζ, λ)`` only and a radial one that depends on ``(η, s)``
        only (``s`` = 1 for G4, 0 for G5): each is computed once per distinct pair and
        gathered per function.
        """
        rows = [(*r, 1.0) for r in self.g4] + [(*r, 0.0) for r in self.g5]
        lams = sorted({r[2] for r in rows})
        # distinct (zeta, lambda) and (eta, s), in order of first appearance
        zl = list(dict.fromkeys((r[1], r[2]) for r in rows))
        es = list(dict.fromkeys((r[0], r[3]) for r in rows))
        t = {}

        def idx(x):
            return torch.as_tensor(x, device=device, dtype=torch.long)

        t["lam"] = torch.tensor(lams, dtype=dtype, device=device)
        t["zl"] = [(z, lams.index(lam), 2.0 ** (1.0 - z), 2.0 ** (1.0 - z) * z * lam)
                   for z, lam in zl]
        t["eta"] = torch.tensor([e for e, _ in es], dtype=dtype, device=device)
        t["es"] = torch.tensor([s for _, s in es], dtype=dtype, device=device)
        k = [zl.index((r[1], r[2])) for r in rows]
        e = [es.index((r[0], r[3])) for r in rows]
        # the usual case: every (eta, s) with every (zeta, lambda), (eta, s)-major, so that
        # a product of the two factors is an outer product instead of two gathers
        t["grid"] = (k == [a % len(zl) for a in range(len(rows))]
                     and e == [a // len(zl) for a in range(len(rows))])
        t["k"], t["e"] = idx(k), idx(e)
        t["n_ang"] = len(rows)
        return t

    def _triplet_terms(self, ru, rv, dot, fu, fv, dfu, dfv, fac, want_grad):
        """Angular terms of a chunk of triplets ``(i; j, k)`` with ``u = r_ij``,
        ``v = r_ik`` (lengths ``ru``, ``rv``, ``dot = u . v``): values ``T`` (T, A)
        and, when asked, the coefficients (T, A) of ``dT/du = a_u u + c v`` and
        ``dT/dv = a_v v + c u``: ``(T, a_u, a_v, c)``."""
        ruv = ru * rv
        cos = dot / ruv
        rw2 = (ru * ru + rv * rv - 2.0 * dot).clamp(min=0.0)
        rw = rw2.sqrt()
        fw, dfw = self.cutoff_fn(rw)
        # angular factors per distinct (zeta, lambda): 2^(1-z) b^z and 2^(1-z) z lam b^(z-1)
        base = (1.0 + fac["lam"] * cos[:, None]).clamp(min=0.0)  # (T, L)
        ang, dang = [], []
        for z, li, c0, c1 in fac["zl"]:
            b = base[:, li]
            bz1 = _power(b, z - 1.0)
            dang.append(c1 * bz1)
            ang.append(c0 * bz1 * b)
        ang = torch.stack(ang, 1)  # (T, K)
        # radial factors per distinct (eta, s): E_e = exp(-eta R_s), F_s
        s = fac["es"]
        r2 = (ru * ru + rv * rv)[:, None] + s * rw2[:, None]
        expo = torch.exp(-fac["eta"] * r2)  # (T, Ne)
        fjk = s * fw[:, None] + (1.0 - s)  # f_c(r_jk) for G4, 1 for G5
        ff = (fu * fv)[:, None] * fjk
        ef = expo * ff
        n = ru.shape[0]
        if fac["grid"]:
            n_k = ang.shape[1]

            def prod(a, r):  # (T, K) x (T, Ne) -> (T, Ne * K), (eta, s)-major
                out = torch.empty((n, r.shape[1] * n_k), dtype=a.dtype, device=a.device)
                for e in range(r.shape[1]):  # a few (eta, s): column broadcasts are fast
                    torch.mul(a, r[:, e:e + 1], out=out[:, e * n_k:(e + 1) * n_k])
                return out
        else:
            k_idx, e_idx = fac["k"], fac["e"]

            def prod(a, r):
                return a[:, k_idx] * r[:, e_idx]
        values = prod(ang, ef)
        if not want_grad:
            return (values,)
        dang = torch.stack(dang, 1)
        m2eta = -2.0 * fac["eta"]
        # partial derivatives of the radial factor by r_ij, r_ik, r_jk, per (eta, s)
        x_u = expo * (m2eta * ru[:, None] * ff + (dfu * fv)[:, None] * fjk)
        x_v = expo * (m2eta * rv[:, None] * ff + (fu * dfv)[:, None] * fjk)
        x_w = expo * s * (m2eta * rw[:, None] * ff + (fu * fv * dfw)[:, None])
        # dc/du = v/(r_ij r_ik) - c u/r_ij^2, d r_ij/du = u/r_ij, d r_jk/du = (u - v)/r_jk
        # (j <-> k for v): everything is in the span of u and v, with a shared cross term
        inv_w = 1.0 / rw[:, None]
        t_w = prod(ang, x_w * inv_w)
        cross = prod(dang, ef / ruv[:, None]) - t_w
        a_u = prod(ang, x_u / ru[:, None]) + t_w - prod(dang, ef * (cos / (ru * ru))[:, None])
        a_v = prod(ang, x_v / rv[:, None]) + t_w - prod(dang, ef * (cos / (rv * rv))[:, None])
        return values, a_u, a_v, cross


def _power(x: torch.Tensor, p: float) -> torch.Tensor:
    """``x ** p`` (``x >= 0``), by repeated squaring for small integer ``p``."""
    if p == 0:
        return torch.ones_like(x)
    if p == int(p) and 0 < p <= 64:
        n = int(p)
        result, square = None, x
        while n:
            if n & 1:
                result = square if result is None else result * square
            n >>= 1
            if n:
                square = square * square
        return result
    return x**p
