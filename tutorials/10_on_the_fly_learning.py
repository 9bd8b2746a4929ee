# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # On-the-fly learning: MD that asks for a label when it is unsure
#
# Tutorial 07 ended with a recipe done by hand: run MD with the model, flag the frames whose
# predicted force σ is large, label them, fit again. On-the-fly (OTF) learning, as in FLARE,
# does this *during* the run: every few steps the model's own force σ is compared with a
# threshold, and above it the current frame goes to the oracle (DFT in practice; here the
# EMT potential of copper stands in for it, so the tutorial runs in seconds), the label
# joins the model, and the dynamics go on from the same state with the better model.
#
# Three things make this cheap with a sparse GP, and `gapkit.otf.otf_md` does all three:
#
# 1. **The threshold is in units of the noise.** `threshold=2` labels when the largest
#    per-atom force σ exceeds 2 σ_F (`model.noise_.forces`): a label is bought only when
#    the model's uncertainty is well above what the data could resolve anyway.
# 2. **A label is folded in, not refitted.** The fit keeps the R factor of the QR of the
#    scaled design matrix $[\Sigma^{-1/2}K_{NM};\,U]$; the new frame's rows are stacked on
#    $[R,\;R\alpha]$ and triangularised again, O(new rows × M²): exactly the fit from
#    scratch on every row at the same sparse points (`gapkit.otf.update`).
# 3. **The environments that carried the uncertainty become sparse points.** With fixed
#    sparse points, an environment unlike all of them keeps a large σ however many labels
#    arrive (the DTC variance never falls below the prior variance left after projecting
#    on the sparse points). So the most uncertain atoms of each label join as sparse
#    points, by a *column* update: the run keeps every frame's design rows and
#    descriptors, computes only the new columns' kernels and takes the QR again
#    (`gapkit.otf.add_sparse_points`).
#
# We start from two rattled 32-atom cells of fcc copper, run Langevin MD at 900 K (far
# hotter than the training data) and watch σ, the labelling events and the error against
# the oracle along the trajectory.

# %%
import os
import shutil
import time
from pathlib import Path

import matplotlib

from gapkit.plot import save, script_backend

matplotlib.use(script_backend())  # files as a script, inline figures in Jupyter
import matplotlib.pyplot as plt
import numpy as np
import torch
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.langevin import Langevin

from gapkit import GAP, SOAP, NoiseModel, SOAPKernel, Term
from gapkit.gp.sparse import solve_dtc
from gapkit.otf import otf_md
from gapkit.testing import label

# this folder when run as a script; the working directory when opened as a notebook
_HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
FAST = os.environ.get("GAPKIT_FAST") == "1"
OUT = Path(os.environ.get("GAPKIT_TUTORIAL_OUT",
                          _HERE / "figures")) / "10_on_the_fly_learning"
OUT.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)
T_START = time.perf_counter()
STEPS = 150 if FAST else 400
TEMPERATURE = 900.0

# %% [markdown]
# ## A handful of frames
#
# Two 2×2×2 fcc cells, atoms rattled by 0.05 Å, labelled by the oracle: a model that
# knows the crystal near 0 K and nothing about the thermal disorder at 900 K. The noise is
# fixed (1 meV/atom, 0.02 eV/Å): the threshold is stated in its units.

# %%
def cell(rattle=0.0, seed=0):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    if rattle:
        atoms.rattle(rattle, seed=seed)
    return atoms


train = [label(cell(0.05, seed), EMT()) for seed in range(2)]


def maxwell_boltzmann(atoms, temperature, seed):
    """Momenta drawn from the Maxwell-Boltzmann distribution: each component normal with
    variance m k_B T."""
    masses = atoms.get_masses()[:, None]
    noise = np.random.default_rng(seed).normal(size=(len(atoms), 3))
    atoms.set_momenta(noise * np.sqrt(masses * units.kB * temperature))


def fresh_model():
    return GAP([Term(SOAP(n_max=6, l_max=4, cutoff=4.5), SOAPKernel(zeta=4), n_sparse=40)],
               noise=NoiseModel(energy=0.001, forces=0.02, virial=0.05, per_atom=True),
               e0={29: 0.0}, progress=False).fit(train)


model = fresh_model()
initial = fresh_model()  # kept as it is, to compare with
print(f"{len(train)} training frames, {model.fit_info_['n_sparse']} sparse points, "
      f"σ_F = {model.noise_.forces} eV/Å")

# %% [markdown]
# ## The run
#
# `otf_md` takes any ASE dynamics (a function of the atoms that returns it) and any ASE
# calculator as the oracle. An ASE observer attached to the dynamics records, at every
# step, the force error of the model *as it is at that step* against the oracle — a number
# a real OTF run cannot afford (it would be a DFT call per step), shown here to see what
# the labels buy. `checkpoint=` keeps every label on disk the moment it is paid for: a run
# interrupted and started again with the same folder resumes and pays no label twice.

# %%
errors = []  # (step, RMSE of the model's forces against the oracle, eV/Å)
visited = []  # every 5th frame, labelled by the oracle: for the initial model afterwards


def dynamics(atoms):
    dyn = Langevin(atoms, 2 * units.fs, temperature_K=TEMPERATURE, friction=0.02, fixcm=False,
                   rng=np.random.default_rng(7))

    def record():
        reference = label(atoms.copy(), EMT())
        diff = atoms.get_forces() - reference.arrays["forces"]  # the model's forces: cached
        errors.append((dyn.nsteps, float(np.sqrt((diff ** 2).mean()))))
        if dyn.nsteps % 5 == 0:
            visited.append((dyn.nsteps, reference))

    dyn.attach(record, interval=1)
    return dyn


shutil.rmtree(OUT / "checkpoint", ignore_errors=True)  # this tutorial's own: a fresh run
start = cell()  # the perfect crystal with Maxwell-Boltzmann velocities at 2 x 900 K: half
maxwell_boltzmann(start, 2 * TEMPERATURE, seed=3)  # goes into potential energy at once
t0 = time.process_time()
run = otf_md(model, start, dynamics, EMT(), steps=STEPS, interval=5, threshold=2.0,
             train=train, new_points=4, checkpoint=OUT / "checkpoint")
otf_seconds = time.process_time() - t0
print(f"{run.steps} steps, {run.n_labels} labels, {otf_seconds:.1f} CPU-s; sparse points "
      f"{initial.fit_info_['n_sparse']} -> {run.model.fit_info_['n_sparse']}")
for event in run.events:
    if event.labelled:
        print(f"  step {event.step:4d}: σ_max {event.sigma_max:.3f} > {event.threshold:.3f} "
              f"eV/Å (atom {event.atom}), oracle {event.oracle_s * 1e3:.0f} ms, update "
              f"{event.update_s * 1e3:.0f} ms")

# %% [markdown]
# ## σ, labels and error along the trajectory
#
# Top: the largest per-atom σ at each check, the threshold, and the checks that called the
# oracle. Bottom: the force RMSE against the oracle at every step, for the model the run
# was using at that step, and the initial model on the same frames (what MD without
# learning would have seen, on this trajectory).

# %%
checks = np.array([e.step for e in run.events])
sigma = np.array([e.sigma_max for e in run.events])
labelled = np.array([e.labelled for e in run.events])
steps, rmse = map(np.array, zip(*errors))

v_steps = np.array([step for step, _ in visited])
v_frames = [frame for _, frame in visited]
pred = initial.predict(v_frames, return_variance=False)
v_rmse = [float(np.sqrt(((pred.forces[a:b] - f.arrays["forces"]) ** 2).mean()))
          for a, b, f in zip(pred.atom_offsets[:-1], pred.atom_offsets[1:], v_frames)]
third = len(steps) * 2 // 3
print(f"force RMSE over the last third of the run: model in use "
      f"{rmse[third:].mean():.4f}, initial model on the same frames "
      f"{np.mean(v_rmse[len(v_rmse) * 2 // 3:]):.4f} eV/Å")

fig, (ax_s, ax_e) = plt.subplots(2, 1, figsize=(7.5, 6), sharex=True)
ax_s.plot(checks, sigma, ".-", color="C0", lw=0.8, label="largest per-atom σ at a check")
ax_s.axhline(run.events[0].threshold, color="k", ls="--", lw=1,
             label=f"threshold 2 σ_F = {run.events[0].threshold:.2f} eV/Å")
ax_s.plot(checks[labelled], sigma[labelled], "o", mfc="none", mec="C3", ms=9,
          label="labelled by the oracle")
ax_s.set_ylabel("force σ (eV/Å)")
ax_s.legend(fontsize=8)
ax_e.plot(steps, rmse, color="C1", lw=1, label="model in use at that step")
ax_e.plot(v_steps, v_rmse, color="C7", lw=1, label="initial model, same frames")
for step in checks[labelled]:
    ax_e.axvline(step, color="C3", lw=0.6, alpha=0.6)
ax_e.set_xlabel("MD step (2 fs)")
ax_e.set_ylabel("force RMSE vs oracle (eV/Å)")
ax_e.legend(fontsize=8)
ax_e.set_title("red lines: labels", fontsize=9)
fig.suptitle(f"On-the-fly Langevin MD of Cu at {TEMPERATURE:.0f} K, EMT as the oracle")
fig.tight_layout()
save(fig, OUT / "sigma_labels_error.png")

# %% [markdown]
# ## What to read off
#
# - At the first check the crystal has barely moved and σ is below the threshold; within
#   a few steps the thermal disorder leaves the training environments and σ jumps to 5×
#   the threshold. Each label pulls it down (its environments become sparse points), and
#   once the model has seen enough of the hot crystal the checks stop asking: in the full
#   run, 17 labels in 400 steps, none in the last quarter.
# - The error against the oracle follows σ: it drops at the labels and stays down, at
#   0.04 eV/Å over the last third of the run where the initial model is at 0.16 eV/Å on
#   the same frames; on an independent 900 K trajectory of the oracle the force MAE goes
#   from 0.10 to 0.028 eV/Å.
# - The run's model is exactly the fit from scratch on the training frames and every
#   label at the sparse points it grew (checked below): the updates are not an
#   approximation.
#
# An independent check: a second 900 K trajectory of the oracle itself, started the same
# way with another seed, which the run never saw.

# %%
ref = cell()  # started as the run was, another seed
maxwell_boltzmann(ref, 2 * TEMPERATURE, seed=4)
ref.calc = EMT()
ref_dyn = Langevin(ref, 2 * units.fs, temperature_K=TEMPERATURE, friction=0.02, fixcm=False,
                   rng=np.random.default_rng(1900))
ref_dyn.run(50)  # past the first oscillations
independent = []
for _ in range(20 if FAST else 40):
    ref_dyn.run(10)
    independent.append(label(ref.copy(), EMT()))
truth = np.concatenate([a.arrays["forces"] for a in independent])
mae = {name: float(np.abs(m.predict(independent, return_variance=False).forces
                          - truth).mean()) for name, m in (("initial", initial),
                                                           ("after OTF", run.model))}
print("force MAE on an independent 900 K oracle trajectory (eV/Å): "
      + ", ".join(f"{k} {v:.4f}" for k, v in mae.items()))

everything = train + run.labels
data = run.model.training_data(everything)
scratch = solve_dtc(run.model.terms_, run.model.sparse_sets_, everything, data.observations,
                    jitter=run.model.jitter, batch_atoms=run.model.batch_atoms)
weights_rel = float((run.model.alpha_ - scratch.alpha).abs().max()
                    / scratch.alpha.abs().max())
print(f"the run's weights against the fit from scratch at its sparse points: {weights_rel:.1e}")

# %% [markdown]
# Everything the run did is in `run.events` (step, σ, threshold, labelled or why not, the
# oracle's and the update's seconds) and, with `checkpoint=`, on disk: `labels.xyz` (the
# labels, extxyz, ready to be training data), `state.npz` and `log.json`.

# %%
n_checks = len(run.events)
late = labelled[int(0.75 * n_checks):]
print(f"labels in the last quarter of the checks: {int(late.sum())} of {late.size}")
assert run.n_labels >= 2, run.n_labels
assert sum(run.model.fit_info_["n_sparse"]) > sum(initial.fit_info_["n_sparse"])
assert mae["after OTF"] < 0.8 * mae["initial"], mae
assert weights_rel < 1e-6, weights_rel
assert late.sum() <= max(1, late.size // 4), late  # the model became stable
assert (OUT / "checkpoint" / "labels.xyz").exists()
print(f"done in {time.perf_counter() - T_START:.0f} s")
