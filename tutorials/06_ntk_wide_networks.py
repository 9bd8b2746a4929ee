# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Wide neural networks and kernels: the NTK link between GAP and Behler–Parrinello networks
#
# Two families of machine-learned potentials look unrelated. A **GAP** writes the local
# energy as kernel regression on descriptors, $\varepsilon(\mathbf q) = \sum_m \alpha_m
# k(\mathbf q, \mathbf z_m)$, fitted by linear algebra, with a Bayesian variance. A
# **Behler–Parrinello network** writes it as a neural network, $\varepsilon(\mathbf q) =
# f(\mathbf q; \theta)$, fitted by gradient descent on a loss. In both the total energy is a
# sum over atoms, $E = \sum_i \varepsilon(\mathbf q_i)$.
#
# They meet when the network is infinitely wide. Take a fully connected network with
# $L$ hidden layers of width $n$ in the **NTK parameterisation**,
#
# $$\mathbf h^{(\ell+1)} = \frac{\sigma_W}{\sqrt{n_\ell}}\, W^{(\ell)} \phi(\mathbf h^{(\ell)})
#   + \sigma_b\, \mathbf b^{(\ell)}, \qquad W_{ij}, b_i \sim \mathcal N(0, 1),$$
#
# with activation $\phi$ (ReLU, or erf). Two limits follow as $n \to \infty$:
#
# * **At initialisation** each output is a sum of many independent terms, so by the central
#   limit theorem the network is a Gaussian process over functions, with the **NNGP**
#   covariance $K(\mathbf x, \mathbf x') = \mathbb E_\theta[f(\mathbf x) f(\mathbf x')]$,
#   computed layer by layer in closed form (for ReLU, the arc-cosine kernel).
# * **During training** by gradient descent on a squared loss, the outputs move as
#   $\dot f(\mathbf x) = -\eta\, \Theta(\mathbf x, X)\, \nabla_f \mathcal L$ with the
#   **neural tangent kernel** $\Theta(\mathbf x, \mathbf x') = \sum_p \partial_{\theta_p}
#   f(\mathbf x)\, \partial_{\theta_p} f(\mathbf x')$. For infinite width $\Theta$ is
#   deterministic and does not change during training (every weight moves by a vanishing
#   amount): training is linear, and the converged network is **kernel regression with the
#   NTK**, $f(\mathbf x) = \Theta(\mathbf x, X)\,\Theta(X, X)^{-1} \mathbf y$ (starting from a
#   network centred to output zero).
#
# For a per-atom network summed over atoms, the structure-level NTK is
# $\sum_{i \in A}\sum_{j \in B} \Theta(\mathbf q_i, \mathbf q_j)$ — exactly the form of a GAP
# kernel. So a GAP whose kernel is the NTK on SOAP vectors *is* the infinitely wide
# Behler–Parrinello network trained to convergence (the GAP noise acting as a ridge; for a
# sparse GAP, up to the sparse approximation), and GAP and the wide network coincide when
# their kernels are proportional. This tutorial checks each step numerically with
# `gapkit.ntk`.

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

import gapkit
from gapkit import GAP, SOAP, NoiseModel, NTKKernel, SOAPKernel, Term, plot, uq
from gapkit.kernels import nngp_and_ntk
from gapkit.ntk import (
    AtomicMLP,
    compare_models,
    ntk_width_convergence,
    training_vs_kernel_regression,
)

# this folder when run as a script; the working directory when opened as a notebook
_HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
FAST = os.environ.get("GAPKIT_FAST") == "1"
OUT = Path(os.environ.get("GAPKIT_TUTORIAL_OUT",
                          _HERE / "figures")) / "06_ntk_wide_networks"
OUT.mkdir(parents=True, exist_ok=True)
if FAST:
    torch.set_num_threads(1)
T_START = time.perf_counter()

# %% [markdown]
# ## The analytic kernels of a ReLU network
#
# `gapkit.kernels.nngp_and_ntk(x1, x2, depth=..., activation=...)` returns the pair (NNGP, NTK) of a
# network with `depth` hidden layers, following the conventions of the neural-tangents
# library (input covariance $\mathbf x\cdot\mathbf x'/d$). For inputs of equal length the
# kernels depend only on the angle between them. Below: two-dimensional unit-norm inputs
# (scaled by $\sqrt d$ so that $|\mathbf x|^2/d = 1$) at angle $\gamma$, without biases.

# %%
gamma = np.linspace(0.0, np.pi, 181)
x_angle = np.sqrt(2.0) * np.stack([np.cos(gamma), np.sin(gamma)], axis=1)
DEPTHS = (1, 2, 3, 5)
fig, axes = plt.subplots(1, 2, figsize=(8.6, 3.4), dpi=150)
for j, depth in enumerate(DEPTHS):
    pair = nngp_and_ntk(x_angle[:1], x_angle, depth=depth, activation="relu", b_std=None)
    nngp, ntk = pair.nngp.numpy()[0], pair.ntk.numpy()[0]
    axes[0].plot(np.degrees(gamma), nngp / nngp[0], color=f"C{j}", label=f"depth {depth}")
    axes[1].plot(np.degrees(gamma), ntk / ntk[0], color=f"C{j}", label=f"depth {depth}")
    if depth == 1:
        # closed form for one ReLU layer: the arc-cosine kernel of order 1
        arccos1 = (np.sin(gamma) + (np.pi - gamma) * np.cos(gamma)) / np.pi
        assert np.allclose(nngp / nngp[0], arccos1, atol=1e-10), "ReLU NNGP != arc-cosine"
for ax, name in zip(axes, ("NNGP $K$", r"NTK $\Theta$")):
    ax.set_xlabel("angle between inputs γ (degrees)")
    ax.set_ylabel(f"{name}(γ) / {name}(0)")
    ax.set_title(f"ReLU network, no bias: {name}", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
fig.tight_layout()
save(fig, OUT / "relu_kernels_vs_angle.png")

# %% [markdown]
# The one-layer NNGP is the arc-cosine kernel $(\sin\gamma + (\pi-\gamma)\cos\gamma)/\pi$
# (asserted above). With depth the NNGP flattens towards 1 — a deep ReLU network at
# initialisation maps all inputs to nearly the same output direction — while the NTK keeps
# a sharp peak at $\gamma = 0$ and discriminates between inputs: training all layers
# matters. The ReLU NTK has a cusp at $\gamma = 0$: it is continuous but not differentiable
# there, which becomes important for forces below.
#
# ## What "infinite width" means, in numbers
#
# First the NNGP. We sample many finite ReLU networks (`AtomicMLP`, the per-atom network of
# `gapkit.ntk`, NTK parameterisation) with different seeds and compare the covariance of
# their outputs with the analytic NNGP, on SOAP vectors of a few silicon environments.

# %%
si_train = gapkit.data.load_bundled("Si_train.xyz")
si_test = gapkit.data.load_bundled("Si_test.xyz")
n_tr, n_te = (6, 3) if FAST else (12, 6)
# evenly spaced frames: every config type (AIMD, elastic, vacancy, surface) in both sets
train = [si_train[i] for i in np.linspace(0, len(si_train) - 1, n_tr).round().astype(int)]
test = [si_test[i] for i in np.linspace(0, len(si_test) - 1, n_te).round().astype(int)]
desc = SOAP(cutoff=5.0, cutoff_width=1.0, n_max=4, l_max=4, atom_sigma=0.5, species=[14])
res_train, res_test = desc.compute(train), desc.compute(test)
d = res_train.n_features
rng = np.random.default_rng(0)
env = rng.choice(res_train.n_centres, size=12, replace=False)
q = res_train.torch("values")[env]  # 12 environments, unit-norm SOAP vectors
print(f"{len(train)} training / {len(test)} test frames; SOAP: {d} features")

WIDTH_MC, N_NETS = (256, 200) if FAST else (512, 400)
outs = []
for seed in range(N_NETS):
    net = AtomicMLP(d, [14], width=WIDTH_MC, depth=2, activation="relu", b_std=0.1, seed=seed)
    with torch.no_grad():
        outs.append(net(q, torch.full((q.shape[0],), 14)).numpy())
outs = np.array(outs)
cov_mc = outs.T @ outs / N_NETS
# AtomicMLP feeds x = sqrt(d) q to the network; nngp_and_ntk() assumes covariance x.x'/d
pair = nngp_and_ntk(np.sqrt(d) * q, depth=2, activation="relu", b_std=0.1)
nngp = pair.nngp.numpy()
mc_error = float(np.linalg.norm(cov_mc - nngp) / np.linalg.norm(nngp))
print(f"{N_NETS} networks of width {WIDTH_MC}: |Cov_MC - K_NNGP|_F / |K_NNGP|_F = "
      f"{mc_error:.3f} (sampling error ~ sqrt(2/{N_NETS}) = {np.sqrt(2 / N_NETS):.3f})")

# %% [markdown]
# Now the NTK. For one network, the empirical NTK $J J^\top$ ($J$ the Jacobian of the
# output with respect to all parameters, from `torch.func`) fluctuates around the analytic
# NTK with a relative size that shrinks as $1/\sqrt{n}$. `ntk_width_convergence` measures the
# relative Frobenius distance for several widths and seeds.

# %%
WIDTHS = (32, 128, 512) if FAST else (32, 64, 128, 256, 512, 1024)
t0 = time.perf_counter()
conv = ntk_width_convergence(q, widths=WIDTHS, seeds=3 if FAST else 8, depth=2,
                             activation="relu", b_std=0.1)
print(f"empirical vs analytic ReLU NTK ({time.perf_counter() - t0:.1f} s):")
for w, m, s in zip(conv.widths, conv.distance_mean, conv.distance_std):
    print(f"  width {w:5d}: relative distance {m:.3f} ± {s:.3f}")
print(f"  log-log slope {conv.slope:.2f} (theory -0.5)")
fig = plot.ntk_width_convergence(conv, title="Si environments, ReLU, depth 2")
save(fig, OUT / "ntk_width_convergence.png")

# %% [markdown]
# Measured in full mode (2026-11-21, 8 seeds): the distance fell from about 0.36 at width
# 32 to about 0.08 at width 1024, a fitted slope of about $-0.4$ against the $-1/2$ of the
# central limit theorem; the spread between seeds is as large as the mean at small widths,
# so the fitted slope is noisy.
#
# A kernel must be positive semi-definite to be a covariance. Both analytic kernels are, on
# all the training environments (eigenvalues non-negative to round-off):

# %%
q_all = res_train.torch("values")
psd = {}
for act in ("relu", "erf"):
    pair_all = nngp_and_ntk(np.sqrt(d) * q_all, depth=3, activation=act, b_std=0.1)
    for name, k in (("NNGP", pair_all.nngp), ("NTK", pair_all.ntk)):
        ev = torch.linalg.eigvalsh(k)
        psd[(act, name)] = float(ev.min() / ev.max())
        print(f"{act:4s} {name:4s} ({k.shape[0]} x {k.shape[0]}): smallest / largest "
              f"eigenvalue {psd[(act, name)]:+.2e}")

# %% [markdown]
# ## A GAP whose kernel is the NTK
#
# `NTKKernel` puts the NTK on SOAP vectors, $k(\mathbf q, \mathbf q') = \delta^2
# \Theta(\sqrt d\,\mathbf q, \sqrt d\,\mathbf q')$, with the first and second derivatives that
# force observations and force variances need, so it drops into a `Term` like
# `SOAPKernel`. Its default activation is **erf**, not ReLU: force observations need the
# kernel's gradient at coinciding arguments (a training environment that is also a sparse
# point), where the ReLU NTK has its cusp. The smooth erf network has a smooth NTK.
#
# We fit the same data (energies, forces and virials of the Si frames) with the usual SOAP
# kernel ($\zeta = 4$) and with the NTK of a depth-2 erf network.

# %%
N_SPARSE = 60 if FAST else 150


def fit_and_test(kernel, descriptor=desc):
    model = GAP([Term(descriptor, kernel, n_sparse=N_SPARSE)], noise=NoiseModel(),
                progress=False)
    t0 = time.perf_counter()
    model.fit(train)
    fit_s = time.perf_counter() - t0
    pred = model.predict(test, virial=False)            # exact (DTC) force variances
    e_ref = np.array([a.get_potential_energy() for a in test])
    f_ref = np.concatenate([a.get_forces() for a in test])
    train_pred = model.predict(train, virial=False, return_variance=False)
    f_train = np.concatenate([a.get_forces() for a in train])
    cal = uq.calibration_report(pred, test, model=model)["forces"]
    # the projected form leaves out the part of the prior the sparse set cannot represent
    pred_proj = model.predict(test, virial=False, forces_variance="projected")
    return {"E": float(np.sqrt(np.mean(((pred.energy - e_ref) / pred.n_atoms) ** 2))),
            "F": float(np.sqrt(np.mean((pred.forces - f_ref) ** 2))),
            "F_train": float(np.sqrt(np.mean((train_pred.forces - f_train) ** 2))),
            "sigma_F": cal.epistemic_rms, "noise_F": cal.aleatoric_rms, "z_rms": cal.z_rms,
            "sigma_F_proj": float(np.sqrt(np.mean(pred_proj.forces_variance))),
            "cover95": float(np.interp(0.95, cal.coverage_expected, cal.coverage_observed)),
            "fit_s": fit_s}


gaps = {"GAP(SOAP, ζ=4)": fit_and_test(SOAPKernel(zeta=4, delta=1.0)),
        "GAP(NTK, erf depth 2)": fit_and_test(NTKKernel(depth=2, activation="erf", delta=1.0))}
for name, r in gaps.items():
    print(f"{name:22s} test energy RMSE {1e3 * r['E']:6.2f} meV/atom, force RMSE "
          f"{r['F']:.3f} eV/Å, fit {r['fit_s']:.1f} s")


def show_calibration(name, r):
    print(f"{name:32s} force RMSE: train {r['F_train']:.3f}, test {r['F']:.3f} eV/Å; RMS σ: "
          f"posterior {r['sigma_F']:.3f} (projected form {r['sigma_F_proj']:.3f}), noise "
          f"{r['noise_F']:.3f} eV/Å; z_rms {r['z_rms']:.2f}, inside the 95% interval "
          f"{r['cover95']:.2f}")


for name, r in gaps.items():
    show_calibration(name, r)

# %% [markdown]
# The NTK GAP is as accurate as the SOAP GAP on these frames (in full mode, 2026-11-21:
# test energy RMSE about 9.5 meV/atom with the SOAP kernel against 8.7 with the NTK, force
# RMSE 0.18 eV/Å for both; the same numbers as `benchmarks/ntk.py`).
#
# Neither GAP's force variance can be taken at face value here, and the reason is worth a
# look. The predicted force σ (exact DTC form, the default of `predict`) is about 0.02 eV/Å,
# 0.054 with the noise $\sigma_F = 0.05$ eV/Å added, against an actual error of 0.18: the
# errors are about three times the predicted σ ($z_\mathrm{rms}$ about 3), and only about
# 70% of them fall inside the nominal 95% interval (full mode, 2026-11-21). The variance
# still *ranks* the errors, but its scale is off. The training forces show the problem
# without any test set: the model fits them only to about 0.23 eV/Å, four to five times the
# noise it assumes. What the GP is uncertain about is a function *of the descriptor*, under
# its prior. With this deliberately coarse SOAP ($n_\mathrm{max} = l_\mathrm{max} = 4$, 50
# features, chosen to keep the network experiments cheap), 150 sparse points represent that
# prior almost completely — the exact force σ is only 2–3 times the projected one,
# which leaves out what the sparse set cannot represent — so the posterior is confident;
# but the forces depend on more than these 50 numbers resolve, and the misfit that results
# is covered neither by the posterior nor by the noise. Calibration is a property of the
# whole model — descriptor, sparse set, kernel, noise — not of the GP formula. The same fit
# with the descriptor of tutorials 03–04 ($n_\mathrm{max} = 8$, $l_\mathrm{max} = 6$, 252
# features, the same 150 sparse points):

# %%
desc_fine = SOAP(cutoff=5.0, cutoff_width=1.0, n_max=8, l_max=6, atom_sigma=0.5, species=[14])
fine = fit_and_test(SOAPKernel(zeta=4, delta=1.0), descriptor=desc_fine)
show_calibration("GAP(SOAP, ζ=4), n_max 8, l_max 6", fine)

# %% [markdown]
# In full mode (2026-11-21) this gave a test force RMSE of 0.15 eV/Å with a posterior σ of
# about 0.11 eV/Å: $z_\mathrm{rms}$ about 1.1, 91% inside the 95% interval — calibrated by
# a larger σ, not a smaller error. Its training misfit is nearly as large (0.20 eV/Å), but
# here it is matched by the part of the prior that 150 sparse points cannot represent in a
# 252-dimensional descriptor space (the projected σ, which omits that part, is about
# 0.01 eV/Å for both descriptors; the exact one is 13 times larger for this one). That the
# two balance is not guaranteed: check the calibration on held-out frames, and rescale if
# needed (tutorial 04).
#
# ## Finite networks trained by gradient descent
#
# The infinite-width statement is about *gradient-descent dynamics*. For a finite number of
# steps $t$ with learning rate $\eta$ on $\mathcal L = \frac{1}{2N}\sum_A (E_A - y_A)^2$, the
# linearised network predicts
#
# $$f_t(\mathbf x) = \Theta_{\mathbf x X}\, V \operatorname{diag}\!\left[\frac{1 - (1 -
#   \eta\lambda_k/N)^t}{\lambda_k}\right] V^\top \mathbf y, \qquad \Theta_{XX} = V
#   \operatorname{diag}(\lambda_k) V^\top,$$
#
# which becomes kernel regression as $t \to \infty$. `training_vs_kernel_regression` trains
# centred per-atom networks of increasing width on the training energies, with the
# learning rate $\eta = N/\lambda_\mathrm{max}$ (half the stability limit of gradient
# descent, $2N/\lambda_\mathrm{max}$), and compares their test energies with this
# prediction.

# %%
e_train = np.array([a.get_potential_energy() for a in train])
n_train = np.array([len(a) for a in train])
e0 = e_train.sum() / n_train.sum()  # one energy per atom as the offset (eV/atom)
y_train = e_train - e0 * n_train
y_test = np.array([a.get_potential_energy() - e0 * len(a) for a in test])
TRAIN_WIDTHS = (32, 128, 512) if FAST else (32, 128, 512, 1024)
STEPS = 60 if FAST else 150
t0 = time.perf_counter()
tvk = training_vs_kernel_regression(res_train, y_train, res_test, y_test, widths=TRAIN_WIDTHS,
                                    seeds=1 if FAST else 2, steps=STEPS)
print(f"{STEPS} gradient-descent steps, lr = {tvk.lr:.3g} ({time.perf_counter() - t0:.0f} s)")
for w, dd, r in zip(tvk.widths, tvk.rms_difference, tvk.network_test_rmse):
    print(f"  width {w:5d}: |network - NTK prediction| {1e3 * dd:8.3f} meV/atom, network test "
          f"RMSE {1e3 * r:7.2f} meV/atom")
print(f"  NTK gradient-descent prediction: test RMSE {1e3 * tvk.ntk_test_rmse:.2f} meV/atom; "
      f"slope {tvk.slope:.2f}")

fig, ax = plt.subplots(figsize=(4.6, 3.6), dpi=150)
ax.loglog(tvk.widths, 1e3 * tvk.rms_difference, "o-",
          label=f"network − NTK prediction (slope {tvk.slope:.2f})")
ax.loglog(tvk.widths, 1e3 * tvk.network_test_rmse, "s--", label="network test RMSE")
ax.axhline(1e3 * tvk.ntk_test_rmse, color="0.4", ls=":", lw=1,
           label="NTK prediction test RMSE")
ax.axhline(1e3 * gaps["GAP(NTK, erf depth 2)"]["E"], color="C3", ls="-.", lw=1,
           label="GAP(NTK), converged + forces")
ax.set_xlabel("hidden width (units per layer)")
ax.set_ylabel("test energy (meV/atom)")
ax.set_title(f"{STEPS} GD steps on energies, Si", fontsize=9)
ax.legend(fontsize=6, frameon=False)
fig.tight_layout()
save(fig, OUT / "training_vs_ntk_prediction.png")

# %% [markdown]
# As the width grows the trained network's test energies approach the NTK prediction of
# the *same* gradient-descent run (in full mode, 2026-11-21, from about 29 meV/atom
# at width 32 to about 1.1 meV/atom at width 1024). But after a few hundred steps
# neither is close to the converged kernel regression that the GAP computes directly: the
# stable learning rate is set by the largest NTK eigenvalue, and the directions of small
# eigenvalue $\lambda_k$ relax only after about $\lambda_\mathrm{max}/\lambda_k$ steps — for
# atomistic kernels, whose condition numbers are huge, effectively never. The GAP solves the
# same problem exactly by linear algebra (a QR factorisation), and adds forces, which the
# network above has not seen.
#
# ## Networks trained on energies and forces
#
# `compare_models` puts everything side by side: GAP(SOAP), GAP(NTK) and centred
# erf networks trained by full-batch gradient descent on energies **and forces** (the
# forces of a network are $-\partial E/\partial \mathbf r$ through the SOAP gradients, and
# the force term of the loss is weighted as the GAP's noise model weights it).

# %%
t0 = time.perf_counter()
cmp = compare_models(train, test, desc, n_sparse=N_SPARSE,
                     widths=(64,) if FAST else (64, 256), steps=40 if FAST else 150)
print(f"compare_models ({time.perf_counter() - t0:.0f} s): centred kernel alignment SOAP vs "
      f"NTK: environments {cmp.alignment_environments:.4f}, structures "
      f"{cmp.alignment_structures:.4f}")
for name in cmp.energy_rmse:
    print(f"  {name:20s} energy RMSE {1e3 * cmp.energy_rmse[name]:7.2f} meV/atom, force RMSE "
          f"{cmp.force_rmse[name]:.3f} eV/Å")
fig = plot.kernel_comparison(cmp, title="Si: GAP kernels vs finite networks (E + F)")
save(fig, OUT / "gap_vs_networks.png")

# %% [markdown]
# The finite networks, trained for the same small number of steps, are far behind both
# GAPs — for the reason above, not because the architecture is weaker: the infinitely wide
# version of the very same network, trained to convergence, *is* the GAP(NTK) column.
#
# **Take-aways.** (i) A GAP with kernel $\Theta$ is the infinitely wide per-atom network
# trained to convergence; a finite network approaches it as $1/\sqrt{n}$ in its kernel and
# only after very long training in its predictions. (ii) On SOAP vectors the NTK and the
# polynomial SOAP kernel are nearly proportional, so the two fit equally well here. (iii)
# What wide networks lack is what makes finite ones interesting: *feature learning* — a
# finite network's kernel changes during training and adapts to the data, which the
# infinite-width limit freezes.
#
# ## Checks

# %%
assert mc_error < 0.25, f"sampled networks should reproduce the NNGP ({mc_error:.3f})"
assert conv.distance_mean[-1] < 0.35 * conv.distance_mean[0], conv.distance_mean
assert conv.slope < -0.3, f"empirical NTK should converge with width (slope {conv.slope:.2f})"
assert all(v > -1e-9 for v in psd.values()), f"analytic kernels must be PSD: {psd}"
e_ratio = gaps["GAP(NTK, erf depth 2)"]["E"] / gaps["GAP(SOAP, ζ=4)"]["E"]
f_ratio = gaps["GAP(NTK, erf depth 2)"]["F"] / gaps["GAP(SOAP, ζ=4)"]["F"]
assert 0.5 < e_ratio < 2.0 and 0.7 < f_ratio < 1.4, (
    f"GAP(NTK) should be in a band around GAP(SOAP): energy x{e_ratio:.2f}, force x{f_ratio:.2f}")
assert tvk.rms_difference[-1] < 0.3 * tvk.rms_difference[0], tvk.rms_difference
assert cmp.alignment_environments > 0.95, cmp.alignment_environments
assert all(cmp.force_rmse[n] > cmp.force_rmse["GAP(NTK)"] for n in cmp.force_rmse
           if n.startswith("network")), "short GD training should not beat the converged GAP"
# the coarse-descriptor GAPs are overconfident (training misfit far above the assumed
# noise); the finer descriptor is calibrated to within about 20%
for r in gaps.values():
    assert r["z_rms"] > 2 and r["F_train"] > 3 * r["noise_F"], gaps
assert abs(fine["z_rms"] - 1) < 0.25, fine
print(f"all checks passed in {time.perf_counter() - T_START:.0f} s")
