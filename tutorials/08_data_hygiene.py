# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Data hygiene: finding a bad training frame with leave-one-out
#
# A potential is only as good as its reference data, and reference data sets are assembled
# by people and scripts from many calculations. Some frames end up wrong: an SCF cycle that
# did not converge, a calculation run with a different pseudopotential, smearing or spin
# setting (shifting its energy by a constant), forces written out in the wrong order or
# attached to the wrong geometry. One such frame among hundreds is invisible in a parity
# plot of the training set, because the model bends to fit it.
#
# **Leave-one-out** (LOO) cross-validation asks the question that exposes it: *if this frame
# were not in the training set, how well would the model predict it?* A frame whose labels
# disagree with everything else is predicted badly by a model that did not see it. Refitting
# once per frame would be expensive, but for a linear smoother it is not needed. The sparse
# GP's predictions on its training observations are $\tilde\mu = H \tilde y$ (whitened by
# the noise, $\tilde y = \Sigma^{-1/2} y$) with the **hat matrix**
#
# $$H = B\,(K_{MM} + B^\top B)^{-1} B^\top, \qquad B = \Sigma^{-1/2} K_{NM},$$
#
# and leaving out a group $f$ of observations (a whole frame: its energy and all its force
# components) gives the residual in closed form,
#
# $$\tilde r_{-f} = (I - H_{ff})^{-1}\, \tilde r_f ,$$
#
# where $\tilde r_f$ are the frame's residuals in the full fit. `gapkit.uq.leave_one_out`
# computes this from the QR factor of the fit, without refitting, exactly (for fixed sparse
# points, e0 and hyper-parameters). Two numbers per frame matter:
#
# * the **LOO residual**, standardised by its predictive standard deviation ($z$): large when
#   the frame's labels disagree with what the rest of the data implies;
# * the **leverage** $\operatorname{tr} H_{ff}$: how much the frame's own labels determine
#   its own fit. High leverage means the frame sits in a sparsely sampled region and the
#   model relies on it: a *unique* configuration, not necessarily a wrong one.
#
# A corrupted frame typically has an ordinary configuration (ordinary leverage) and labels
# that contradict its neighbours (large residual). A rare but correct configuration has high
# leverage and may also have a large LOO residual, because without it the model simply has
# no information there. Telling these apart is the point of looking at both.
#
# We use 9-atom ethanol molecules from rMD17 (DFT PBE/def2-SVP), corrupt one training frame,
# find it, remove it and refit.

# %%
import os
import time
from pathlib import Path

import matplotlib

from gapkit.plot import save, script_backend

matplotlib.use(script_backend())  # files as a script, inline figures in Jupyter
import matplotlib.pyplot as plt
import numpy as np
import torch
from ase.calculators.singlepoint import SinglePointCalculator

import gapkit
from gapkit import GAP, SOAP, NoiseModel, SOAPKernel, Term, uq

# this folder when run as a script; the working directory when opened as a notebook
_HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
FAST = os.environ.get("GAPKIT_FAST") == "1"
OUT = Path(os.environ.get("GAPKIT_TUTORIAL_OUT",
                          _HERE / "figures")) / "08_data_hygiene"
OUT.mkdir(parents=True, exist_ok=True)
if FAST:
    torch.set_num_threads(1)
T_START = time.perf_counter()

# %% [markdown]
# ## Data and model
#
# The bundled file holds 200 frames drawn at random from a long MD run (not consecutive
# steps). The first ones are our training set, the last 50 the test set. Energies are total
# DFT energies in eV (about −4209 eV per molecule); the GAP fits them relative to one
# offset per element.
#
# Labels live in a `SinglePointCalculator` on each frame (ASE ≥ 3.23 puts them there when
# reading). To corrupt a frame we give it a new one; the helper below copies a frame with
# optional new labels.

# %%
frames = gapkit.data.load_bundled("ethanol_rmd17_200.xyz")
N_TRAIN = 50 if FAST else 120
test = frames[150:]


def relabel(atoms, energy=None, forces=None, drop_energy=False):
    """A copy of ``atoms`` with its labels (eV, eV/Å), optionally replaced, or without its
    energy (``drop_energy``: the frame then contributes its forces only)."""
    new = atoms.copy()
    labels = {"forces": atoms.get_forces() if forces is None else forces}
    if not drop_energy:
        labels["energy"] = atoms.get_potential_energy() if energy is None else energy
    new.calc = SinglePointCalculator(new, **labels)
    return new


clean = [relabel(a) for a in frames[:N_TRAIN]]
e_all = np.array([a.get_potential_energy() for a in clean])
print(f"{len(clean)} training frames, {len(test)} test frames; training energies span "
      f"{np.ptp(e_all):.2f} eV ({1e3 * np.ptp(e_all) / 9:.0f} meV/atom)")


def build_model():
    soap = SOAP(cutoff=4.0, cutoff_width=1.0, n_max=6, l_max=4, atom_sigma=0.5,
                species=[1, 6, 8])
    return GAP([Term(soap, SOAPKernel(zeta=4, delta=1.0), n_sparse=150 if FAST else 250)],
               noise=NoiseModel(energy=0.002, forces=0.05), progress=False)


E_TEST = np.array([a.get_potential_energy() for a in test])
F_TEST = np.concatenate([a.get_forces() for a in test])


def test_errors(model):
    """Test energy MAE (meV/atom) and force MAE (eV/Å)."""
    pred = model.predict(test, return_variance=False)
    return (1e3 * float(np.mean(np.abs(pred.energy - E_TEST) / pred.n_atoms)),
            float(np.mean(np.abs(pred.forces - F_TEST))))


# %% [markdown]
# ## A frame with a shifted energy
#
# Frame `BAD` gets its energy raised by 1 eV (111 meV/atom), the size of error a calculation
# with different settings can produce; its geometry and forces stay correct.

# %%
BAD = 37
SHIFT = 1.0  # eV
corrupted = list(clean)
corrupted[BAD] = relabel(clean[BAD], energy=clean[BAD].get_potential_energy() + SHIFT)

t0 = time.perf_counter()
model_bad = build_model().fit(corrupted)
t_fit = time.perf_counter() - t0
t0 = time.perf_counter()
loo = uq.leave_one_out(model_bad, corrupted)
t_loo = time.perf_counter() - t0
print(f"fit {t_fit:.1f} s; leave-one-out for all {len(corrupted)} frames {t_loo:.1f} s "
      "(no refits)")
pred_train = model_bad.predict([corrupted[BAD]], forces=False, return_variance=False)
print(f"frame {BAD} in the fit that contains it: residual "
      f"{1e3 * (corrupted[BAD].get_potential_energy() - pred_train.energy[0]) / 9:.1f} "
      f"meV/atom; left out: {1e3 * loo.energy_loo_per_atom[BAD]:.1f} meV/atom "
      f"(z = {loo.energy_loo_z[BAD]:.1f})")
print("most suspicious frames:")
for row in loo.suspicious(4):
    print(f"  frame {row['frame']:3d}: score {row['score']:7.1f}  energy LOO "
          f"{1e3 * row['energy_loo_eV_per_atom']:7.1f} meV/atom (z {row['energy_loo_z']:6.1f})"
          f"  force LOO RMSE {row['forces_loo_rmse_eV_per_A']:.3f} eV/Å  leverage "
          f"{row['leverage']:.2f}")

# %% [markdown]
# The bad frame stands out even in the fit that contains it, because the shift is large; left
# out, its residual recovers nearly all of the 1 eV and its $z$ is enormous. For subtler
# errors the gap between the training residual and the LOO residual is what makes LOO worth
# it: a flexible model fits a wrong label partly, and only the left-out prediction shows what
# the rest of the data really implies. `LOOResult.ranking` orders the frames by `frame_score`:
# for each observation kind (energy, forces) the frame's sum of squared LOO $z$, over a noise
# scale set by the median frame, is read as a chi-squared with one degree of freedom per
# observation and converted to the standard-normal $z$ of its tail probability; the larger of
# the two kinds is the score (a few units for a typical frame — the force components of one
# frame are correlated, so the tail is somewhat heavier than a true chi-squared — and far
# above the rest for a bad label). Taking the scale from the median makes the score robust to
# a noise model that is globally too small or too large — here the energy noise (2 meV/atom)
# is smaller than the model's real error, so every $|z|$ is inflated, but the ranking is not —
# and the chi-squared tail puts one energy and $3N$ force components on one scale.
#
# The runners-up are worth a look too; the printout below the figure says what drives each
# of their scores (which kind's misfit, against the median frame), their leverage, and how
# unusual their geometry is (energy above the lowest, RMS reference force).

# %%
lev = loo.frame_leverage
score = loo.frame_score
order = loo.ranking
fig, axes = plt.subplots(1, 3, figsize=(12.0, 3.6), dpi=150)
idx = np.arange(len(corrupted))
colors = np.where(idx == BAD, "C3", "C0")
axes[0].bar(idx, loo.energy_loo_z, color=colors, width=0.8)
axes[0].set_xlabel("training frame (index)")
axes[0].set_ylabel("energy LOO z")
axes[0].set_title(f"energy of frame {BAD} shifted by {SHIFT:g} eV", fontsize=9)
axes[1].bar(idx, loo.forces_loo_rmse, color=colors, width=0.8)
axes[1].set_xlabel("training frame (index)")
axes[1].set_ylabel("force LOO RMSE (eV/Å)")
axes[1].set_title("forces of the same fit (labels intact)", fontsize=9)
axes[2].scatter(lev, score, s=12, color="C0", label="frames")
axes[2].scatter(lev[BAD], score[BAD], s=60, facecolor="none", edgecolor="C3", lw=1.5,
                label=f"corrupted frame {BAD}")
for k in order[1:3]:
    axes[2].annotate(str(k), (lev[k], score[k]), fontsize=7, xytext=(4, 2),
                     textcoords="offset points")
axes[2].axvline(np.median(lev), color="0.6", lw=0.8, ls=":", label="median leverage")
axes[2].axhline(5.0, color="C3", lw=0.8, ls="--", label="score 5")
axes[2].set_xlabel(r"frame leverage tr $H_{ff}$")
axes[2].set_ylabel("frame score (tail z of the LOO misfit)")
axes[2].set_title("residual vs leverage", fontsize=9)
axes[2].legend(fontsize=7, frameon=False)
fig.tight_layout()
save(fig, OUT / "loo_energy_shift.png")
e_rel = e_all - e_all.min()
f_rms = np.array([np.sqrt(np.mean(a.get_forces() ** 2)) for a in clean])
f_rank = np.argsort(np.argsort(-f_rms)) + 1          # 1 = largest RMS force of the set
mis_med = np.nanmedian(loo.frame_misfit[:, :2], axis=0)
print(f"frame scores: median {np.median(score):.1f}, 90th percentile "
      f"{np.quantile(score, 0.9):.1f}; misfit medians: energy {mis_med[0]:.1f}, forces "
      f"{mis_med[1]:.1f}; leverage median {np.median(lev):.2f} (corrupted frame {lev[BAD]:.2f})")
print(f"{'frame':>5s} {'score':>6s} {'misfit E':>9s} {'misfit F':>9s} {'leverage':>9s} "
      f"{'E - E_min':>10s} {'RMS force':>9s} (rank)")
print(f"{'':5s} {'':6s} {'':9s} {'':9s} {'':9s} {'eV':>10s} {'eV/Å':>9s}")
for k in order[:5]:
    print(f"{k:5d} {score[k]:6.1f} {loo.frame_misfit[k, 0]:9.1f} {loo.frame_misfit[k, 1]:9.1f} "
          f"{lev[k]:9.2f} {e_rel[k]:10.2f} {f_rms[k]:9.2f} ({f_rank[k]:d} of {len(clean)})")
print(f"frame {BAD} ranks {int(np.nonzero(order == BAD)[0][0]) + 1} by score; its score is "
      f"{score[BAD] / score[order[1]]:.1f}x the runner-up's")

# %% [markdown]
# The runners-up are no second group of outliers but the top of a continuous tail: in full
# mode (2026-11-21) they scored 5.7, 5.3, 5.1 and 4.9, against a median frame score of 0.8
# and a 90th percentile of 3.0, with no gap between them — the gap is between them and the
# corrupted frame (23). Their scores come from their forces, with force misfits about three
# times the median; their energy misfits range from below the median (the first two) to
# some twenty times it for the fourth, the highest-energy geometry of the training set
# (0.95 eV above the lowest). Their leverages are at or above the median, and they include
# the two frames with the largest RMS reference forces of the set: unusual but plausible
# configurations that the rest of the data predict less well, as some must in any data set.
# Nothing marks them as wrong; the frame with a bad label stands apart.

# %% [markdown]
# ## Remove and refit
#
# In a real project, inspect the flagged frame first (rerun the DFT, check the settings in
# its output). Without a corrected label there are two repairs: drop the whole frame, or —
# since `frame_misfit` says it is the *energy* that disagrees (its energy misfit is huge,
# its force misfit ordinary) — drop only its energy and keep its forces. A GAP fits whatever
# labels a frame carries. We compare the test errors of both repairs with the corrupted fit
# and with the fit on the original, uncorrupted labels.

# %%
print(f"frame {order[0]}: energy misfit {loo.frame_misfit[order[0], 0]:.0f}, force misfit "
      f"{loo.frame_misfit[order[0], 1]:.1f} (medians {np.nanmedian(loo.frame_misfit[:, 0]):.1f}"
      f", {np.nanmedian(loo.frame_misfit[:, 1]):.1f})")
cleaned = [a for k, a in enumerate(corrupted) if k != order[0]]
no_energy = list(corrupted)
no_energy[order[0]] = relabel(corrupted[order[0]], drop_energy=True)
model_cleaned = build_model().fit(cleaned)
model_no_energy = build_model().fit(no_energy)
model_clean = build_model().fit(clean)
errors = {"corrupted": test_errors(model_bad), "frame removed": test_errors(model_cleaned),
          "its energy removed": test_errors(model_no_energy),
          "original labels": test_errors(model_clean)}
for name, (e, f) in errors.items():
    print(f"{name:18s} test energy MAE {e:6.2f} meV/atom, force MAE {f:.4f} eV/Å")
loo_clean = uq.leave_one_out(model_clean, clean)
print(f"frame {BAD} with its correct label: score {loo_clean.frame_score[BAD]:.1f}, rank "
      f"{int(np.nonzero(loo_clean.ranking == BAD)[0][0]) + 1} of {len(clean)}")

fig, axes = plt.subplots(1, 2, figsize=(8.0, 3.2), dpi=150)
names = list(errors)
for ax, j, unit in ((axes[0], 0, "test energy MAE (meV/atom)"),
                    (axes[1], 1, "test force MAE (eV/Å)")):
    vals = [errors[n][j] for n in names]
    bars = ax.bar(range(len(names)), vals, color=["C3", "C1", "C2", "C0"])
    # bars start at zero: the differences are a few per cent, and look it
    ax.bar_label(bars, fmt="%.2f" if j == 0 else "%.4f", fontsize=7, padding=2)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel(unit)
    ax.set_ylim(0, 1.15 * max(vals))
fig.suptitle(f"ethanol GAP, {len(clean)} training frames, frame {BAD} energy +{SHIFT:g} eV",
             fontsize=9)
fig.tight_layout()
save(fig, OUT / "repairs_test_errors.png")

# %% [markdown]
# One bad energy among many frames does limited damage to the *test* errors — the kernel
# spreads its influence over the configurations similar to it, and the forces of all frames
# keep the shape of the surface right — but the damage is real and local: energies of
# configurations near the bad one are shifted, which is exactly where a later simulation may
# go. In full mode (2026-11-21) the test energy MAE was about 4.3 meV/atom with the corrupted
# frame, 4.1 with the frame removed, and about 3.7 — the value with the original labels —
# with only its energy removed. Removing the whole frame also throws away its 27 correct
# force components, and the test force MAE got slightly *worse* (0.175 against 0.167 eV/Å);
# dropping only the faulty label costs nothing. With its correct label the same frame is
# unremarkable in the LOO ranking.
#
# ## Forces attached to the wrong geometry
#
# A subtler bookkeeping error: frame `BAD` keeps its energy but receives the forces of
# another frame. Its energy LOO is normal; its force misfit is not.

# %%
swapped = list(clean)
swapped[BAD] = relabel(clean[BAD], forces=clean[BAD + 1].get_forces())
model_swap = build_model().fit(swapped)
loo_swap = uq.leave_one_out(model_swap, swapped)
misfit_f = loo_swap.frame_misfit[:, 1]
f_order = np.argsort(-misfit_f)
print("most suspicious frames (overall score):")
for row in loo_swap.suspicious(3):
    print(f"  frame {row['frame']:3d}: score {row['score']:6.1f}  energy misfit "
          f"{row['misfit_energy']:8.1f}  force misfit {row['misfit_forces']:8.1f}  force LOO "
          f"RMSE {row['forces_loo_rmse_eV_per_A']:.3f} eV/Å")
print(f"largest force misfit: frame {f_order[0]} ({misfit_f[f_order[0]]:.0f}; the next "
      f"{misfit_f[f_order[1]]:.0f}, median {np.median(misfit_f):.0f})")

fig, ax = plt.subplots(figsize=(5.0, 3.6), dpi=150)
ax.scatter(loo_swap.frame_misfit[:, 0], misfit_f, s=12, color="C0", label="frames")
ax.scatter(loo_swap.frame_misfit[BAD, 0], misfit_f[BAD], s=60, facecolor="none",
           edgecolor="C3", lw=1.5, label=f"frame {BAD}: forces of frame {BAD + 1}")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel(r"energy misfit: LOO $z^2$")
ax.set_ylabel(r"force misfit: mean LOO $z^2$")
ax.set_title("per-kind LOO misfit, forces swapped", fontsize=9)
ax.legend(fontsize=7, frameon=False)
fig.tight_layout()
save(fig, OUT / "loo_forces_swapped.png")

# %% [markdown]
# The force column singles the frame out by an order of magnitude, and so does the overall
# `frame_score`. A mean of squared $z$ over $3N = 27$ force components is much tighter than
# the single squared $z$ of an energy, so a force misfit six times the typical one is far
# more surprising than an energy misfit six times the typical one; the chi-squared tail
# behind `frame_score` accounts for that. The per-kind columns of `LOOResult.suspicious()`
# (`misfit_energy`, `misfit_forces`) say which label to check.
#
# **Practical recipe.** After every fit on a new data set: run `uq.leave_one_out`, look at the
# top of `suspicious()`, and for each flagged frame ask whether its leverage is high (a rare,
# informative configuration: keep it, perhaps add more like it) or ordinary (check its
# reference calculation). It costs one pass over the data, about as much as the fit.

# %% [markdown]
# ## Checks

# %%
assert order[0] == BAD, f"the shifted frame should rank first, got {loo.suspicious(3)}"
assert score[BAD] > 2 * score[order[1]], (score[BAD], score[order[1]])
assert abs(loo.energy_loo_per_atom[BAD] * 9 - SHIFT) < 0.5 * SHIFT, (
    f"LOO energy residual {9 * loo.energy_loo_per_atom[BAD]:.2f} eV should recover most of "
    f"the {SHIFT} eV shift")
assert lev[BAD] < np.quantile(lev, 0.9), "the corrupted frame's configuration is ordinary"
assert errors["frame removed"][0] < errors["corrupted"][0], errors
assert errors["its energy removed"][0] < errors["frame removed"][0], errors
assert abs(errors["its energy removed"][1] / errors["original labels"][1] - 1) < 0.02, errors
assert loo_clean.frame_score[BAD] < 5.0 < score[BAD], "with its true label it is unremarkable"
assert f_order[0] == BAD and misfit_f[BAD] > 5 * misfit_f[f_order[1]], (
    "the frame with swapped forces should have the largest force misfit by far")
assert loo_swap.ranking[0] == BAD, loo_swap.suspicious(5)
print(f"all checks passed in {time.perf_counter() - T_START:.0f} s")
