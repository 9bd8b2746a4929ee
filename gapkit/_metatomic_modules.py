"""TorchScript modules of an exported GAP (:mod:`gapkit.export` builds them; metatomic runs
them in LAMMPS, i-PI and ASE).

They evaluate the same functions as gapkit's Python path -- the SOAP power spectrum from
the same quintic radial spline and the same spherical-harmonic recurrences, the two-body
distances, the kernels against the fitted sparse points -- but on a neighbour list the
simulation engine gives, and the engine's autograd gives forces and stress. This file does
not use ``from __future__ import annotations``: TorchScript reads the annotations.
"""

import math
from typing import Dict, List, Optional, Tuple

import torch
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import ModelOutput, NeighborListOptions, System


def cosine_cutoff(r: torch.Tensor, cutoff: float, width: float) -> torch.Tensor:
    """gapkit's :class:`~gapkit.descriptors.cutoff.CosineCutoff` (values; autograd
    gives the derivative)."""
    inside = r < cutoff
    if width == 0.0:
        return inside.to(r.dtype)
    t = (r - (cutoff - width)) / width
    in_switch = (t > 0) & inside
    arg = math.pi * t.clamp(0.0, 1.0)
    return torch.where(in_switch, 0.5 * (1.0 + torch.cos(arg)), inside.to(r.dtype))


def register_sparse(module: torch.nn.Module, species: List[int], points: torch.Tensor,
                    types: torch.Tensor, alpha: torch.Tensor) -> None:
    """The buffers every term has: sparse points, their types and weights, and the index
    of each atomic number in the term's species list (-1: not a species of the term)."""
    module.register_buffer("points", points)
    module.register_buffer("types", types)
    module.register_buffer("alpha", alpha)
    z_index = torch.full((max(species) + 1,), -1, dtype=torch.long)
    z_index[torch.tensor(species)] = torch.arange(len(species))
    module.register_buffer("z_index", z_index)


class DotKernel(torch.nn.Module):
    """gapkit's :class:`~gapkit.SOAPKernel`: ``delta^2 (q1 . q2)^zeta``, zero between
    centres of different types."""

    def __init__(self, zeta: int, variance: float):
        super().__init__()
        self.zeta = zeta
        self.variance = variance

    def forward(self, q1: torch.Tensor, t1: torch.Tensor, q2: torch.Tensor,
                t2: torch.Tensor) -> torch.Tensor:
        same = (t1[:, None] == t2[None, :]).to(q1.dtype)
        return self.variance * torch.pow(q1 @ q2.T, self.zeta) * same


class SquaredExponentialKernel(torch.nn.Module):
    """gapkit's :class:`~gapkit.SEKernel`: ``delta^2 exp(-|x1 - x2|^2 / 2)`` with
    ``x = q / (s l)``, formed as gapkit forms it (both sides shifted by the mean of the
    second), zero between centres of different types."""

    def __init__(self, inverse_scale: torch.Tensor, variance: float):
        super().__init__()
        self.register_buffer("inverse_scale", inverse_scale)  # (D,) or (1,)
        self.variance = variance

    def forward(self, q1: torch.Tensor, t1: torch.Tensor, q2: torch.Tensor,
                t2: torch.Tensor) -> torch.Tensor:
        x1, x2 = q1 * self.inverse_scale, q2 * self.inverse_scale
        if x2.shape[0] > 0:
            centre = x2.mean(0).detach()
            x1, x2 = x1 - centre, x2 - centre
        d2 = (x1 * x1).sum(-1)[:, None] + (x2 * x2).sum(-1)[None, :] - 2.0 * (x1 @ x2.T)
        same = (t1[:, None] == t2[None, :]).to(q1.dtype)
        return self.variance * torch.exp(-0.5 * d2.clamp(min=0.0)) * same


class SOAPTerm(torch.nn.Module):
    """One SOAP term: descriptors of every atom, the kernel against the sparse points."""

    def __init__(self, *, coeffs: torch.Tensor, h: float, n_grid: int, n_max: int,
                 l_max: int, cutoff: float, width: float, own: torch.Tensor,
                 mix: torch.Tensor, species: List[int], gather: torch.Tensor,
                 scale: torch.Tensor,
                 normalize: bool, points: torch.Tensor, types: torch.Tensor,
                 alpha: torch.Tensor, kern: torch.nn.Module,
                 sh_norms: List[List[float]], sh_first: List[float]):
        super().__init__()
        self.kern = kern
        self.register_buffer("coeffs", coeffs)
        self.register_buffer("own", own)  # (n_max, (l_max+1)^2), column 0 only
        self.register_buffer("mix", mix)  # (species, channels); (0, 0): no mixing
        self.mixed = mix.numel() > 0
        self.register_buffer("gather", gather)
        self.register_buffer("scale", scale)
        register_sparse(self, species, points, types, alpha)
        l_of_lm = [l for l in range(l_max + 1) for _ in range(2 * l + 1)]
        self.register_buffer("l_of_lm", torch.tensor(l_of_lm, dtype=torch.long))
        self.h = h
        self.n_grid = n_grid
        self.n_max = n_max
        self.l_max = l_max
        self.cutoff = cutoff
        self.width = width
        self.n_species = len(species)
        self.normalize = normalize
        self.sh_norms = sh_norms
        self.sh_first = sh_first

    def radial(self, d: torch.Tensor) -> torch.Tensor:
        """``I_nl(d)`` from gapkit's quintic Hermite spline, shape (P, n_max, l_max + 1)."""
        u = d / self.h
        k = torch.clamp(u.floor().long(), 0, self.n_grid - 1)
        t = (u - k.to(u.dtype))[:, None]
        c = torch.index_select(self.coeffs, 0, k).view(d.shape[0], 6, -1)
        val = c[:, 4] + t * c[:, 5]
        for i in [3, 2, 1, 0]:
            val = c[:, i] + t * val
        return val.view(d.shape[0], self.n_max, self.l_max + 1)

    def harmonics(self, u: torch.Tensor) -> torch.Tensor:
        """Real spherical harmonics of unit vectors ``u`` (P, 3), gapkit's order and
        recurrences (:mod:`gapkit.descriptors._spherical`)."""
        x, y, z = u[:, 0], u[:, 1], u[:, 2]
        cs: List[torch.Tensor] = [torch.ones_like(x)]
        sn: List[torch.Tensor] = [torch.zeros_like(x)]
        for m in range(1, self.l_max + 1):
            cs.append(x * cs[m - 1] - y * sn[m - 1])
            sn.append(x * sn[m - 1] + y * cs[m - 1])
        out: List[torch.Tensor] = []
        q_prev: List[torch.Tensor] = []
        q_prev2: List[torch.Tensor] = []
        for l in range(self.l_max + 1):
            q: List[torch.Tensor] = []
            for m in range(l + 1):
                if m == l:
                    q.append(torch.full_like(x, self.sh_first[l]))
                elif m == l - 1:
                    q.append((2 * l - 1) * z * q_prev[l - 1])
                else:
                    a = (2 * l - 1) / (l - m)
                    b = (l + m - 1) / (l - m)
                    q.append(a * z * q_prev[m] - b * q_prev2[m])
            norms = self.sh_norms[l]
            for m in range(l, 0, -1):
                out.append(q[m] * norms[m] * sn[m])
            out.append(q[0] * norms[0])
            for m in range(1, l + 1):
                out.append(q[m] * norms[m] * cs[m])
            q_prev2 = q_prev
            q_prev = q
        return torch.stack(out, dim=1)

    def descriptors(self, numbers: torch.Tensor, first: torch.Tensor, second: torch.Tensor,
                    vectors: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Power spectra (N, D), kernel types and owners of the N atoms."""
        n_atoms = numbers.shape[0]
        dist = torch.linalg.norm(vectors, dim=1)
        keep = dist < self.cutoff
        first, second, vectors, dist = first[keep], second[keep], vectors[keep], dist[keep]
        species = self.z_index[numbers]
        S, n = self.n_species, self.n_max
        n_lm = (self.l_max + 1) * (self.l_max + 1)
        fc = cosine_cutoff(dist, self.cutoff, self.width)
        radial = (fc[:, None, None] * self.radial(dist))[:, :, self.l_of_lm]
        ylm = self.harmonics(vectors / dist[:, None])
        c = torch.zeros((n_atoms * S, n, n_lm), dtype=vectors.dtype, device=vectors.device)
        c = c.index_add(0, first * S + species[second], radial * ylm[:, None, :])
        centres = torch.arange(n_atoms, device=numbers.device) * S + species
        c = c.index_add(0, centres, self.own.expand(n_atoms, n, n_lm))
        if self.mixed:  # species_mixing: channel k's density is sum_a mix[a, k] c^a
            c = torch.einsum("asnl,sk->aknl", c.view(n_atoms, S, n, n_lm), self.mix)
        c = c.reshape(n_atoms, -1, n_lm)
        blocks: List[torch.Tensor] = []
        for l in range(self.l_max + 1):
            cl = c[:, :, l * l:(l + 1) * (l + 1)]
            blocks.append(torch.bmm(cl, cl.transpose(1, 2)).reshape(n_atoms, -1))
        values = torch.cat(blocks, dim=1)[:, self.gather] * self.scale
        if self.normalize:
            norms = torch.linalg.norm(values, dim=1, keepdim=True)
            safe = torch.where(norms > 0, norms, torch.ones_like(norms))
            values = torch.where(norms > 0, values / safe, torch.zeros_like(values))
        return values, numbers, torch.arange(n_atoms, device=numbers.device)

    def kernel(self, q1: torch.Tensor, t1: torch.Tensor, q2: torch.Tensor,
               t2: torch.Tensor) -> torch.Tensor:
        return self.kern(q1, t1, q2, t2)


class TwoBodyTerm(torch.nn.Module):
    """One two-body term: every ordered pair within the cutoff is a centre owned by its
    first atom; a squared-exponential kernel of the distance times both cutoffs."""

    def __init__(self, *, cutoff: float, width: float, species: List[int],
                 points: torch.Tensor, types: torch.Tensor, alpha: torch.Tensor,
                 lengthscale: float, variance: float):
        super().__init__()
        register_sparse(self, species, points, types, alpha)
        self.n_species = len(species)
        self.cutoff = cutoff
        self.width = width
        self.lengthscale = lengthscale
        self.variance = variance

    def descriptors(self, numbers: torch.Tensor, first: torch.Tensor, second: torch.Tensor,
                    vectors: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dist = torch.linalg.norm(vectors, dim=1)
        keep = dist < self.cutoff
        first, second, dist = first[keep], second[keep], dist[keep]
        sa, sb = self.z_index[numbers[first]], self.z_index[numbers[second]]
        lo, hi = torch.minimum(sa, sb), torch.maximum(sa, sb)
        types = lo * self.n_species - torch.div(lo * (lo - 1), 2, rounding_mode="floor") + hi - lo
        return dist[:, None], types, first

    def kernel(self, q1: torch.Tensor, t1: torch.Tensor, q2: torch.Tensor,
               t2: torch.Tensor) -> torch.Tensor:
        r1, r2 = q1[:, 0], q2[:, 0]
        d = r1[:, None] - r2[None, :]
        e = torch.exp(-0.5 * d * d / (self.lengthscale * self.lengthscale))
        f1 = cosine_cutoff(r1, self.cutoff, self.width)
        f2 = cosine_cutoff(r2, self.cutoff, self.width)
        same = (t1[:, None] == t2[None, :]).to(q1.dtype)
        return self.variance * e * f1[:, None] * f2[None, :] * same


def sf_cutoff(r: torch.Tensor, kind: int, cutoff: float) -> torch.Tensor:
    """The cutoff functions of :class:`~gapkit.SymmetryFunctions`: 0 cosine over the whole
    range, 1 ``tanh^3(1 - r/r_c)``, 2 the quintic polynomial of ``r/r_c``."""
    if kind == 0:
        return cosine_cutoff(r, cutoff, cutoff)
    inside = r < cutoff
    if kind == 1:
        t = torch.tanh((1.0 - r / cutoff).clamp(min=0.0))
        return torch.where(inside, t * t * t, torch.zeros_like(r))
    x = (r / cutoff).clamp(0.0, 1.0)
    return torch.where(inside, 1.0 - x * x * x * (10.0 - 15.0 * x + 6.0 * x * x),
                       torch.zeros_like(r))


class SymmetryTerm(torch.nn.Module):
    """One Behler-Parrinello symmetry-function term (:class:`~gapkit.SymmetryFunctions`:
    G2 per neighbour species, G4/G5 per unordered neighbour-species pair over the
    unordered neighbour pairs of each centre), with its kernel."""

    def __init__(self, *, cutoff: float, cutoff_kind: int, species: List[int],
                 g2: torch.Tensor, angular: torch.Tensor, points: torch.Tensor,
                 types: torch.Tensor, alpha: torch.Tensor, kern: torch.nn.Module):
        super().__init__()
        self.kern = kern
        register_sparse(self, species, points, types, alpha)
        self.register_buffer("g2", g2)  # (n2, 2): eta, r_s
        self.register_buffer("angular", angular)  # (A, 4): eta, zeta, lambda, s (1: G4)
        self.cutoff = cutoff
        self.cutoff_kind = cutoff_kind
        self.n_species = len(species)
        self.g4_only = bool((angular[:, 3] == 1.0).all()) if angular.shape[0] > 0 else True

    def descriptors(self, numbers: torch.Tensor, first: torch.Tensor, second: torch.Tensor,
                    vectors: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n_atoms = numbers.shape[0]
        S = self.n_species
        dist = torch.linalg.norm(vectors, dim=1)
        keep = dist < self.cutoff
        first, second, vectors, dist = first[keep], second[keep], vectors[keep], dist[keep]
        order = torch.argsort(first, stable=True)
        first, second, vectors, dist = first[order], second[order], vectors[order], dist[order]
        sp = self.z_index[numbers[second]]
        fc = sf_cutoff(dist, self.cutoff_kind, self.cutoff)
        parts: List[torch.Tensor] = []
        n2 = self.g2.shape[0]
        if n2 > 0:
            diff = dist[:, None] - self.g2[:, 1]
            gauss = torch.exp(-self.g2[:, 0] * diff * diff) * fc[:, None]
            acc = torch.zeros((n_atoms * S, n2), dtype=vectors.dtype, device=vectors.device)
            parts.append(acc.index_add(0, first * S + sp, gauss).view(n_atoms, S * n2))
        n_ang = self.angular.shape[0]
        if n_ang > 0:
            n_blocks = S * (S + 1) // 2
            n_pairs = first.shape[0]
            counts = torch.bincount(first, minlength=n_atoms)
            ends = torch.cumsum(counts, 0)
            pair_index = torch.arange(n_pairs, device=first.device)
            later = ends[first] - pair_index - 1  # neighbours after this one, same centre
            p = torch.repeat_interleave(pair_index, later)
            offsets = torch.cumsum(later, 0) - later
            q = p + 1 + (torch.arange(p.shape[0], device=first.device) - offsets[p])
            u, v = vectors[p], vectors[q]
            dot = (u * v).sum(1)
            ru, rv = dist[p], dist[q]
            rw2 = (ru * ru + rv * rv - 2.0 * dot).clamp(min=0.0)
            if self.g4_only:  # a pair j, k further apart than r_c adds nothing to G4
                near = rw2 < self.cutoff * self.cutoff
                p, q, dot, ru, rv, rw2 = p[near], q[near], dot[near], ru[near], rv[near], rw2[near]
            fw = sf_cutoff(torch.sqrt(rw2), self.cutoff_kind, self.cutoff)
            eta, zeta = self.angular[:, 0], self.angular[:, 1]
            lam, s = self.angular[:, 2], self.angular[:, 3]
            cos = dot / (ru * rv)
            base = (1.0 + lam * cos[:, None]).clamp(min=0.0)
            ang = torch.pow(2.0, 1.0 - zeta) * torch.pow(base, zeta)
            expo = torch.exp(-eta * ((ru * ru + rv * rv)[:, None] + s * rw2[:, None]))
            fjk = s * fw[:, None] + (1.0 - s)
            terms = ang * expo * (fc[p] * fc[q])[:, None] * fjk
            a, b = sp[p], sp[q]
            lo, hi = torch.minimum(a, b), torch.maximum(a, b)
            blk = lo * S - torch.div(lo * (lo - 1), 2, rounding_mode="floor") + hi - lo
            acc = torch.zeros((n_atoms * n_blocks, n_ang), dtype=vectors.dtype,
                              device=vectors.device)
            acc = acc.index_add(0, first[p] * n_blocks + blk, terms)
            parts.append(acc.view(n_atoms, n_blocks * n_ang))
        return torch.cat(parts, dim=1), numbers, torch.arange(n_atoms, device=numbers.device)

    def kernel(self, q1: torch.Tensor, t1: torch.Tensor, q2: torch.Tensor,
               t2: torch.Tensor) -> torch.Tensor:
        return self.kern(q1, t1, q2, t2)


class PairBaseline(torch.nn.Module):
    """A pair-law baseline (:class:`~gapkit.baselines.LennardJones`,
    :class:`~gapkit.baselines.CoreRepulsion`): per-atom energies, half of each pair's
    energy on the full neighbour list. Tables are indexed by the atomic numbers of the
    pair: cutoff, switch start (quintic switch of CoreRepulsion; ``r_on >= r_c`` for
    none), and the law's parameters."""

    def __init__(self, *, kind: int, cutoff: torch.Tensor, r_on: torch.Tensor,
                 p1: torch.Tensor, p2: torch.Tensor, shift: torch.Tensor,
                 zbl_c: List[float], zbl_d: List[float]):
        super().__init__()
        self.kind = kind  # 0: A/r^12 - B/r^6 (p1 = A, p2 = B), 1: ZBL (p1 = k Z Z, p2 = a)
        self.register_buffer("cutoff", cutoff)
        self.register_buffer("r_on", r_on)
        self.register_buffer("p1", p1)
        self.register_buffer("p2", p2)
        self.register_buffer("shift", shift)
        self.zbl_c = zbl_c
        self.zbl_d = zbl_d

    def energies(self, numbers: torch.Tensor, first: torch.Tensor, second: torch.Tensor,
                 vectors: torch.Tensor) -> torch.Tensor:
        zi, zj = numbers[first], numbers[second]
        dist = torch.linalg.norm(vectors, dim=1)
        rc = self.cutoff[zi, zj]
        keep = dist < rc
        first, zi, zj, r, rc = first[keep], zi[keep], zj[keep], dist[keep], rc[keep]
        p1, p2 = self.p1[zi, zj], self.p2[zi, zj]
        if self.kind == 0:
            r6 = torch.pow(r, -6.0)
            phi = p1 * r6 * r6 - p2 * r6
        else:
            x = r / p2
            screen = torch.zeros_like(r)
            for c, d in zip(self.zbl_c, self.zbl_d):
                screen = screen + c * torch.exp(-d * x)
            phi = p1 * screen / r
        r_on = self.r_on[zi, zj]
        width = torch.where(rc > r_on, rc - r_on, torch.ones_like(rc))
        t = ((r - r_on) / width).clamp(0.0, 1.0)
        switch = torch.where(rc > r_on, 1.0 - t * t * t * (10.0 - 15.0 * t + 6.0 * t * t),
                             torch.ones_like(r))
        pair = phi * switch - self.shift[zi, zj]
        out = torch.zeros(numbers.shape[0], dtype=vectors.dtype, device=vectors.device)
        return out.index_add(0, first, 0.5 * pair)


def _energy_map(values: torch.Tensor, samples: Labels) -> TensorMap:
    device = values.device
    block = TensorBlock(values=values, samples=samples,
                        components=torch.jit.annotate(List[Labels], []),
                        properties=Labels(["energy"], torch.tensor([[0]], device=device)))
    return TensorMap(Labels(["_"], torch.tensor([[0]], device=device)), [block])


class GAPModel(torch.nn.Module):
    """The metatomic model of a fitted GAP: ``energy`` (per structure or per atom) and
    ``energy_uncertainty`` (the calibrated sigma of the total energy per structure, the
    latent sigma of each local energy per atom), as :meth:`gapkit.GAP.predict` gives them."""

    predictive: List[float]

    def __init__(self, terms: List[torch.nn.Module], *, e0: torch.Tensor,
                 r_factor: torch.Tensor, u_factor: torch.Tensor, cutoff: float,
                 predictive: List[float], baselines: List[torch.nn.Module],
                 chunk: int = 1024):
        super().__init__()
        self.terms = torch.nn.ModuleList(terms)
        self.baselines = torch.nn.ModuleList(baselines)
        self.register_buffer("e0", e0)  # by atomic number
        self.register_buffer("r_factor", r_factor)
        self.register_buffer("u_factor", u_factor)
        # [a, b, q, p_ref] of the calibrated energy variance, [] without one
        self.predictive = predictive
        self.chunk = chunk
        self.nl_options = NeighborListOptions(cutoff=cutoff, full_list=True, strict=True)

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return [self.nl_options]

    def dtc(self, rows: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """``k** - |U^-T k*|^2 + |R^-T k*|^2`` per row, clipped at 0."""
        a = torch.linalg.solve_triangular(self.u_factor.T, rows.T, upper=False)
        b = torch.linalg.solve_triangular(self.r_factor.T, rows.T, upper=False)
        return torch.clamp(prior - (a * a).sum(0) + (b * b).sum(0), min=0.0)

    def forward(self, systems: List[System], outputs: Dict[str, ModelOutput],
                selected_atoms: Optional[Labels]) -> Dict[str, TensorMap]:
        want_sigma = "energy_uncertainty" in outputs
        energies: List[torch.Tensor] = []
        locals_: List[torch.Tensor] = []
        sigmas: List[torch.Tensor] = []
        local_sigmas: List[torch.Tensor] = []
        atom_samples: List[torch.Tensor] = []
        for s, system in enumerate(systems):
            numbers = system.types
            n_atoms = numbers.shape[0]
            if n_atoms > 0 and (int(numbers.max()) >= self.e0.shape[0] or int(numbers.min()) < 0):
                raise ValueError("this gapkit model was not fitted on an atomic type of "
                                 "this system (see the model's atomic_types)")
            nl = system.get_neighbor_list(self.nl_options)
            first = nl.samples.column("first_atom").to(torch.long)
            second = nl.samples.column("second_atom").to(torch.long)
            vectors = nl.values.reshape(-1, 3)
            if selected_atoms is None:
                chosen = torch.arange(n_atoms, device=numbers.device)
            else:
                sel = selected_atoms.values
                chosen = sel[sel[:, 0] == s][:, 1].to(torch.long)
            selected = torch.zeros(n_atoms, dtype=torch.bool, device=numbers.device)
            selected[chosen] = True
            local = self.e0[numbers]
            for baseline in self.baselines:
                local = local + baseline.energies(numbers, first, second, vectors)
            rows: List[torch.Tensor] = []
            prior_local = torch.zeros(n_atoms, dtype=vectors.dtype, device=vectors.device)
            prior_energy = torch.zeros((), dtype=vectors.dtype, device=vectors.device)
            for term in self.terms:
                q, types, owner = term.descriptors(numbers, first, second, vectors)
                k_rows = term.kernel(q, types, term.points, term.types)
                local = local.index_add(0, owner, k_rows @ term.alpha)
                if want_sigma:
                    with torch.no_grad():
                        qd = q.detach()
                        rows.append(torch.zeros((n_atoms, k_rows.shape[1]), dtype=qd.dtype,
                                                device=qd.device)
                                    .index_add(0, owner, k_rows.detach()))
                        in_sel = selected[owner].to(qd.dtype)
                        for c0 in range(0, qd.shape[0], self.chunk):
                            c1 = min(c0 + self.chunk, qd.shape[0])
                            kk = term.kernel(qd[c0:c1], types[c0:c1], qd, types)
                            same = (owner[c0:c1, None] == owner[None, :]).to(qd.dtype)
                            prior_local = prior_local.index_add(0, owner[c0:c1],
                                                                (kk * same).sum(1))
                            prior_energy = prior_energy + (in_sel[c0:c1] @ kk @ in_sel)
            energies.append(local[chosen].sum().reshape(1, 1))
            locals_.append(local[chosen].reshape(-1, 1))
            atom_samples.append(torch.stack([torch.full_like(chosen, s), chosen], dim=1))
            if want_sigma:
                with torch.no_grad():
                    all_rows = torch.cat(rows, dim=1)
                    var_local = self.dtc(all_rows[chosen], prior_local[chosen])
                    var = self.dtc(all_rows[chosen].sum(0, keepdim=True),
                                   prior_energy.reshape(1))
                    if len(self.predictive) == 4:
                        a, b, power, p_ref = (self.predictive[0], self.predictive[1],
                                              self.predictive[2], self.predictive[3])
                        p = torch.clamp(prior_energy.reshape(1), min=0.0)
                        var = a * var + b * torch.pow(p, power)
                        var = torch.where(p <= 1e-12 * p_ref, torch.zeros_like(var), var)
                    sigmas.append(torch.sqrt(var).reshape(1, 1))
                    local_sigmas.append(torch.sqrt(var_local).reshape(-1, 1))
        device = self.e0.device
        system_samples = Labels(["system"], torch.arange(len(systems), dtype=torch.int32,
                                                         device=device).reshape(-1, 1))
        if len(atom_samples) > 0:
            per_atom = Labels(["system", "atom"], torch.cat(atom_samples).to(torch.int32))
        else:
            per_atom = Labels(["system", "atom"],
                              torch.zeros((0, 2), dtype=torch.int32, device=device))
        result: Dict[str, TensorMap] = {}
        empty = torch.zeros((0, 1), dtype=self.e0.dtype, device=device)
        for name, per_system, atoms in [("energy", energies, locals_),
                                        ("energy_uncertainty", sigmas, local_sigmas)]:
            if name in outputs:
                if outputs[name].sample_kind == "atom":
                    values = torch.cat(atoms) if len(atoms) > 0 else empty
                    result[name] = _energy_map(values, per_atom)
                else:
                    values = torch.cat(per_system) if len(per_system) > 0 else empty
                    result[name] = _energy_map(values, system_samples)
        return result
