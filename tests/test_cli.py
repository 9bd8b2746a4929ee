"""The ``gapkit`` command line: fit -> predict -> eval against the Python API, help, errors."""

from __future__ import annotations

import json

try:
    import tomllib
except ImportError:  # Python 3.10: the tomli backport (a dependency there)
    import tomli as tomllib

import os
from pathlib import Path

import ase.io
import numpy as np
import pytest

from gapkit import GAP
from gapkit.cli import config_to_model, dump_toml, main, model_to_config, parse_gap_fit_args
from gapkit.data import get_all_labels, load_bundled

CONFIG = """
output = "model.gapkit"
e0 = "least_squares"
jitter = 1e-8
random_state = 0

[data]
train = "train.xyz"
energy_key = "energy"
forces_key = "forces"
virial_key = "virial"
config_type_key = "config_type"

[[terms]]
descriptor = {type = "SOAP", cutoff = 4.0, cutoff_width = 1.0, n_max = 4, l_max = 3, atom_sigma = 0.5}
kernel = {type = "SOAPKernel", zeta = 4, delta = 1.0}
n_sparse = 30
sparse_method = "cur"

[noise]
energy = 0.003
forces = 0.05
virial = 0.05
per_atom = true
"""  # noqa: E501

GAP_FIT_ARGS = ["at_file=train.xyz", "gp_file=model.gapkit", "soap_cutoff=4.0",
                "cutoff_transition_width=1.0", "soap_n_max=4", "soap_l_max=3",
                "atom_sigma=0.5", "zeta=4", "delta=1.0", "n_sparse=30",
                "sparse_method=cur_points", "default_sigma={0.003 0.05 0.05 0.0}",
                "energy_parameter_name=energy", "force_parameter_name=forces",
                "virial_parameter_name=virial", "config_type_parameter_name=config_type"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """train.xyz (six small Si frames), test.xyz (two others), config.toml, and a model
    fitted through the command line."""
    d = tmp_path_factory.mktemp("cli")
    frames = load_bundled("Si_train.xyz")
    small = [a for a in frames if len(a) <= 24]
    ase.io.write(d / "train.xyz", small[:6], format="extxyz")
    ase.io.write(d / "test.xyz", small[6:8], format="extxyz")
    (d / "config.toml").write_text(CONFIG)
    assert main(["--quiet", "fit", str(d / "config.toml")]) == 0
    assert (d / "model.gapkit").exists()
    return d


def test_fit_predict_eval_round_trip(workdir, capsys):
    d = workdir
    out = d / "out.xyz"
    assert main(["--quiet", "predict", str(d / "model.gapkit"), str(d / "test.xyz"),
                 str(out)]) == 0
    model = GAP.load(d / "model.gapkit")
    inp = ase.io.read(d / "test.xyz", index=":")
    pred = model.predict(inp)
    written = ase.io.read(out, index=":")
    off = pred.atom_offsets
    for k, (a, b) in enumerate(zip(inp, written)):
        sl = slice(off[k], off[k + 1])
        assert b.info["gap_energy"] == pytest.approx(pred.energy[k], abs=1e-8)
        assert b.info["gap_energy_variance"] == pytest.approx(pred.energy_variance[k],
                                                              rel=1e-8, abs=1e-12)
        np.testing.assert_allclose(b.arrays["gap_forces"], pred.forces[sl], atol=2e-8)
        np.testing.assert_allclose(b.arrays["gap_forces_variance"], pred.forces_variance[sl],
                                   atol=2e-8)
        np.testing.assert_allclose(b.arrays["gap_local_energy"], pred.local_energy[sl],
                                   atol=2e-8)
        np.testing.assert_allclose(b.arrays["gap_local_energy_variance"],
                                   pred.local_energy_variance[sl], atol=2e-8)
        # the input's own labels are untouched
        assert b.get_potential_energy() == pytest.approx(a.get_potential_energy(), abs=1e-8)
        np.testing.assert_allclose(b.get_forces(), a.get_forces(), atol=1e-8)
        np.testing.assert_allclose(b.info["virial"], a.info["virial"], atol=1e-8)
    capsys.readouterr()

    plot = d / "parity.png"
    assert main(["--quiet", "eval", str(d / "model.gapkit"), str(d / "test.xyz"), "--json",
                 "--plot", str(plot)]) == 0
    err = json.loads(capsys.readouterr().out)
    assert plot.exists() and plot.stat().st_size > 0
    labels = get_all_labels(inp)
    n = pred.n_atoms
    de = (pred.energy - np.array([lab.energy for lab in labels])) / n * 1e3
    df = pred.forces - np.concatenate([lab.forces for lab in labels])
    dv = (pred.virial - np.array([lab.virial for lab in labels])) / n[:, None, None] * 1e3
    assert err["energy_mae_mev_per_atom"] == pytest.approx(np.abs(de).mean(), rel=1e-10)
    assert err["energy_rmse_mev_per_atom"] == pytest.approx(np.sqrt((de**2).mean()), rel=1e-10)
    assert err["forces_mae"] == pytest.approx(np.abs(df).mean(), rel=1e-10)
    assert err["forces_rmse"] == pytest.approx(np.sqrt((df**2).mean()), rel=1e-10)
    assert err["virial_mae_mev_per_atom"] == pytest.approx(np.abs(dv).mean(), rel=1e-10)

    assert main(["eval", str(d / "model.gapkit"), str(d / "test.xyz")]) == 0
    table = capsys.readouterr().out
    assert "meV/atom" in table and "eV/Å" in table and "virial" in table

    assert main(["info", str(d / "model.gapkit")]) == 0
    card = capsys.readouterr().out
    for word in ("format version 1", "species: Si", "e0", "SOAP(", "SOAPKernel(",
                 "30 sparse points", "noise", "log marginal likelihood"):
        assert word in card


def test_refuses_to_overwrite_without_force(workdir, capsys):
    d = workdir
    model = d / "model.gapkit"
    before = model.read_bytes()
    assert main(["--quiet", "fit", str(d / "config.toml")]) == 2
    assert "--force" in capsys.readouterr().err
    assert model.read_bytes() == before
    out = d / "exists.xyz"
    out.write_text("keep me")
    assert main(["--quiet", "predict", str(model), str(d / "test.xyz"), str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert out.read_text() == "keep me"
    assert main(["predict", str(model), str(d / "test.xyz"), str(out), "--force",
                 "--quiet"]) == 0  # --quiet also after the command
    assert capsys.readouterr().out == ""
    assert len(ase.io.read(out, index=":")) == 2


@pytest.mark.parametrize("command", [[], ["fit"], ["eval"], ["predict"], ["info"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main(command + ["--help"])
    assert exc.value.code == 0
    assert "usage: gapkit" in capsys.readouterr().out


@pytest.mark.parametrize("argv, reason", [
    (["info", "nowhere.gapkit"], "no model file"),
    (["eval", "nowhere.gapkit", "x.xyz"], "no model file"),
    (["fit", "nowhere.toml"], "no such config file"),
    (["fit", "at_file=x.xyz", "bogus_key=3"], "unknown argument 'bogus_key'"),
    (["fit", "at_file=x.xyz", "soap_n_max=four"], "expected a number"),
    (["fit", "soap_n_max=4"], "no training data"),
    (["fit", "at_file=missing.xyz", "soap_n_max=4"], "missing.xyz"),
    (["fit"], "give a CONFIG.toml"),
])
def test_bad_input_exits_with_a_reason(argv, reason, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--quiet"] + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("gapkit: error: ") and reason in err
    assert err.count("\n") == 1


def test_bad_config_and_model(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.replace("n_sparse = 30", "n_sparse = 30\nsparse_methd = 'cur'"))
    assert main(["fit", str(cfg)]) == 2
    assert "unknown key sparse_methd" in capsys.readouterr().err
    cfg.write_text(CONFIG.replace('type = "SOAP",', 'type = "SOAP", n_maxx = 3,'))
    assert main(["fit", str(cfg)]) == 2
    assert "n_maxx" in capsys.readouterr().err
    cfg.write_text(CONFIG.replace("zeta = 4,", "zeta = 4, zeeta = 2,"))  # in an inline table
    assert main(["fit", str(cfg)]) == 2
    assert "unknown key zeeta" in capsys.readouterr().err
    cfg.write_text("[data\n")
    assert main(["fit", str(cfg)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    bad = tmp_path / "bad.gapkit"
    bad.write_bytes(b"not a zip")
    assert main(["info", str(bad)]) == 2
    assert "not a readable gapkit model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["predict", "only-one-arg"])
    assert exc.value.code != 0
    assert "required" in capsys.readouterr().err


def test_toml_and_key_value_routes_agree(tmp_path):
    from gapkit.cli import _merge

    toml_model, train, output = config_to_model(tomllib.loads(CONFIG), base_dir=tmp_path)
    assert train == tmp_path / "train.xyz" and output == tmp_path / "model.gapkit"
    kv_model, kv_train, kv_output = config_to_model(_merge({}, parse_gap_fit_args(
        GAP_FIT_ARGS)))
    assert str(kv_train) == "train.xyz" and str(kv_output) == "model.gapkit"
    assert model_to_config(toml_model) == model_to_config(kv_model)


def test_model_to_config_round_trips(workdir, tmp_path):
    config = tomllib.loads(CONFIG)
    model, _, _ = config_to_model(config)
    back = model_to_config(model, train="train.xyz", output="model.gapkit")
    # every setting given in the config comes back as given (plus defaults)
    assert back["data"] == {**back["data"], **config["data"]}
    assert back["noise"] == config["noise"]
    for key in ("output", "e0", "jitter", "random_state"):
        assert back[key] == config[key]
    t, t0 = back["terms"][0], config["terms"][0]
    assert {k: t["descriptor"][k] for k in t0["descriptor"]} == t0["descriptor"]
    assert t["kernel"] == t0["kernel"]
    assert (t["n_sparse"], t["sparse_method"]) == (30, "cur")
    # config -> model -> config is a fixed point, also through TOML text
    assert tomllib.loads(dump_toml(back)) == back
    again, _, _ = config_to_model(tomllib.loads(dump_toml(back)))
    assert model_to_config(again, train="train.xyz", output="model.gapkit") == back

    # a saved model's settings: `gapkit info --config` refits to the same model
    loaded = GAP.load(workdir / "model.gapkit")
    card = model_to_config(loaded)
    assert card["e0"] == "least_squares"  # the method, not the values it fitted
    assert card["terms"][0]["descriptor"]["species"] == [14]
    rebuilt, _, _ = config_to_model(tomllib.loads(dump_toml(card)))
    assert model_to_config(rebuilt) == card


def test_info_config_refits(workdir, tmp_path, capsys):
    assert main(["info", str(workdir / "model.gapkit"), "--config"]) == 0
    text = capsys.readouterr().out
    cfg = tomllib.loads(text)
    cfg["data"]["train"] = str(workdir / "train.xyz")
    cfg["output"] = "refit.gapkit"
    (tmp_path / "refit.toml").write_text(dump_toml(cfg))
    assert main(["--quiet", "fit", str(tmp_path / "refit.toml"), "n_sparse=30"]) == 0
    a = GAP.load(workdir / "model.gapkit")
    b = GAP.load(tmp_path / "refit.gapkit")
    frames = ase.io.read(workdir / "test.xyz", index=":")
    # the same data and settings (e0 by the same method), so the refit reproduces the model
    np.testing.assert_allclose(b.predict(frames).energy, a.predict(frames).energy, atol=1e-6)


def test_predict_replaces_an_earlier_prediction(workdir, tmp_path, capsys):
    first, second = tmp_path / "first.xyz", tmp_path / "second.xyz"
    model = str(workdir / "model.gapkit")
    assert main(["--quiet", "predict", model, str(workdir / "test.xyz"), str(first)]) == 0
    # predicting the output again without force variances must not keep the old ones
    assert main(["predict", model, str(first), str(second), "--force-variance", "none"]) == 0
    said = capsys.readouterr().out
    assert "gap_forces," in said and "gap_forces_variance" not in said
    for atoms in ase.io.read(second, index=":"):
        assert "gap_forces_variance" not in atoms.arrays and "gap_forces" in atoms.arrays


def test_python_m_gapkit(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "gapkit", "info", str(tmp_path / "no.gapkit")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("gapkit: error: no model file")


def test_fit_learn_noise_writes_the_learnt_multipliers(workdir, capsys):
    out = workdir / "learnt.gapkit"
    assert main(["fit", str(workdir / "config.toml"), "-o", str(out),
                 "--learn-noise", "kind"]) == 0
    text = capsys.readouterr().out
    assert "learnt noise (kind): log marginal likelihood" in text
    assert "sigma forces:" in text
    learnt = GAP.load(out)
    assert learnt.noise.scale  # the multipliers are in the model file (format 3)
    assert learnt.noise.forces == GAP.load(workdir / "model.gapkit").noise.forces
    assert learnt.log_marginal_likelihood_ > GAP.load(workdir / "model.gapkit") \
        .log_marginal_likelihood_
    assert main(["info", str(out)]) == 0
    assert "learnt multipliers (applied to every sigma)" in capsys.readouterr().out


def test_output_paths_are_checked_before_the_fit_and_writes_leave_no_debris(
        workdir, tmp_path, capsys, monkeypatch):
    """A missing folder, a directory as -o, or an unwritable folder stop `gapkit fit`
    before any work (the fit is never called); a user's own MODEL.tmp / OUT.tmp is left
    alone; a write that fails (a full disk) leaves the old file and no temporary file."""
    import errno

    from gapkit import GAP

    d = workdir
    def no_fit(self, frames):  # pragma: no cover - called only if the check comes too late
        raise AssertionError("the fit ran before the output path was checked")

    monkeypatch.setattr(GAP, "fit", no_fit)
    config = str(d / "config.toml")
    for output, reason in ((tmp_path / "missing" / "m.gapkit", "does not exist"),
                           (tmp_path, "is a directory")):
        assert main(["--quiet", "fit", config, "-o", str(output)]) == 2
        assert reason in capsys.readouterr().err
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root writes anywhere: nothing to check then
            assert main(["--quiet", "fit", config, "-o", str(locked / "m.gapkit")]) == 2
            assert "no write permission" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)
    monkeypatch.undo()

    model = d / "model.gapkit"
    out = tmp_path / "pred.xyz"
    for mine in (tmp_path / "pred.xyz.tmp", Path(str(model) + ".tmp")):
        mine.write_text("the user's own file")
    assert main(["--quiet", "predict", str(model), str(d / "test.xyz"), str(out)]) == 0
    assert (tmp_path / "pred.xyz.tmp").read_text() == "the user's own file"
    GAP.load(model).save(model, overwrite=True)
    assert Path(str(model) + ".tmp").read_text() == "the user's own file"
    Path(str(model) + ".tmp").unlink()

    before = out.read_bytes()
    real_write = ase.io.write

    def full_disk(path, *args, **kwargs):
        real_write(path, *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ase.io, "write", full_disk)
    assert main(["--quiet", "predict", str(model), str(d / "test.xyz"), str(out),
                 "--force"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert not list(tmp_path.glob("*partial*")) and not list(d.glob("*partial*"))


def test_key_value_settings_are_accepted_after_options(workdir, tmp_path):
    """gap_fit's key=value settings on either side of -o / --force, as users type them;
    an unknown option is still refused."""
    train = workdir / "train.xyz"
    out = tmp_path / "m.gapkit"
    argv = ["--quiet", "fit", f"at_file={train}", "-o", str(out), "soap_cutoff=4.0",
            "soap_n_max=3", "soap_l_max=2", "n_sparse=10", "default_sigma={0.003 0.05 0.05 0}"]
    assert main(argv) == 0 and out.exists()
    assert GAP.load(out).terms_[0].descriptor.cutoff == 4.0
    with pytest.raises(SystemExit):
        main(["--quiet", "fit", f"at_file={train}", "-o", str(out), "--no-such-flag"])


GAP_STRING = ("gap={soap cutoff=4.0 cutoff_transition_width=1.0 n_max=4 l_max=3 "
              "atom_sigma=0.5 zeta=4 delta=1.0 n_sparse=30 covariance_type=dot_product "
              "sparse_method=cur_points add_species=T : distance_2b cutoff=4.0 "
              "covariance_type=ard_se delta=0.5 theta_uniform=0.75 n_sparse=12 "
              "sparse_method=uniform}")
GAP_TERMS = """
[[terms]]
descriptor = {type = "SOAP", cutoff = 4.0, cutoff_width = 1.0, n_max = 4, l_max = 3, atom_sigma = 0.5}
kernel = {type = "SOAPKernel", zeta = 4, delta = 1.0}
n_sparse = 30
sparse_method = "cur"

[[terms]]
descriptor = {type = "TwoBody", cutoff = 4.0, cutoff_width = 0.5}
kernel = {type = "TwoBodyKernel", delta = 0.5, lengthscale = 0.75}
n_sparse = 12
sparse_method = "uniform"
"""  # noqa: E501


def test_gap_fit_gap_string_runs_unchanged(workdir):
    """A gap_fit command line with gap={soap ... : distance_2b ...} (and gap_fit's own file
    options) fits the same model as the TOML config that spells its two terms out."""
    d = workdir
    argv = [a for a in GAP_FIT_ARGS if a.split("=")[0] not in (
        "soap_cutoff", "cutoff_transition_width", "soap_n_max", "soap_l_max", "atom_sigma",
        "zeta", "delta", "n_sparse", "sparse_method", "gp_file", "at_file")]
    out = d / "gapstring.gapkit"
    assert main(["--quiet", "fit", f"at_file={d / 'train.xyz'}", f"gp_file={out}",
                 GAP_STRING, "do_copy_at_file=F", "sparse_separate_file=F", *argv]) == 0
    config = CONFIG.split("[[terms]]")[0] + GAP_TERMS + "\n[noise]" + CONFIG.split("[noise]")[1]
    (d / "two_terms.toml").write_text(config.replace('output = "model.gapkit"',
                                                     'output = "two_terms.gapkit"'))
    assert main(["--quiet", "fit", str(d / "two_terms.toml")]) == 0
    a, b = GAP.load(out), GAP.load(d / "two_terms.gapkit")
    assert [type(t.descriptor).__name__ for t in a.terms_] == ["SOAP", "TwoBody"]
    np.testing.assert_allclose(a.alpha_.numpy(), b.alpha_.numpy(), rtol=1e-9, atol=1e-12)


def test_gap_string_per_species_sparse_counts():
    """gap_fit's add_species=T counts n_sparse per species (SOAP) or species pair
    (two-body); gapkit's terms count the total."""
    from gapkit._gap_fit import parse_gap_string, resolve_per_species

    terms, per_species = parse_gap_string(GAP_STRING.split("=", 1)[1])
    assert per_species == [True, True]
    model, _, _ = config_to_model({"terms": terms, "noise": {"energy": 0.01}}, progress=False)
    resolve_per_species(model, per_species, [29, 47, 29])
    assert model.terms[0].n_sparse == {29: 30, 47: 30}
    assert model.terms[1].n_sparse == 12 * 3
    terms, per_species = parse_gap_string(
        GAP_STRING.split("=", 1)[1].replace("add_species=T", "add_species=F"))
    assert per_species == [False, True]


@pytest.mark.parametrize("gap, message", [
    ("gap={soap covariance_type=ard_se}", "gapkit's soap term has dot_product"),
    ("gap={turbosoap cutoff=5}", "'turbosoap' is not one gapkit reads"),
    ("gap={soap cutof=5}", "'cutof' is not a setting gapkit reads"),
    ("gap={distance_Nb order=3 cutoff=4}", "order=3"),
    ("gap={}", "gap={} is empty"),
])
def test_gap_string_errors(gap, message):
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        parse_gap_fit_args([gap])
