# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # SOAP descriptors and their symmetries
#
# A machine-learned potential in the GAP style writes the energy of a configuration as a sum
# of *local* energies,
#
# $$E = \sum_i e_0[s_i] + \sum_i \varepsilon(\mathbf{q}_i),$$
#
# where $\mathbf{q}_i$ describes the neighbourhood of atom $i$ within a cutoff radius $r_c$.
# That one line already encodes two pieces of physics:
#
# * **locality** ("nearsightedness"): atom $i$'s energy depends only on the atoms within
#   $r_c$, which makes the model linear-scaling and size-extensive (two far-apart molecules
#   have twice the energy of one);
# * **symmetry**: the energy of an isolated system cannot change when we translate or rotate
#   it (or invert it), nor when we relabel two atoms of the same element. If $\mathbf{q}_i$ is
#   invariant under all of these, so is every model built on it, whatever the regression.
#
# The **Smooth Overlap of Atomic Positions** (SOAP) power spectrum is such a descriptor. For a
# centre $i$ and each neighbour species $a$, place a Gaussian of width $\sigma_\mathrm{at}$ on
# every neighbour $j$ and switch it off smoothly with a cutoff function $f_c$:
#
# $$\rho^a_i(\mathbf r) = \sum_{j \in a} f_c(r_{ij})\,
#   \exp\!\left(-\frac{|\mathbf r - \mathbf r_{ij}|^2}{2\sigma_\mathrm{at}^2}\right).$$
#
# Expand this density on radial functions $g_n(r)$ ($n < n_\mathrm{max}$) times spherical
# harmonics $Y_{lm}(\hat{\mathbf r})$ ($l \le l_\mathrm{max}$): coefficients $c^a_{nlm}(i)$.
# A rotation mixes the $2l+1$ coefficients of each $l$ by an orthogonal (Wigner) matrix, so
# their dot product over $m$ is unchanged. That contraction is the power spectrum
#
# $$p^{ab}_{nn'l}(i) = \frac{1}{\sqrt{2l+1}} \sum_{m=-l}^{l} c^a_{nlm}(i)\, c^b_{n'lm}(i),$$
#
# invariant to rotations (and inversion) by construction, to translations because only
# relative vectors $\mathbf r_{ij}$ enter, and to permutations of like atoms because the
# density is a *sum* over neighbours. Being quadratic in a sum over neighbours, it carries
# three-body (distance–distance–angle) information; the kernel $k = \delta^2(\hat{\mathbf{q}}
# \cdot \hat{\mathbf{q}}')^\zeta$ used by GAP raises the body order further.
#
# In this tutorial we compute SOAP with `gapkit.SOAP` on silicon and ethanol, check every
# symmetry numerically, check the analytic gradients against finite differences, watch a
# dimer leave the cutoff sphere, and look at how far apart the environments of the Si
# training set are.

# %%
import os
import re
import time
from pathlib import Path

import matplotlib

from gapkit.plot import save, script_backend

matplotlib.use(script_backend())  # files as a script, inline figures in Jupyter
import matplotlib.pyplot as plt
import numpy as np
import torch
from ase import Atoms
from ase.build import bulk

import gapkit
from gapkit import SOAP, SOAPKernel
from gapkit.testing import (
    assert_invariant,
    check_gradients,
    dense_position_gradients,
    random_rotation,
)

# this folder when run as a script; the working directory when opened as a notebook
_HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
FAST = os.environ.get("GAPKIT_FAST") == "1"
OUT = Path(os.environ.get("GAPKIT_TUTORIAL_OUT",
                          _HERE / "figures")) / "02_soap_descriptors"
OUT.mkdir(parents=True, exist_ok=True)
if FAST:
    torch.set_num_threads(1)
T_START = time.perf_counter()

# %% [markdown]
# ## Computing SOAP
#
# The settings are GAP's: a cutoff $r_c = 5$ Å with a cosine transition of width 1 Å
# ($f_c = 1$ below $r_c - 1$ Å, $0$ beyond $r_c$), $n_\mathrm{max} = 8$ radial functions,
# $l_\mathrm{max} = 6$, Gaussians of width $\sigma_\mathrm{at} = 0.5$ Å. Silicon in the
# diamond structure has 4 nearest neighbours at 2.37 Å, 12 second neighbours at 3.87 Å and
# 12 third neighbours at 4.53 Å inside this sphere, the last ones in the switching region.
#
# `compute` returns a `DescriptorResult`: one row per atom, and integer labels
# (species $a$, species $b$, $l$, $n$, $n'$) for every column. Only the unique pairs
# $(a, n) \le (b, n')$ are kept (with a $\sqrt 2$ on the off-diagonal ones so that dot
# products are those of the full spectrum), which gives
# $K(K+1)/2 \cdot (l_\mathrm{max}+1)$ features with $K = S\, n_\mathrm{max}$ for $S$ species.

# %%
si_train = gapkit.data.load_bundled("Si_train.xyz")
ethanol = gapkit.data.load_bundled("ethanol_rmd17_200.xyz")

soap_si = SOAP(cutoff=5.0, cutoff_width=1.0, n_max=8, l_max=6, atom_sigma=0.5, species=[14])
crystal = next(a for a in si_train if a.info["description"] == "Ground state crystal")
res = soap_si.compute(crystal)
print(f"Si crystal: {len(crystal)} atoms -> values {res.values.shape}, "
      f"columns {res.feature_label_names}")
print("first feature labels:\n", res.feature_labels[:4])
print("norm of each row (normalize=True):", np.unique(np.round(
    np.linalg.norm(res.values, axis=1), 12)))


def n_features(n_species, n_max, l_max):
    k = n_species * n_max
    return k * (k + 1) // 2 * (l_max + 1)


assert res.values.shape == (64, n_features(1, 8, 6)), res.values.shape
# every atom of the perfect crystal has the same environment
spread = np.abs(res.values - res.values[0]).max()
print(f"largest difference between the 64 atoms of the perfect crystal: {spread:.1e}")
assert spread < 1e-12, spread

# %% [markdown]
# Ethanol (C$_2$H$_5$OH, from the rMD17 set) has three species, so the spectrum has one
# block for each species pair $(a, b)$ and is longer even with a smaller basis. We fix
# `species=[1, 6, 8]` so that every frame has the same column layout. Atom order in these
# frames: C0 (the CH$_2$ carbon, bonded to O), C1 (CH$_3$), O2, H3–H4 on C0, H5–H7 on C1,
# H8 on O.

# %%
soap_eth = SOAP(cutoff=5.0, cutoff_width=1.0, n_max=6, l_max=4, atom_sigma=0.5,
                species=[1, 6, 8])
n_eth = 40 if FAST else len(ethanol)
res_eth = soap_eth.compute(ethanol[:n_eth])
print(f"ethanol: {n_eth} frames x 9 atoms -> values {res_eth.values.shape}")
assert res_eth.n_features == n_features(3, 6, 4), res_eth.n_features

# %% [markdown]
# The GAP kernel compares two environments of the same central species:
# $k(\mathbf{q}, \mathbf{q}') = \delta^2 (\hat{\mathbf{q}} \cdot \hat{\mathbf{q}}')^\zeta$ with
# $\zeta = 4$; between different central species it is zero (each element has its own local
# energy function). Averaged over the MD trajectory, the kernel between the atoms of ethanol
# shows the chemistry: the three methyl hydrogens are nearly interchangeable (the methyl group
# rotates), the two CH$_2$ hydrogens resemble them less, the hydroxyl hydrogen not at all.

# %%
kernel = SOAPKernel(zeta=4, delta=1.0)
names = ["C0 (CH$_2$)", "C1 (CH$_3$)", "O2", "H3", "H4", "H5", "H6", "H7", "H8 (OH)"]
species = ethanol[0].numbers
q = torch.as_tensor(res_eth.values).reshape(n_eth, 9, -1)
K = torch.stack([kernel.value(q[f], q[f]) for f in range(n_eth)]).mean(0).detach().numpy()
K = np.where(species[:, None] == species[None, :], K, np.nan)  # zero across species
# check the library kernel against the formula
assert np.allclose(kernel.value(q[0], q[0]).detach().numpy(),
                   (res_eth.values[:9] @ res_eth.values[:9].T) ** 4, atol=1e-14)
k_methyl = K[5:8, 5:8][~np.eye(3, dtype=bool)].mean()
k_hydroxyl = K[8, 3:8].mean()
print(f"mean kernel between methyl H: {k_methyl:.3f}; hydroxyl H vs C-H hydrogens: "
      f"{k_hydroxyl:.3f}")
assert k_methyl > 0.9 and k_hydroxyl < k_methyl - 0.2, (k_methyl, k_hydroxyl)

fig, ax = plt.subplots(figsize=(5.2, 4.4), dpi=150)
im = ax.imshow(K, vmin=0, vmax=1, cmap="viridis")
ax.set_xticks(range(9), names, rotation=60, ha="right", fontsize=8)
ax.set_yticks(range(9), names, fontsize=8)
for i in range(9):
    for j in range(9):
        if np.isfinite(K[i, j]):
            ax.text(j, i, f"{K[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="w" if K[i, j] < 0.6 else "k")
fig.colorbar(im, ax=ax, label=r"$(\hat{\mathbf{q}}_i\cdot\hat{\mathbf{q}}_j)^4$ (MD average)")
ax.set_title(f"Ethanol: SOAP kernel between atoms\n({n_eth} rMD17 frames; "
             "blank: different species)", fontsize=9)
fig.tight_layout()
save(fig, OUT / "ethanol_kernel_matrix.png")

# %% [markdown]
# ## Symmetries, checked numerically
#
# `gapkit.testing.assert_invariant` applies random rotations, an inversion, a translation,
# a permutation of the atoms and, for periodic cells, a different choice of periodic images
# and a $2\times2\times2$ supercell, and checks every descriptor value to $10^{-10}$. We run it
# on an ethanol frame and on a 64-atom silicon snapshot from MD at 843 K.

# %%
md_si = next(a for a in si_train if a.info["config_type"] == "AIMD-NVT" and len(a) == 64)
assert_invariant(soap_eth, ethanol[0])              # rotation, inversion, translation, permutation
assert_invariant(soap_si, md_si)                    # ... and lattice_shift, supercell
print(f"assert_invariant passed for ethanol and for Si: {md_si.info['description']}")

# %% [markdown]
# The same by hand, with the numbers printed. A rotation $R$ acts on row vectors as
# $\mathbf r \to \mathbf r R^T$; relabelling two hydrogens swaps two rows of the result.

# %%
mol = ethanol[0].copy()
q0 = soap_eth.compute(mol).values

R = random_rotation(7)
rotated = mol.copy()
rotated.positions = mol.positions @ R.T + np.array([3.0, -1.0, 2.5])
d_rot = np.abs(soap_eth.compute(rotated).values - q0).max()

perm = np.arange(9)
perm[[5, 7]] = perm[[7, 5]]                         # relabel two methyl hydrogens
d_perm = np.abs(soap_eth.compute(mol[perm]).values - q0[perm]).max()

print(f"rotation + translation: max |dq| = {d_rot:.1e}")
print(f"swap two H labels:      max |dq| = {d_perm:.1e}")
assert d_rot < 1e-10 and d_perm < 1e-10, (d_rot, d_perm)

# %% [markdown]
# Swapping two atoms of *different* elements is not a symmetry: exchanging the CH$_2$ carbon
# and the oxygen turns ethanol into a different, unphysical molecule (the oxygen now bonded to
# a carbon and two hydrogens, the carbon to the hydroxyl hydrogen only). A descriptor must
# tell the two apart. We compare the environments as sets: for each atom of the swapped
# molecule, the closest environment of the same element in the original.

# %%
swapped = mol.copy()
swapped.positions[[0, 2]] = mol.positions[[2, 0]]   # C0 <-> O2
q_sw = soap_eth.compute(swapped).values
gaps = [min(np.linalg.norm(q_sw[i] - q0[j]) for j in range(9) if species[j] == species[i])
        for i in range(9)]
print("distance to the nearest like environment of ethanol, per atom:",
      np.round(gaps, 3))
assert max(gaps) > 0.1, gaps

# %% [markdown]
# ## Gradients: analytic against finite differences
#
# Forces are $\mathbf F_k = -\partial E/\partial \mathbf r_k
# = -\sum_i \frac{\partial \varepsilon}{\partial \mathbf{q}_i}\cdot
# \frac{\partial \mathbf{q}_i}{\partial \mathbf r_k}$, and virials need the derivative with
# respect to a homogeneous strain $\epsilon$. gapkit computes both analytically, storing
# $\partial \mathbf{q}_i / \partial \mathbf r_k$ only for pairs $(i, k)$ within the cutoff
# (plus the centre's own term). `check_gradients` compares them with central differences
# (step $10^{-5}$ Å) and returns the largest relative error.

# %%
si8 = bulk("Si", "diamond", a=5.43, cubic=True)
si8.set_cell(si8.cell @ np.array([[1.02, 0.01, 0], [0.01, 0.99, 0], [0, 0, 1.0]]),
             scale_atoms=True)
si8.rattle(0.08, seed=3)
err_eth = check_gradients(soap_eth, ethanol[0])
err_si = check_gradients(soap_si, si8)
print("ethanol (9 atoms):         relative error", {k: f"{v:.1e}" for k, v in err_eth.items()})
print("strained, rattled Si8 cell: relative error", {k: f"{v:.1e}" for k, v in err_si.items()})
assert max(err_eth.values()) < 1e-6 and max(err_si.values()) < 1e-6

res_g = soap_eth.compute(ethanol[0], gradients=True)
print(f"sparse position gradients of ethanol: {res_g.gradients.shape} "
      "(one (3, n_features) block per (centre, atom) pair within the cutoff)")

# %% [markdown]
# ### Conservation laws come for free
#
# Translating every atom by $\mathbf a$ leaves each $\mathbf{q}_i$ unchanged, so
# $\sum_k \partial \mathbf{q}_i / \partial \mathbf r_k = 0$ for every centre. Whatever the local
# energy function, the forces then add up to zero (Newton's third law; momentum is conserved
# in MD). Rotations give $\sum_k \mathbf r_k \times \partial \mathbf{q}_i/\partial \mathbf r_k
# = 0$: no net torque on an isolated molecule, and an antisymmetric strain (an infinitesimal
# rotation) does nothing, so the virial is symmetric. We check all three on the descriptor
# gradients, and then on the forces of an arbitrary model, here $\varepsilon(\mathbf{q}) =
# \mathbf w \cdot \mathbf{q}$ with random $\mathbf w$.

# %%
G = dense_position_gradients(res_g)                 # (centre, atom, xyz, feature)
pos = ethanol[0].positions
net = np.abs(G.sum(axis=1)).max()
torque = np.abs(np.cross(pos[None, :, :, None], G, axis=2).sum(axis=1)).max()
S = res_g.strain_gradients                          # (centre, 3, 3, feature)
asym = np.abs(S - S.transpose(0, 2, 1, 3)).max()
w = np.random.default_rng(0).normal(size=res_g.n_features)
forces = -np.einsum("cjaf,f->ja", G, w)
print(f"max over centres |sum_k dq_i/dr_k|        = {net:.1e}")
print(f"max over centres |sum_k r_k x dq_i/dr_k|  = {torque:.1e}")
print(f"max |dq/deps - (dq/deps)^T|               = {asym:.1e}")
print(f"random linear model: |sum F| = {np.abs(forces.sum(0)).max():.1e} eV/Å, "
      f"|sum r x F| = {np.abs(np.cross(pos, forces).sum(0)).max():.1e} eV "
      f"(forces up to {np.abs(forces).max():.2f} eV/Å)")
assert net < 1e-12 and torque < 1e-12 and asym < 1e-12, (net, torque, asym)

# %% [markdown]
# ## Smoothness at the cutoff: a dimer leaving the sphere
#
# A potential used in MD must be smooth: a jump in energy when a neighbour crosses $r_c$
# would violate energy conservation, and a jump in the force would heat the system. We pull
# two Si atoms apart through the cutoff and follow the *unnormalised* spectrum of one of them
# (`normalize=False`), minus its value for an isolated atom. The cosine switch
# $f_c(r) = \tfrac12[1 + \cos(\pi (r - r_c + w)/w)]$ on $[r_c - w, r_c]$ takes the neighbour's
# density to zero with zero slope, so the spectrum and its first derivative are continuous, and
# beyond $r_c$ the atom is exactly isolated. Close to $r_c$, $f_c \propto (r_c - r)^2$: the
# spectrum approaches its isolated-atom value quadratically and its slope linearly, which we
# measure on a logarithmic grid of distances down to $10^{-4}$ Å.

# %%
rc, width = 5.0, 1.0
soap_raw = SOAP(cutoff=rc, cutoff_width=width, n_max=8, l_max=6, atom_sigma=0.5,
                species=[14], normalize=False)
r = np.arange(2.0, 5.6 + 1e-9, 0.05 if FAST else 0.01)
dimers = [Atoms("Si2", positions=[[0, 0, 0], [x, 0, 0]]) for x in r]
p_iso = soap_raw.compute(Atoms("Si", positions=[[0, 0, 0]])).values[0]


def spectrum_and_slope(frames):
    """p(atom 0) - p(isolated) and d p(atom 0) / d x(atom 1) of each dimer."""
    out = soap_raw.compute(frames, gradients=["positions"])
    values = out.values[0::2] - p_iso                # centre = atom 0 of each dimer
    sel = (out.gradient_atom == 1) & (out.centre_atom[out.gradient_centre] == 0)
    slope = np.zeros_like(values)
    slope[out.centre_structure[out.gradient_centre[sel]]] = out.gradients[sel, 0]
    return values, slope


p, dpdr = spectrum_and_slope(dimers)
fd = np.gradient(p, r, axis=0)
beyond = r >= rc
print(f"max |p - p_isolated| for r >= r_c: {np.abs(p[beyond]).max():.1e}")
inner = (r > 2.1) & (r < 5.5)
fd_err = np.abs(dpdr[inner] - fd[inner]).max() / np.abs(dpdr).max()
print(f"analytic dp/dr vs finite differences of the curve: relative error {fd_err:.1e}")
# approaching r_c from below: |p - p_iso| ~ (r_c - r)^2 and |dp/dr| ~ (r_c - r)
gaps_rc = np.logspace(-4, 0, 17)
p_rc, slope_rc = spectrum_and_slope([Atoms("Si2", positions=[[0, 0, 0], [rc - g, 0, 0]])
                                     for g in gaps_rc])
p_rc, slope_rc = np.linalg.norm(p_rc, axis=1), np.linalg.norm(slope_rc, axis=1)
small_gap = gaps_rc <= 1e-2
order_p = np.polyfit(np.log(gaps_rc[small_gap]), np.log(p_rc[small_gap]), 1)[0]
order_s = np.polyfit(np.log(gaps_rc[small_gap]), np.log(slope_rc[small_gap]), 1)[0]
print(f"|p - p_iso| ~ (r_c - r)^{order_p:.3f} and |dp/dr| ~ (r_c - r)^{order_s:.3f} "
      "for r_c - r <= 0.01 Å")
assert np.abs(p[beyond]).max() < 1e-12
assert abs(order_p - 2) < 0.05 and abs(order_s - 1) < 0.05, (order_p, order_s)
assert fd_err < (5e-2 if FAST else 1e-2), fd_err

labels_l = res.feature_labels[:, 2]                # same layout as soap_si
top = [np.flatnonzero(labels_l == l)[np.argmax(np.abs(p[:, labels_l == l]).max(axis=0))]
       for l in (0, 2, 4, 6)]
fig, axes = plt.subplots(1, 3, figsize=(11.5, 3.4), dpi=150)
for k in top:
    a_, b_, l_, n1, n2 = res.feature_labels[k]
    axes[0].plot(r, p[:, k], label=f"$l={l_},\\ n={n1},\\ n'={n2}$")
    axes[1].plot(r, dpdr[:, k])
axes[1].plot(r[::6], fd[::6, top[0]], "k.", ms=3, label="finite differences")
for ax in axes[:2]:
    ax.axvspan(rc - width, rc, color="0.9", zorder=0)
    ax.axvline(rc, color="0.4", lw=0.8)
    ax.set_xlabel("Si–Si distance $r$ (Å)")
axes[0].text(rc - width / 2, 0.4, "switching\nregion", transform=axes[0].get_xaxis_transform(),
             ha="center", fontsize=7)
axes[0].set_ylabel(r"$p_{nn'l}(r) - p_{nn'l}(\infty)$")
axes[1].set_ylabel(r"$\partial p_{nn'l} / \partial r$ (Å$^{-1}$)")
axes[0].legend(fontsize=7, loc="upper right")
axes[1].legend(fontsize=7)
axes[0].set_title("Power spectrum of one atom of a Si dimer", fontsize=9)
axes[1].set_title("Its analytic derivative", fontsize=9)
axes[2].loglog(gaps_rc, p_rc, "o-", ms=3, label=r"$|\mathbf{p} - \mathbf{p}_\infty|$")
axes[2].loglog(gaps_rc, slope_rc, "s-", ms=3,
               label=r"$|\partial \mathbf{p}/\partial r|$ (Å$^{-1}$)")
axes[2].loglog(gaps_rc, p_rc[0] * (gaps_rc / gaps_rc[0]) ** 2, "k:", lw=0.8,
               label="slopes 2 and 1")
axes[2].loglog(gaps_rc, slope_rc[0] * gaps_rc / gaps_rc[0], "k:", lw=0.8)
axes[2].set_xlabel("distance to the cutoff $r_c - r$ (Å)")
axes[2].set_ylabel("norm over all features")
axes[2].legend(fontsize=7)
axes[2].set_title("Both vanish continuously at $r_c$", fontsize=9)
fig.tight_layout()
save(fig, OUT / "dimer_through_cutoff.png")

# %% [markdown]
# ## How far apart are the environments of a data set?
#
# For unit vectors, $|\hat{\mathbf{q}} - \hat{\mathbf{q}}'|^2 = 2 - 2\,\hat{\mathbf{q}}\cdot
# \hat{\mathbf{q}}'$, so the kernel and the descriptor distance carry the same information.
# The distance from the perfect-crystal environment sorts the Zuo et al. Si training set by
# "novelty". We group the environments by what made them (from each frame's `description`):
# strained perfect crystals, MD of the crystal below the melting point (300–1518 K; Si melts
# at 1687 K), MD of the liquid (2530 and 3374 K, with or without a vacancy), slabs with
# surfaces, and the frames labelled "Vacancy, 300 K". The descriptor immediately flags the
# last group: these are not a crystal with a vacancy at all but disordered, strongly sheared
# cells about 0.7 eV/atom above the crystal (coordination numbers from 2 to 7), as their
# distances show. This is the geometry the Gaussian process sees; its predicted variance
# (tutorial 04) grows with the distance to the training environments.
#
# For the uniaxially strained cells ($a_x \to (1 + \varepsilon) a_x$) the distance is linear
# in $|\varepsilon|$ near zero, with the slope given by the analytic strain gradient:
# $d \approx |\varepsilon\, \partial \hat{\mathbf{q}}/\partial \epsilon_{xx}|$.

# %%


def group(atoms):
    """A coarse label of how a Zuo et al. Si frame was made."""
    ctype, desc = atoms.info["config_type"], atoms.info["description"]
    kelvin = int(re.search(r"(\d+) K", desc).group(1)) if " K" in desc else None
    if ctype in ("Elastic", "Surface"):
        return {"Elastic": "strained crystal", "Surface": "surface slab"}[ctype]
    if kelvin >= 2000:
        return "liquid MD (2530-3374 K)"
    return "'Vacancy, 300 K'" if ctype == "Vacancy" else "crystal MD (300-1518 K)"


GROUPS = ["strained crystal", "'Vacancy, 300 K'", "crystal MD (300-1518 K)",
          "liquid MD (2530-3374 K)", "surface slab"]
frames = si_train[::3] if FAST else si_train
res_all = soap_si.compute(frames)
q_ref = res.values[0]
dist = np.linalg.norm(res_all.values - q_ref, axis=1)
label_of = np.array([group(frames[s]) for s in res_all.centre_structure])
median = {g: np.median(dist[label_of == g]) for g in GROUPS}
print("SOAP distance from the perfect crystal: median, 95th percentile, max")
for g in GROUPS:
    d_g = dist[label_of == g]
    print(f"  {g:25s} {median[g]:.3f}  {np.percentile(d_g, 95):.3f}  {d_g.max():.3f}  "
          f"({d_g.size} atoms)")
assert (median["strained crystal"] < median["crystal MD (300-1518 K)"]
        < median["liquid MD (2530-3374 K)"] < median["'Vacancy, 300 K'"]), median

uni = [a for a in si_train if a.info["description"].startswith("Si 2x2x2 cell, mode 0")]
eps = np.array([a.cell[0, 0] / crystal.cell[0, 0] - 1 for a in uni])
d_uni = np.array([np.linalg.norm(soap_si.compute(a).values - q_ref, axis=1).mean()
                  for a in uni])
s_grad = soap_si.compute(crystal, gradients=["strain"]).strain_gradients[0, 0, 0]
slope = np.linalg.norm(s_grad)
small = np.abs(eps) < 0.025
ratio = d_uni[small] / (slope * np.abs(eps[small]))
print(f"|dq/d eps_xx| = {slope:.3f}; measured / linear prediction at |eps| ~ 0.02: "
      f"{np.round(ratio, 3)}")
assert np.all(np.abs(ratio - 1) < 0.05), ratio

fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4), dpi=150)
for g in GROUPS:
    d_g = np.sort(dist[label_of == g])
    axes[0].step(d_g, np.arange(1, d_g.size + 1) / d_g.size, where="post", lw=1.2,
                 label=f"{g} ({d_g.size})")
axes[0].set_xlabel(r"SOAP distance to the crystal $|\hat{\mathbf{q}}_i - \hat{\mathbf{q}}_0|$")
axes[0].set_ylabel("fraction of environments within")
axes[0].legend(fontsize=7, title="Si training atoms", title_fontsize=7)
axes[0].set_title("How novel is each environment?", fontsize=9)
# markers only (the strains are unevenly spaced: no line through gaps without data), and
# the relaxed crystal itself as the point at zero strain
axes[1].plot(100 * eps, d_uni, "o", ms=4, label="strained DFT cells (mode 0)")
axes[1].plot([0.0], [np.linalg.norm(res.values - q_ref, axis=1).mean()], "s", ms=5,
             color="C1", label="relaxed crystal")
e_line = np.linspace(-0.1, 0.1, 41)
axes[1].plot(100 * e_line, slope * np.abs(e_line), "k--", lw=0.8,
             label=r"$|\varepsilon|\,|\partial\hat{\mathbf{q}}/\partial\epsilon_{xx}|$")
axes[1].set_xlabel(r"uniaxial strain $\varepsilon_{xx}$ (%)")
axes[1].set_ylabel("SOAP distance to the crystal")
axes[1].legend(fontsize=7)
axes[1].set_title("Strained crystals: distance grows linearly", fontsize=9)
fig.tight_layout()
save(fig, OUT / "si_environment_distances.png")

# %% [markdown]
# ## Resolution and cost: $n_\mathrm{max}$ and $l_\mathrm{max}$
#
# $n_\mathrm{max}$ sets the radial resolution and $l_\mathrm{max}$ the angular one (roughly
# $\pi / l_\mathrm{max}$ radians); finer Gaussians ($\sigma_\mathrm{at}$ smaller) need more of
# both. The number of features grows as $n_\mathrm{max}^2 S^2 l_\mathrm{max}$, and so do the
# cost of the kernel and the memory of the gradients. Timings below are for the 64-atom MD
# snapshot, on one thread of whatever machine runs this (they vary with its load).

# %%
settings = [(4, 3), (6, 4), (8, 6)] + ([] if FAST else [(10, 8), (12, 10)])
threads = torch.get_num_threads()
torch.set_num_threads(1)                             # single-thread timings, as in the README
print(" n_max l_max  features  values (µs/atom)  + gradients (µs/atom)")
for n_max, l_max in settings:
    s = SOAP(cutoff=5.0, cutoff_width=1.0, n_max=n_max, l_max=l_max, atom_sigma=0.5,
             species=[14])
    s.compute(md_si)                                 # tabulate the radial integrals once
    t_val, t_grad = [], []
    for _ in range(3):                               # best of three: the machine is shared
        t0 = time.perf_counter()
        v = s.compute(md_si)
        t1 = time.perf_counter()
        s.compute(md_si, gradients=True)
        t_val.append(t1 - t0)
        t_grad.append(time.perf_counter() - t1)
    assert v.n_features == n_features(1, n_max, l_max)
    print(f"{n_max:5d} {l_max:5d} {v.n_features:9d} {1e6 * min(t_val) / len(md_si):17.0f} "
          f"{1e6 * min(t_grad) / len(md_si):22.0f}")
torch.set_num_threads(threads)

# %% [markdown]
# ## Summary
#
# * SOAP turns each atom's neighbourhood into a vector that is invariant to rotations,
#   inversion, translations, relabelling of like atoms and the choice of periodic images
#   (checked above to $10^{-10}$), but not to swapping different elements.
# * Its analytic gradients agree with finite differences to about $10^{-9}$ relative; from
#   the invariances, any model built on it has zero net force and torque and a symmetric
#   virial, exactly.
# * The cutoff function makes values and first derivatives go continuously to the
#   isolated-atom limit at $r_c$: the potential is local and smooth. (The cosine switch is
#   $C^1$: second derivatives jump at $r_c - w$ and $r_c$, visible as kinks in the slope.)
# * Distances between normalised spectra measure how novel an environment is; tutorial 03
#   fits a GAP on these environments and tutorial 04 shows the predicted variance following
#   this novelty.

# %%
elapsed = time.perf_counter() - T_START
print(f"figures written to {OUT}: {sorted(p.name for p in OUT.glob('*.png'))}")
print(f"total time {elapsed:.1f} s")
