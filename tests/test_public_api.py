"""Every public name keeps working across the package reorganisations.

The lists below are the public faces as of 0.2 (commit a67aeb8, before `uq`, `baselines`,
`generate` and `testing` became packages). A name may be added to a module, never taken
away without a deprecation: this test fails if one goes missing or stops importing.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from conftest import make_si_model, si_frames

import gapkit

PUBLIC = {
    "gapkit": [
        "DescriptorResult", "GAP", "GAPCalculator", "NTKKernel", "NoiseModel", "Prediction",
        "SEKernel", "SOAP", "SOAPKernel", "SymmetryFunctions", "Term", "TwoBody",
        "TwoBodyKernel", "__version__", "active", "baselines", "clone", "data", "generate",
        "io", "kernels", "ntk", "set_threads", "testing", "uq"],
    "gapkit.uq": [
        "CalibrationResult", "ConsistencyReport", "LOOResult", "QUANTITIES",
        "apply_recalibration", "calibration_metrics", "calibration_report", "committee_predict",
        "coverage_curve", "ence", "fit_committee", "fit_recalibration", "gaussian_nll",
        "isotonic_fit", "label_consistency", "leave_one_out", "miscalibration_area",
        "quantity_errors", "reliability_curve", "sharpness", "spearman", "z_scores"],
    "gapkit.gp": [
        "ENERGY", "ExactGP", "FORCES", "KINDS", "NoiseModel", "Observations", "Prediction",
        "SparseSet", "VIRIAL", "build_observations", "design_blocks", "design_rows",
        "dtc_variance", "fit_e0", "functional_rows", "projected_variance",
        "select_sparse_points", "sparse_points", "uniform_grid"],
    "gapkit.kernels": [
        "DESCRIPTORS", "DescriptorKernel", "KERNELS", "KERNEL_NAMES", "NTKKernel", "SEKernel",
        "SOAPKernel", "TwoBodyKernel", "make_kernel", "nngp_and_ntk",
        "padded_entries_by_atom"],
    "gapkit.descriptors": ["DescriptorResult", "SOAP", "SymmetryFunctions", "TwoBody"],
    "gapkit.baselines": [
        "BASELINES", "Baseline", "BaselineCalculator", "BaselineResult", "COULOMB_CONSTANT",
        "CoreRepulsion", "Coulomb", "Ewald", "LennardJones", "LennardJonesFit",
        "as_baseline_list", "evaluate", "from_dict", "zbl_screening"],
    "gapkit.generate": [
        "LabellingError", "Recipe", "check_consistent", "estimate_force_constants",
        "generate_dataset", "label", "labeller_record", "langevin_md", "rattle", "strain",
        "vacancies"],
    "gapkit.testing": [
        "FINITE_DIFFERENCE_STEP", "GRADIENT_RTOL", "INVARIANCE_ATOL", "KERNEL_CHECKS",
        "TOLERANCES", "TRANSFORMS", "assert_invariant", "check_forces", "check_gradients",
        "check_kernel", "dense_position_gradients", "label", "numerical_gradients",
        "per_atom_values", "random_rotation", "tolerances_for"],
    "gapkit.data": [
        "Labels", "VOIGT", "bundled_path", "composition", "get_all_labels", "get_labels",
        "load_bundled", "matrix_to_voigt", "read_extxyz", "read_frames", "stress_to_virial",
        "validate_structure", "virial_to_stress", "voigt_to_matrix"],
    "gapkit.io": [
        "ConfigError", "FORMAT_VERSION", "ModelConfig", "dump_toml", "from_config", "load_toml",
        "read_model", "to_config", "write_model"],
    "gapkit.active": ["LearningCurve", "active_learning", "compare_strategies",
                      "labels_to_reach"],
    "gapkit.otf": ["OTFEvent", "OTFRun", "otf_md", "update"],
    "gapkit.ntk": [
        "ACTIVATIONS", "AtomicMLP", "KERNEL_NAMES", "KernelPair", "NTKKernel",
        "PARAMETERIZATIONS", "compare_models", "empirical_ntk", "kernel_alignment",
        "make_kernel", "network_energies_forces", "nngp_and_ntk", "ntk_width_convergence",
        "structure_kernel", "train_network", "training_vs_kernel_regression"],
    "gapkit.plot": ["coverage", "error_vs_sigma", "in_notebook", "kernel_comparison",
                    "learning_curves", "ntk_width_convergence", "parity", "reliability",
                    "save", "script_backend", "z_histogram"],
    "gapkit.model": ["FORMAT_VERSION", "GAP", "Prediction", "Term", "TrainingData", "clone"],
    "gapkit.calculator": ["GAPCalculator"],
    "gapkit.terms": ["Term", "default_terms"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_every_public_name_imports(module):
    mod = importlib.import_module(module)
    missing = [n for n in PUBLIC[module] if not hasattr(mod, n)]
    assert missing == [], f"{module} lost {missing}"
    assert set(PUBLIC[module]) <= set(mod.__all__), f"{module}.__all__ lost names"
    for name in PUBLIC[module]:  # `from module import name` works too
        exec(f"from {module} import {name}", {})


def test_one_object_per_name_across_faces():
    """A name exported by two faces is the same object (a re-export, not a copy)."""
    import gapkit
    from gapkit import gp, kernels, model, ntk, testing
    from gapkit.generate import label

    assert gapkit.Prediction is gp.Prediction is model.Prediction
    assert gapkit.NoiseModel is gp.NoiseModel
    assert gapkit.NTKKernel is kernels.NTKKernel is ntk.NTKKernel
    assert gapkit.Term is model.Term
    assert callable(testing.label) and callable(label)


def test_uq_names_belong_to_their_modules():
    """Each `gapkit.uq` name lives in the submodule of its concept."""
    from gapkit import uq

    owners = {"metrics": ["z_scores", "gaussian_nll", "coverage_curve", "miscalibration_area",
                          "spearman", "reliability_curve", "ence", "sharpness",
                          "CalibrationResult", "calibration_metrics"],
              "calibration": ["quantity_errors", "calibration_report"],
              "recalibration": ["isotonic_fit", "fit_recalibration", "apply_recalibration"],
              "committee": ["fit_committee", "committee_predict"],
              "loo": ["LOOResult", "leave_one_out"],
              "consistency": ["ConsistencyReport", "label_consistency"]}
    for sub, names in owners.items():
        mod = importlib.import_module(f"gapkit.uq.{sub}")
        for name in names:
            assert getattr(uq, name) is getattr(mod, name)
            assert getattr(uq, name).__module__ == f"gapkit.uq.{sub}"


# -- old names and a lazy face -----------------------------------------------------------
def test_old_names_warn_and_still_work():
    frames = si_frames(3)
    m = make_si_model().fit(frames)
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
