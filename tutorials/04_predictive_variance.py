# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Predictive variance: how far to trust a GAP
#
# A Gaussian process gives, for every prediction, a posterior distribution rather than a number.
# For any quantity that is a linear functional $L$ of the local energy function (a local
# energy, a total energy, a force component), the posterior is Gaussian with mean
# $\mathbf k_*^T \boldsymbol\alpha$ and, in the sparse (DTC) form used by GAP,
#
# $$\mathrm{var}[L\varepsilon] = \underbrace{k_{**}}_{\text{prior}}
#   - \underbrace{\|U^{-T}\mathbf k_*\|^2}_{\text{what the sparse set can represent}}
#   + \underbrace{\|R^{-T}\mathbf k_*\|^2}_{\text{what the data leave undetermined}},$$
#
# with $\mathbf k_* = L\,k(\cdot, Z)$ the covariances with the $M$ sparse points,
# $k_{**} = L K L^T$ the prior variance, $U^TU = K_{MM}$ and $R^TR = K_{MM} + K_{MN}\Sigma^{-1}
# K_{NM}$ the factor of the fit. The first two terms together are what the sparse basis cannot
# express at all; the last shrinks as observations accumulate.
#
# This is the **epistemic** uncertainty: it comes from not knowing the function, is reducible
# by adding data near the query, and grows when an environment is unlike anything in the
# training set. The observation noise $\sigma$ of the fit is the **aleatoric** part: the
# scatter that the model attributes to the reference data and to what no function of a local
# environment can capture (finite cutoff, DFT convergence). A new reference calculation should
# fall within the *predictive* distribution, of variance $\mathrm{var}[L\varepsilon] +
# \sigma^2$.
#
# Variances are only worth something if they are checked. In this tutorial we query them,
# test them against the errors on held-out DFT data (calibration), repair their scale, and
# watch them grow as we move away from the training data.

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
from ase.build import bulk
from scipy.stats import spearmanr

import gapkit
from gapkit import GAP, SOAP, GAPCalculator, NoiseModel, SOAPKernel, Term, uq
from gapkit import plot as gplot
from gapkit.data import get_all_labels

# this folder when run as a script; the working directory when opened as a notebook
_HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
FAST = os.environ.get("GAPKIT_FAST") == "1"
OUT = Path(os.environ.get("GAPKIT_TUTORIAL_OUT",
                          _HERE / "figures")) / "04_predictive_variance"
OUT.mkdir(parents=True, exist_ok=True)
if FAST:
    torch.set_num_threads(1)
T_START = time.perf_counter()

# %% [markdown]
# ## A model, and a calibration set it has not seen
#
# We fit a GAP on the Zuo et al. silicon training data (tutorial 03), but hold back every
# tenth frame as a *calibration* set: frames the fit never sees, used later to rescale the
# variances. The 25 frames of `Si_test.xyz` stay untouched for judging. Fast mode fits on a
# fifth of the frames with a smaller descriptor and sparse set.

# %%
train_all = gapkit.data.load_bundled("Si_train.xyz")
test = gapkit.data.load_bundled("Si_test.xyz")
cal = train_all[2::10]
fit_frames = [a for i, a in enumerate(train_all) if i % 10 != 2]
if FAST:
    fit_frames = fit_frames[::5]
    n_max, l_max, n_sparse = 6, 4, 100
else:
    n_max, l_max, n_sparse = 8, 6, 400
soap = SOAP(cutoff=5.0, cutoff_width=1.0, n_max=n_max, l_max=l_max, atom_sigma=0.5)
noise = NoiseModel(energy=0.003, forces=0.05, virial=0.05)
model = GAP([Term(soap, SOAPKernel(zeta=4, delta=1.0), n_sparse=n_sparse)], noise=noise,
            progress=False).fit(fit_frames)
print(f"fitted on {len(fit_frames)} frames ({sum(len(a) for a in fit_frames)} atoms), "
      f"{n_sparse} sparse points, in {model.fit_info_['wall_time_s']:.1f} s; "
      f"calibration set {len(cal)} frames, test set {len(test)} frames")

# %% [markdown]
# ## Querying variances
#
# `predict` returns the variances of every predicted quantity next to the means:
# `energy_variance` (total energy, eV²), `local_energy_variance` (per atom, eV²),
# `forces_variance` (per component, eV²/Å²) and `virial_variance`. `variance_form` records
# which formula each used. For forces there are two. The default, `forces_variance="exact"`,
# evaluates $k_{**}$ from second derivatives of the kernel: the full DTC form above, the one
# that comes out roughly calibrated (below). `forces_variance="projected"` keeps only the last
# term, with $k_{**}$ replaced by its projection on the sparse set: somewhat cheaper, but it
# ignores everything the sparse set cannot represent. (`forces_variance=None` skips force
# variances; virial variances always use the projected form.) We pass the form explicitly
# below to compare the two. All of these are latent variances: the noise is not included.

# %%
t0 = time.perf_counter()
pred = model.predict(test, forces_variance="exact")
t_exact = time.perf_counter() - t0
t0 = time.perf_counter()
pred_proj = model.predict(test, forces_variance="projected")
t_proj = time.perf_counter() - t0
print("variance forms:", pred.variance_form)
print(f"prediction with exact force variances {t_exact:.1f} s, projected {t_proj:.1f} s")
ratio = np.median(pred.forces_variance / pred_proj.forces_variance)
print(f"exact / projected force variance: median ratio {ratio:.0f}")
# the DTC form adds k** - |U^-T k*|^2 >= 0 to the projected one (up to round-off)
assert np.all(pred.forces_variance >= pred_proj.forces_variance * (1 - 1e-8) - 1e-15)
print(f"force components with zero variance (zero by symmetry): "
      f"{(pred.forces_variance == 0).sum()} of {pred.forces_variance.size}")
assert np.allclose(pred.energy, pred_proj.energy, rtol=0, atol=1e-10)

# %% [markdown]
# The ASE calculator puts the same numbers into `calc.results`: `energy_variance`,
# `energies_variance` (per atom) and `forces_variance` (exact form by default).

# %%
atoms = test[0].copy()
atoms.calc = GAPCalculator(model)
forces = atoms.get_forces()
results = atoms.calc.results
off = pred.atom_offsets
print(f"test frame 0 ({atoms.info['config_type']}, {len(atoms)} atoms): "
      f"E = {results['energy']:.3f} ± {np.sqrt(results['energy_variance']):.3f} eV")
print("first atom: local energy "
      f"{results['energies'][0]:.3f} ± {np.sqrt(results['energies_variance'][0]):.3f} eV, "
      f"force {np.round(forces[0], 3)} ± {np.round(np.sqrt(results['forces_variance'][0]), 3)}"
      " eV/Å")
assert np.allclose(results["forces_variance"], pred.forces_variance[off[0]:off[1]],
                   rtol=1e-8, atol=1e-14)
assert np.isclose(results["energy_variance"], pred.energy_variance[0], rtol=1e-8)

# %% [markdown]
# ### Local energies are correlated
#
# The total-energy variance is not the sum of the local-energy variances:
# $\mathrm{var}[E] = \sum_{ij}\mathrm{cov}[\varepsilon_i, \varepsilon_j]$. Similar environments
# share the same uncertain part of the function, so their errors are positively correlated. In
# a strained perfect crystal every atom has the same environment, the local energies are
# perfectly correlated, and $\mathrm{var}[E] = N^2 \mathrm{var}[\varepsilon] = N \sum_i
# \mathrm{var}[\varepsilon_i]$, not $\sum_i \mathrm{var}[\varepsilon_i]$: per-atom
# uncertainties cannot be added as if independent.

# %%
sum_local = np.add.reduceat(pred.local_energy_variance, off[:-1])
corr_ratio = pred.energy_variance / sum_local
ctype = np.array([lab.config_type for lab in get_all_labels(test)])
for c in sorted(set(ctype)):
    print(f"{c:9s} var(E) / sum_i var(eps_i) = " + ", ".join(
        f"{x:.1f}" for x in corr_ratio[ctype == c]))
elastic = ctype == "Elastic"
assert np.allclose(corr_ratio[elastic], pred.n_atoms[elastic], rtol=1e-3), corr_ratio[elastic]
assert np.all(corr_ratio > 1), corr_ratio

# %% [markdown]
# ## Calibration: do the errors follow the predicted distributions?
#
# If the predictive distribution is right, the standardised errors
# $z = (\hat y - y)/\sqrt{\mathrm{var} + \sigma^2}$ are standard normal: $z_\mathrm{rms} = 1$,
# 68% of the errors fall within $1\sigma$ and 95% within $2\sigma$. `uq.calibration_report`
# computes, for energies per atom and force components, the $z$ statistics, the Gaussian
# negative log-likelihood (NLL, lower is better), the coverage curve (observed against
# nominal fraction inside central intervals) and its miscalibration area (0 is ideal), the
# Spearman rank correlation between $\sigma$ and $|\text{error}|$ (does a larger $\sigma$ flag a
# larger error?), and the RMS epistemic and aleatoric $\sigma$.

# %%
report = uq.calibration_report(pred, test, model=model)
report_proj = uq.calibration_report(pred_proj, test, model=model)


def show(name, r):
    inside = np.interp(0.95, r.coverage_expected, r.coverage_observed)
    print(f"{name:30s} z_rms {r.z_rms:5.2f}  NLL {r.nll:7.3f}  area {r.miscalibration_area:.3f}"
          f"  95%-coverage {inside:.2f}  Spearman {r.spearman:.2f}")
    return inside


print(f"force MAE {report['forces'].mae:.3f} eV/Å; RMS sigma: epistemic "
      f"{report['forces'].epistemic_rms:.3f}, aleatoric {report['forces'].aleatoric_rms:.3f} eV/Å")
show("energy/atom (exact)", report["energy_per_atom"])
cov_exact = show("forces, exact variance", report["forces"])
cov_proj = show("forces, projected variance", report_proj["forces"])
assert report["forces"].spearman > 0.3, report["forces"].spearman
assert 0.7 < cov_exact <= 1.0, cov_exact
assert report["forces"].nll < report_proj["forces"].nll

# %% [markdown]
# The exact (DTC) force variance is the one to judge: the projected one omits the part of
# the prior the sparse set cannot represent and, added to the noise, gives intervals that
# are too narrow (lower coverage, worse NLL), even though it ranks the errors about as well
# (Spearman).
#
# ## Recalibration on held-out data
#
# A GP's variance is exactly right only if the prior (kernel, $\delta$) and noise model are
# right, and they never quite are. The simplest repair is one scale factor $s$ per quantity,
# the maximiser of the Gaussian likelihood on the calibration set, $s = \langle e^2 /
# (\mathrm{var} + \sigma^2) \rangle$. `uq.fit_recalibration` fits it (or, with
# `method="isotonic"`, a monotone map) and stores it on the model, which saves it with the
# model; `uq.apply_recalibration` applies it. We fit on the calibration frames and judge on
# the test set.

# %%
pred_cal = model.predict(cal, forces_variance="exact")
recal = uq.fit_recalibration(model, pred_cal, cal, method="scale")
print(f"variance scales: energy {recal['energy_per_atom']['scale']:.2f}, "
      f"forces {recal['forces']['scale']:.2f}")
report_recal = uq.calibration_report(uq.apply_recalibration(pred, model), test, model=model)
show("forces, recalibrated", report_recal["forces"])
assert abs(report_recal["forces"].z_rms - 1) < abs(report["forces"].z_rms - 1) + 0.05
assert report_recal["forces"].nll < report["forces"].nll + 0.05

# %%
errors, epi, ale = uq.quantity_errors(pred, test, "forces", model=model)
fig, axes = plt.subplots(2, 2, figsize=(8.6, 7.6), dpi=150)
gplot.error_vs_sigma(errors, np.sqrt(epi + ale), ax=axes[0, 0],
                     title="Test forces: |error| vs predicted σ\n(exact posterior + noise)")
gplot.coverage({"exact": report["forces"], "projected": report_proj["forces"],
                "exact, recalibrated": report_recal["forces"]}, ax=axes[0, 1],
               title="Force coverage")
gplot.reliability({"exact": report["forces"], "exact, recalibrated": report_recal["forces"]},
                  ax=axes[1, 0], title="Force reliability")
gplot.z_histogram(errors / np.sqrt(epi + ale), ax=axes[1, 1], label="test force components",
                  title="Force z-scores (exact + noise)")
# fractions, z-scores and densities need no unit in the axis labels
axes[0, 1].set_xlabel("expected fraction in central interval")
axes[0, 1].set_ylabel("observed fraction")
axes[1, 1].set_xlabel("z = error / σ (clipped at ±6)")
axes[1, 1].set_ylabel("probability density")
fig.tight_layout()
save(fig, OUT / "force_calibration.png")

# %% [markdown]
# Many force components of the strained perfect crystals vanish by symmetry, in DFT and in
# the model alike: their errors and their posterior variances are zero (only the noise is
# left in $\sigma$), which puts a spike at $z = 0$ and lifts the low end of the coverage curve.
# `uq.calibration_metrics` takes any errors and variances, so we can judge the other
# components alone.

# %%
nonzero = epi > 0
r_nz = uq.calibration_metrics(errors[nonzero], (epi + ale)[nonzero], quantity="forces",
                              unit="eV/Å")
print(f"{(~nonzero).sum()} of {errors.size} force components are zero by symmetry "
      f"(largest |error| among them {np.abs(errors[~nonzero]).max():.1e} eV/Å)")
cov_nz = show("forces without them (exact)", r_nz)
assert np.abs(errors[~nonzero]).max() < 1e-3
assert 0.7 < cov_nz <= 1.0, cov_nz

# %% [markdown]
# ## The default: a σ calibrated on held-out folds
#
# Everything above used a noise we set by hand. `GAP()` without a `noise` chooses it by
# 5-fold cross-validation over frames (README, "Noise by cross-validation"), and the same
# folds then calibrate the predictive variance: for each held-out energy, force and virial
# component it has the residual $r$, the latent variance $v$ and the exact prior variance
# $p$, and it fits $\sigma^2 = a\,v + b\,p^q$ per kind, choosing $(a, b, q)$ by the
# out-of-fold miscalibration area. The model keeps the form (`model.predictive_`) and
# `predict` applies it: `forces_variance` is then the variance of a new label
# (`variance_form` `"calibrated+noise"`), `forces_latent_variance` the GP's own, and a
# component fixed by symmetry gets σ = 0, which `calibration_report` leaves out and counts
# (`n_fixed`). The cost: about four fits instead of one.

# %%
t0 = time.perf_counter()
auto = GAP([Term(soap, SOAPKernel(zeta=4, delta=1.0), n_sparse=n_sparse)],
           progress=False, random_state=0).fit(fit_frames)
t_auto = time.perf_counter() - t0
form = auto.predictive_["forces"]
print(f"default fit in {t_auto:.1f} s; chosen noise sigma_E "
      f"{auto.noise_.sigma('energy'):.4f} eV/atom, sigma_F {auto.noise_.sigma('forces'):.3f} "
      f"eV/Å; force form a = {form['a']:.3g}, b = {form['b']:.3g}, q = {form['q']}, "
      f"out-of-fold area {form['area']:.3f}")
pred_auto = auto.predict(test)
report_auto = uq.calibration_report(pred_auto, test, model=auto)
print(f"{report_auto['forces'].n_fixed} force components fixed by symmetry, left out")
free = pred_auto.forces_variance.ravel() > 0
r_hand = uq.calibration_metrics(errors[free], (epi + ale)[free], quantity="forces",
                                unit="eV/Å")
cov_auto = show("forces, default (calibrated)", report_auto["forces"])
show("forces, hand-set noise, same values", r_hand)
print(f"largest |error| of the sigma-0 components: "
      f"{report_auto['forces'].fixed_max_abs_error:.1e} eV/Å")
assert pred_auto.variance_form["forces"] == "calibrated+noise"
assert report_auto["forces"].n_fixed >= (~nonzero).sum()
assert report_auto["forces"].fixed_max_abs_error < 1e-3
assert report_auto["forces"].miscalibration_area < r_hand.miscalibration_area
assert report_auto["forces"].spearman > 0.3

# %% [markdown]
# ## Variance grows away from the data
#
# The training set contains the diamond crystal under uniaxial and shear strains of up to
# ±10% and, in MD, at its equilibrium volume, but no isotropically compressed or expanded
# crystal and no other crystal structure. We scan the lattice constant of a slightly rattled
# 8-atom diamond cell and follow the predicted standard deviations; the shaded band is the
# range of volumes per atom of the strained training cells, expressed as $(V/V_0)^{1/3}$ — the
# model has seen these volumes, but only under uniaxial strain. Then we ask for
# the energy of silicon in crystal structures the model has never seen: hexagonal diamond
# (lonsdaleite), whose first two neighbour shells are those of diamond (4 at 2.37 Å, 12 at
# 3.87 Å) and which differs only from 3.95 Å on, and the denser simple cubic, bcc and fcc
# structures, with 6–12 nearest neighbours at 2.5–2.7 Å. There is no DFT reference for these
# here: the point is how confident the model claims to be. The lonsdaleite atoms look
# almost like diamond atoms to SOAP, and the model is correspondingly more confident there
# than for the dense phases, whose environments are unlike anything in the data.

# %%
a0 = 5.4687                                                 # DFT lattice constant (tutorial 03)
v0 = a0**3 / 8
seen = [(a.get_volume() / len(a) / v0) ** (1 / 3) for a in fit_frames
        if a.info["config_type"] == "Elastic"]
scales = np.linspace(0.84, 1.2, 10 if FAST else 19)
calc = GAPCalculator(model)
sig_e, sig_f = [], []
for s in scales:
    cell = bulk("Si", "diamond", a=a0 * s, cubic=True)
    cell.rattle(0.03, seed=1)
    cell.calc = calc
    cell.get_forces()
    sig_e.append(np.sqrt(calc.results["energy_variance"]) / len(cell))
    sig_f.append(np.sqrt(calc.results["forces_variance"].mean()))
sig_e, sig_f = np.array(sig_e), np.array(sig_f)
for s, e, f in zip(scales, sig_e, sig_f):
    print(f"a/a0 = {s:.2f}: sigma_E = {1e3 * e:7.1f} meV/atom, sigma_F = {f:.3f} eV/Å")
i0 = np.argmin(np.abs(scales - 1))
assert sig_e.argmin() in (i0 - 1, i0, i0 + 1), sig_e
assert np.all(np.diff(sig_e[i0 + 1:]) > 0) and np.all(np.diff(sig_e[:i0]) < 0), sig_e
assert sig_e[-1] > 10 * sig_e[i0], sig_e

a_hex = a0 / np.sqrt(2)                                   # same bond length as diamond
structures = {
    "diamond": bulk("Si", "diamond", a=a0),
    "lonsdaleite": bulk("SiSi", "wurtzite", a=a_hex, c=a_hex * np.sqrt(8 / 3)),
    "simple cubic": bulk("Si", "sc", a=2.53),
    "bcc": bulk("Si", "bcc", a=3.08),
    "fcc": bulk("Si", "fcc", a=3.87),
}
sig_struct, e_struct = {}, {}
for name, a in structures.items():
    p = model.predict([a], forces=False, virial=False)
    sig_struct[name] = np.sqrt(p.energy_variance[0]) / len(a)
    e_struct[name] = p.energy_per_atom[0]
    print(f"{name:13s} E = {e_struct[name]:.3f} eV/atom ± {1e3 * sig_struct[name]:.0f} meV/atom"
          f"  ({1e3 * (e_struct[name] - e_struct['diamond']):+.0f} meV/atom vs diamond)")
metals = [sig_struct[k] for k in ("simple cubic", "bcc", "fcc")]
assert min(metals) > 3 * sig_struct["diamond"], sig_struct
assert sig_struct["lonsdaleite"] < min(metals), sig_struct
# Not in the data: published DFT (LDA, PBE) calculations put hexagonal (2H) silicon about
# 10-15 meV/atom above diamond. How many predicted sigma is the model away from that range?
LONS_LIT = (0.010, 0.015)                                     # eV/atom, literature range
d_lons = e_struct["lonsdaleite"] - e_struct["diamond"]
# sigma of the difference: the two sigma's in quadrature (an upper bound unless the two
# errors are anticorrelated); in full mode the diamond's is negligible
s_lons = np.hypot(sig_struct["lonsdaleite"], sig_struct["diamond"])
z_lons = [(d_lons - x) / s_lons for x in LONS_LIT]
print(f"lonsdaleite - diamond: GAP {1e3 * d_lons:.0f} ± {1e3 * s_lons:.0f} meV/atom; "
      f"literature DFT {1e3 * LONS_LIT[0]:.0f}-{1e3 * LONS_LIT[1]:.0f} meV/atom, i.e. "
      f"{min(z_lons):.1f}-{max(z_lons):.1f} sigma away")
# the sigma flags the structure as new, but understates the extrapolation error
assert sig_struct["lonsdaleite"] > 2 * sig_struct["diamond"], sig_struct
assert min(z_lons) > 2, z_lons

# %% [markdown]
# The σ's rank the structures sensibly — diamond, which the model has seen, lowest; the
# dense phases, whose environments are unlike anything in the data, highest — but as error
# bars they are not to be trusted this far from the data. There is no DFT for these
# structures in the data set, but published DFT calculations (LDA and PBE) put hexagonal
# silicon only about 10–15 meV/atom above diamond. The model puts it much higher (in full
# mode, 2026-11-21, about 80 ± 22 meV/atom): the σ correctly says "not like the training
# data", but the actual error is some three of its own σ — an event a Gaussian would give
# odds of a few in a thousand. The posterior variance measures what the data leave
# undetermined *under the prior*; in an extrapolation the prior itself (kernel, $\delta$,
# $\zeta$) is what decides the answer, and nothing checks it there. Use a large σ as a flag
# to compute the structure, not as a bound on the error; the same caution applies to the
# energies of the dense phases.
#
# The local-energy variance of each test atom against the SOAP distance from its environment
# to the nearest training environment (tutorial 02) shows where the variance comes from: the
# model is confident where it has seen similar environments, and not otherwise.

# %%
q_train = soap.compute(fit_frames).values
q_test = soap.compute(test).values
nearest = np.sqrt(np.maximum(2 - 2 * (q_test @ q_train.T).max(axis=1), 0))
sig_local = np.sqrt(pred.local_energy_variance)
rho = spearmanr(nearest, sig_local).statistic
print(f"Spearman rank correlation of local-energy sigma and distance to the training set: "
      f"{rho:.2f}")
assert rho > 0.3, rho

fig, axes = plt.subplots(1, 3, figsize=(12.0, 3.6), dpi=150)
axes[0].semilogy(scales, 1e3 * sig_e, "o-", ms=4, label=r"$\sigma_E$ (meV/atom)")
axes[0].semilogy(scales, 1e3 * sig_f, "s-", ms=4, label=r"RMS $\sigma_F$ (meV/Å)")
axes[0].axvspan(min(seen), max(seen), color="0.88", zorder=0,
                label="volumes of the strained\ntraining cells")
axes[0].set_xlabel(r"lattice constant $a/a_0$ (isotropic strain)")
axes[0].set_ylabel("predicted posterior σ")
axes[0].legend(fontsize=7)
axes[0].set_title("Diamond Si, rattled 8-atom cell", fontsize=9)
names = list(sig_struct)
axes[1].bar(names, [1e3 * sig_struct[k] for k in names],
            color=["C2", "C1"] + ["C3"] * (len(names) - 2))
axes[1].set_yscale("log")
axes[1].set_ylabel(r"$\sigma_E$ (meV/atom)")
axes[1].set_title("Diamond (seen) and unseen structures", fontsize=9)
axes[1].tick_params(axis="x", labelsize=8, labelrotation=25)
for c, marker in zip(sorted(set(ctype)), "osD^"):
    sel = np.repeat(ctype, pred.n_atoms) == c
    axes[2].scatter(nearest[sel], 1e3 * sig_local[sel], s=6, marker=marker, alpha=0.6,
                    label=c)
axes[2].set_yscale("log")
axes[2].set_xlabel("SOAP distance to the nearest\ntraining environment")
axes[2].set_ylabel(r"local-energy σ (meV)")
axes[2].legend(fontsize=7, title=f"test atoms, Spearman {rho:.2f}", title_fontsize=7)
axes[2].set_title("Novelty drives the variance", fontsize=9)
fig.tight_layout()
save(fig, OUT / "variance_out_of_distribution.png")

# %% [markdown]
# ## Summary
#
# * `model.predict(...)` (exact DTC force variances by default) and `GAPCalculator(model)`
#   give posterior variances of total and local energies and of force components; add the
#   noise $\sigma^2$ for the predictive distribution of a new reference value.
# * On the Si test set the exact force variance plus noise is roughly calibrated and ranks
#   the errors: in full mode (measured 2026-11-21) $z_\mathrm{rms}$ about 1.2, 88% of the
#   errors within the central 95% interval, Spearman about 0.73. The projected form is too
#   narrow ($z_\mathrm{rms}$ about 2.6, 70%). One variance scale fitted on held-out frames
#   brings $z_\mathrm{rms}$ to about 1.08 and the 95% coverage to about 91%.
# * Local energies of similar environments are strongly correlated: aggregate per-atom
#   uncertainties through the total-energy variance, not as independent terms.
# * The default fit (`GAP()` without `noise`) calibrates the predictive σ on its own
#   cross-validation folds, $\sigma^2 = a\,v + b\,p^q$: no calibration set to hold back, and
#   σ = 0 exactly where symmetry fixes a force.
# * The variance is small where the training set has similar environments and grows by
#   orders of magnitude under strains or in structures it has never seen (local-energy
#   $\sigma$ against distance to the training set: Spearman about 0.96): the signal active
#   learning uses to decide which configuration to compute next. Far from the data it is a
#   flag, not an error bar: the lonsdaleite energy is off by several of its own $\sigma$.

# %%
print(f"figures in {OUT}: {sorted(p.name for p in OUT.glob('*.png'))}")
print(f"total time {time.perf_counter() - T_START:.1f} s")
