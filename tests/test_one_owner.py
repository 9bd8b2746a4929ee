"""One owner per value: settings live in one place and every other part asks it.

Each test here fails on gapkit 0.1, where a value had two owners and the second copy
silently disagreed: the two-body cutoff (descriptor vs kernel), the learnt noise scale
(defaults vs per-frame sigma: see tests/gp/test_hyperopt.py) and the settings of a model
copied by hand (committees and active learning dropped the baselines).
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.emt import EMT

import gapkit
from gapkit import GAP, SOAP, NoiseModel, SOAPKernel, Term, TwoBody, TwoBodyKernel, clone
from gapkit.baselines import CoreRepulsion
from gapkit.data import load_bundled
from gapkit.generate import label
from gapkit.io import to_config


def _dimers(distances):
    frames = [Atoms("Cu2", positions=[[0, 0, 0], [r, 0, 0]]) for r in distances]
    return label(frames, EMT(), progress=False)


# ---------------------------------------------------------------- the two-body cutoff
def test_two_body_kernel_takes_the_descriptor_cutoff():
    term = Term(TwoBody(cutoff=4.0, cutoff_width=0.8), "twobody")
    assert term.kernel.cutoff_fn is term.descriptor.cutoff_fn
    assert term.kernel.get_params()["cutoff"] == 4.0
    assert term.kernel.get_params()["cutoff_width"] == 0.8
    assert Term(TwoBody(cutoff=3.5), TwoBodyKernel(lengthscale=0.3)).kernel.cutoff_fn.cutoff == 3.5


def test_a_kernel_cutoff_that_differs_from_the_descriptor_is_refused():
    with pytest.raises(ValueError, match="disagrees with its descriptor"):
        Term(TwoBody(cutoff=4.0), TwoBodyKernel(cutoff=5.0, cutoff_width=1.0))
    with pytest.raises(ValueError, match="disagrees"):
        Term(TwoBody(cutoff=4.0, cutoff_width=1.0), TwoBodyKernel(cutoff=4.0, cutoff_width=0.5))
    # agreeing explicit values are fine
    Term(TwoBody(cutoff=4.0, cutoff_width=0.5), TwoBodyKernel(cutoff=4.0, cutoff_width=0.5))


def test_two_body_kernel_needs_a_pair_descriptor():
    with pytest.raises(ValueError, match="TwoBody descriptor"):
        Term(SOAP(cutoff=4.0), "twobody")


def test_unbound_two_body_kernel_says_what_to_do():
    with pytest.raises(ValueError, match="no cutoff yet"):
        import torch

        TwoBodyKernel().value(torch.ones((2, 1), dtype=torch.float64),
                              torch.ones((3, 1), dtype=torch.float64))


def test_two_body_energy_goes_smoothly_to_zero_at_the_descriptor_cutoff():
    """``Term(TwoBody(cutoff=4.0), "twobody")`` gave the kernel a 5 Å cutoff in 0.1:
    the energy jumped from 0.024 eV at 3.999 Å to 0 at 4.001 Å."""
    train = _dimers(np.linspace(2.0, 3.9, 12))
    model = GAP([Term(TwoBody(cutoff=4.0, cutoff_width=1.0), "twobody", n_sparse=10,
                      sparse_method="uniform")], noise=NoiseModel(energy=0.01, forces=0.05),
                e0="zero", progress=False).fit(train)
    probe = [Atoms("Cu2", positions=[[0, 0, 0], [r, 0, 0]]) for r in (3.999, 4.001, 3.99)]
    pred = model.predict(probe, virial=False, return_variance=False)
    e_in, e_out, e_closer = pred.energy
    assert e_out == 0.0
    assert abs(e_closer) > 1e-4  # the fit does put energy near the cutoff
    # the cosine cutoff is C1: the energy 1 mÅ inside is quadratic in the distance to
    # r_c, 1/100 of its value 10 mÅ inside (0.1: the same, 0.024 eV)
    assert abs(e_in) < 0.02 * abs(e_closer)


# ------------------------------------------------------- get_params / clone / baselines
def _model(**kw):
    soap = SOAP(cutoff=4.0, cutoff_width=1.0, n_max=3, l_max=2, atom_sigma=0.5)
    settings = dict(noise=NoiseModel(energy=0.003, forces=0.05, virial=0.05,
                                     config_type={"bulk": {"forces": 0.08}}),
                    e0={"Si": -158.5}, progress=False, baselines=[CoreRepulsion()],
                    energy_key="REF_energy", batch_atoms=128, random_state=7)
    return GAP([Term(soap, SOAPKernel(zeta=2), n_sparse=20)], **{**settings, **kw})


def test_get_params_returns_every_constructor_argument():
    import inspect

    m = _model()
    params = m.get_params()
    assert set(params) == set(inspect.signature(GAP.__init__).parameters) - {"self"}
    assert params["energy_key"] == "REF_energy" and params["batch_atoms"] == 128
    assert params["baselines"] == [CoreRepulsion()]
    rebuilt = GAP(**params)
    assert to_config(rebuilt) == to_config(m)


def test_clone_keeps_baselines_and_every_setting_and_copies_nothing_fitted():
    m = _model()
    frames = [a for a in load_bundled("Si_train.xyz") if len(a) <= 64][:4]
    m.fit(frames)
    c = clone(m)
    assert not hasattr(c, "alpha_")
    assert c.baselines == m.baselines and c.baselines  # 0.1 dropped them
    assert to_config(c) == to_config(_model())
    assert c.terms[0] is not m.terms[0] and c.terms[0].kernel is not m.terms[0].kernel
    assert c.noise == m.noise


def test_committee_and_active_learning_keep_the_baselines():
    from gapkit.active import active_learning
    from gapkit.uq import fit_committee

    frames = [a for a in load_bundled("Si_train.xyz") if len(a) <= 64][:4]
    members = fit_committee(_model(), frames, n_models=2)
    assert all(member.baselines == [CoreRepulsion()] for member in members)
    curve = active_learning(_model(), frames, n_initial=2, batch_size=1, max_labels=3,
                            strategy="random")
    assert curve.model.baselines == [CoreRepulsion()]


def test_set_params_checks_like_the_constructor():
    m = _model()
    m.set_params(jitter=1e-6)
    assert m.jitter == 1e-6
    with pytest.raises(ValueError, match="jitter"):
        m.set_params(jitter=-1.0)
    with pytest.raises(ValueError, match="unknown GAP parameters"):
        m.set_params(sigma=0.1)


def test_old_names_warn_and_still_work():
    frames = [a for a in load_bundled("Si_train.xyz") if len(a) <= 64][:3]
    m = _model().fit(frames)
    with pytest.warns(DeprecationWarning, match="forces_variance"):
        old = m.predict(frames[:1], force_variance="projected")
    with pytest.warns(DeprecationWarning, match="return_variance"):
        none = m.predict(frames[:1], variance=False)
    new = m.predict(frames[:1], forces_variance="projected")
    np.testing.assert_array_equal(old.forces_variance, new.forces_variance)
    assert none.energy_variance is None
    with pytest.warns(DeprecationWarning, match="jitter_absolute_"):
        assert m.jitter_abs_ == m.jitter_absolute_
    with pytest.warns(DeprecationWarning, match="nngp_and_ntk"):
        gapkit.ntk.kernels(np.eye(3), depth=1)


def test_import_gapkit_is_lazy():
    import subprocess
    import sys

    code = ("import sys, gapkit; heavy = [m for m in ('torch', 'gpytorch', 'gapkit.model') "
            "if m in sys.modules]; print(heavy, gapkit.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith("[]"), out


def test_uq_energy_quantity_is_per_atom_by_name():
    from gapkit import uq

    frames = [a for a in load_bundled("Si_train.xyz") if len(a) <= 64][:4]
    m = _model(energy_key="energy").fit(frames[:3])
    pred = m.predict(frames[3:], forces_variance="projected")
    rep = uq.calibration_report(pred, frames[3:], model=m)
    assert set(rep) == {"energy_per_atom", "forces"}
    assert rep["energy_per_atom"].unit == "eV/atom"
    with pytest.warns(DeprecationWarning, match="energy_per_atom"):
        old = uq.calibration_report(pred, frames[3:], model=m, quantities=("energy",))
    assert old["energy_per_atom"].rmse == rep["energy_per_atom"].rmse
    with pytest.warns(DeprecationWarning):
        assert rep["energy"] is rep["energy_per_atom"]


def test_negative_variances_warn_only_beyond_round_off():
    """Clipped DTC variances warn (as ExactGP and scikit-learn do) when they are clearly
    negative, e.g. after a hyper-parameter change without a refit, and stay silent for
    round-off (force components that vanish by symmetry)."""
    import warnings

    frames = [a for a in load_bundled("Si_train.xyz") if len(a) <= 64][:4]
    m = _model(energy_key="energy", baselines=None).fit(frames)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        m.predict(frames[:2])  # the fitted factors: no warning
    m.terms_[0].kernel.delta = 3.0 * float(m.terms_[0].kernel.delta)
    with pytest.warns(UserWarning, match="variances below 0"):
        pred = m.predict(frames[:2])
    assert np.all(pred.energy_variance >= 0)
