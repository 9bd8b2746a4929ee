"""Fits and predictions on Dask workers (:mod:`gapkit.gp.parallel`): the same model as one
process, to rounding; a worker lost mid-fit is recomputed; bad set-ups fail clearly.

One ``LocalCluster`` of two single-threaded worker processes serves the module and is
closed at its end; nothing outside the test needs to be running.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import warnings

import numpy as np
import pytest

distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed")

from gapkit import GAP, NoiseModel  # noqa: E402
from gapkit.data import bundled_path, read_frames  # noqa: E402
from gapkit.gp import parallel  # noqa: E402

#: predictions of a distributed fit against one process, relative to their largest value:
#: the R factors combine in another order, so they agree to rounding amplified by cond(R)
#: (4e7 on these 24 frames). Measured: a one-process refit with other blocks
#: (batch_atoms 64) differs by up to 3e-10 (virials), two workers by 1.3e-9
PREDICTION_RTOL = 1e-8


@pytest.fixture(scope="module")
def client():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the dashboard's port notice
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def frames():
    return read_frames(bundled_path("Si_train.xyz"))[:24]


@pytest.fixture(scope="module")
def test_frames():
    return read_frames(bundled_path("Si_test.xyz"))[:6]


def _relative(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / np.abs(a).max())


def _same_predictions(m1, m2, frames):
    p1, p2 = m1.predict(frames), m2.predict(frames)
    for name in ("energy", "forces", "virial", "energy_variance", "forces_variance"):
        assert _relative(getattr(p1, name), getattr(p2, name)) < PREDICTION_RTOL, name


def _noise():
    return NoiseModel(energy=0.002, forces=0.05, virial=0.02)


def test_partition_bounds_balance_atoms():
    bounds = parallel.partition_bounds([10, 10, 10, 10, 40], 2)
    assert bounds == [(0, 4), (4, 5)]
    assert parallel.partition_bounds([5, 5, 5], 8) == [(0, 1), (1, 2), (2, 3)]
    cover = parallel.partition_bounds(np.arange(1, 50), 7)
    assert cover[0][0] == 0 and cover[-1][1] == 49
    assert all(a < b for a, b in cover)
    assert all(b == c for (_, b), (c, _) in zip(cover[:-1], cover[1:]))


def test_two_worker_fit_equals_one_process(client, frames, test_frames):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a symmetry-breaking virial label in the data
        one = GAP(noise=_noise(), progress=False).fit(frames)
        two = GAP(noise=_noise(), progress=False).fit(frames, client=client)
    assert two.log_marginal_likelihood_ == pytest.approx(one.log_marginal_likelihood_,
                                                         rel=1e-9)
    assert two.fit_info_["n_zero_rows"] == one.fit_info_["n_zero_rows"]
    _same_predictions(one, two, test_frames)


def test_fit_from_a_file_workers_read_their_frames(client, frames, test_frames, tmp_path,
                                                  monkeypatch):
    """An extxyz path on workers: each worker reads its own frame range from the file (a
    FrameFile range is what is sent), this process reads at most a chunk of frames at a
    time, and the model is that of the frames in memory."""
    import ase.io

    from gapkit.data import framefile

    path = tmp_path / "train.xyz"
    ase.io.write(path, frames)
    seen: list = []
    read = framefile.FrameFile._read

    def counted(self, numbers):
        seen.append(len(numbers))
        return read(self, numbers)

    monkeypatch.setattr(framefile, "READ_CHUNK", 4)  # here only: not on the workers
    monkeypatch.setattr(framefile.FrameFile, "_read", counted)
    sent: list = []
    submit = client.submit

    def spy(fn, *args, **kw):
        if fn is parallel._make_partition:
            sent.append(args[0])
        return submit(fn, *args, **kw)

    monkeypatch.setattr(client, "submit", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = GAP(noise=_noise(), progress=False).fit(frames)
        two = GAP(noise=_noise(), progress=False).fit(str(path), client=client)
    assert len(sent) == 2 and all(isinstance(p, framefile.FrameFile) for p in sent)
    assert sum(len(p) for p in sent) == len(frames)
    assert seen and max(seen) <= 4
    _same_predictions(one, two, test_frames)


@pytest.mark.parametrize("mode", ["sample", "deterministic"])
def test_cur_on_workers_chooses_the_points_of_one_process(client, frames, mode, monkeypatch):
    """CUR on the workers (the descriptors stay there: hashes for the distinct rows, the
    summed Gram matrix for the leverage scores) picks the very rows one process picks: Si
    (one type, n >= 10 D: the Gram path) and ethanol (H by the Gram path; C and O have
    n < 10 D rows and are gathered and chosen by the SVD, as in one process)."""
    from gapkit import SOAP, SOAPKernel, Term
    from gapkit.gp import sparse_sets as cur_dask
    from gapkit.gp.sparse_sets import term_sparse_set

    calls: list = []
    gram = cur_dask._gram_leverage
    monkeypatch.setattr(cur_dask, "_gram_leverage",
                        lambda *a: calls.append(a[3]) or gram(*a))
    ethanol = read_frames(bundled_path("ethanol_rmd17_200.xyz"))[:120]
    cases = [(frames, SOAP(cutoff=4.5, n_max=4, l_max=3), 100),
             (ethanol, SOAP(cutoff=4.0, n_max=2, l_max=2), 90)]
    for data, soap, n_sparse in cases:
        species = sorted({int(z) for a in data for z in a.numbers})
        term = Term(soap, SOAPKernel(zeta=4), n_sparse=n_sparse,
                    sparse_options={"cur_mode": mode}).for_species(species, SOAPKernel(zeta=4))
        one = term_sparse_set(term, data, 0)
        with parallel.dask_passes(client):
            two = term_sparse_set(term, data, 0)
        assert np.array_equal(one.indices, two.indices)
        assert same_points(one.points, two.points) and torch_equal(one.types, two.types)
    assert len(calls) == 2  # Si's one type and ethanol's H went through the Gram path


@pytest.mark.parametrize("method, options", [("fps", {}), ("fps", {"fps_start": "random"}),
                                             ("random", {})])
def test_fps_and_random_on_workers_choose_the_points_of_one_process(
        client, frames, method, options, monkeypatch):
    """FPS on the workers (each keeps its rows' distances to the points chosen; the
    caller chooses among their farthest rows while the best beats every worker's bound)
    and random selection (a draw over the count of distinct rows) pick the rows one
    process picks, on one type (Si) and on three (ethanol), without gathering the
    descriptors."""
    from gapkit import SOAP, SOAPKernel, Term
    from gapkit.descriptors import base
    from gapkit.gp import sparse_sets
    from gapkit.gp.sparse_sets import term_sparse_set

    ethanol = read_frames(bundled_path("ethanol_rmd17_200.xyz"))[:120]
    cases = [(frames, SOAP(cutoff=4.5, n_max=4, l_max=3), 150),
             (ethanol, SOAP(cutoff=4.0, n_max=2, l_max=2), 90)]
    fps_calls: list = []
    fps = sparse_sets._fps
    monkeypatch.setattr(sparse_sets, "_fps", lambda *a: fps_calls.append(a[3]) or fps(*a))
    for data, soap, n_sparse in cases:
        species = sorted({int(z) for a in data for z in a.numbers})
        term = Term(soap, SOAPKernel(zeta=4), n_sparse=n_sparse, sparse_method=method,
                    sparse_options=options).for_species(species, SOAPKernel(zeta=4))
        one = term_sparse_set(term, data, 0)
        with monkeypatch.context() as m:
            m.setattr(base, "concatenate", None)  # the descriptors are never gathered
            with parallel.dask_passes(client):
                two = term_sparse_set(term, data, 0)
        assert np.array_equal(one.indices, two.indices)
        assert same_points(one.points, two.points) and torch_equal(one.types, two.types)
    assert len(fps_calls) == (4 if method == "fps" else 0)  # Si, and H, C, O of ethanol


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())


def same_points(a, b) -> bool:
    """The descriptor rows of the same environments: equal to rounding. A worker computes
    them in other batches than one process, and on an AVX-512 EPYC the SOAP GEMMs of two
    batch shapes differ in the last bits (1.4e-17 at most here); which rows were chosen (the
    indices, compared exactly) is what must not change."""
    if a.shape != b.shape:
        return False
    return bool(np.allclose(np.asarray(a), np.asarray(b), rtol=1e-13, atol=1e-15))


def test_hyperparameter_statistics_on_workers(client, frames):
    """The statistics of the noise and delta learning (per group of rows: the QR factor,
    sums) made on the workers are those of one process, by kind and by kind x config_type
    (rows grouped per partition); a kernel changed in place between passes is sent again,
    never used stale; optimize_hyperparameters inside dask_passes learns the same noise."""
    from gapkit.gp.hyperopt import noise_groups

    frames = frames[:12]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GAP(noise=_noise(), progress=False).fit(frames)
    data = model.training_data(frames)
    groups, names = noise_groups(data.observations, 5)
    for grouping in ((None, None), (groups, len(names))):
        one = model._statistics(data, *grouping)
        with parallel.dask_passes(client):
            two = model._statistics(data, *grouping)
            kernel = model.terms_[0].kernel
            kernel.zeta = kernel.zeta + 1  # in place, as the length-scale search does
            three = model._statistics(data, *grouping)
        four = model._statistics(data, *grouping)
        kernel.zeta = kernel.zeta - 1
        for a, b in ((one, two), (four, three)):
            for name in ("R", "b", "yy", "n", "sum_log_base"):
                assert _relative(getattr(a, name), getattr(b, name)) < 1e-10, name
            for name in ("zero_n", "zero_yy"):  # exactly zero rows (virials by symmetry)
                np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12)
        assert _relative(one.R, four.R) > 1e-3  # the change mattered
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = GAP(noise=_noise(), progress=False).fit(frames)
        r1 = ref.optimize_hyperparameters(frames, noise_groups="config_type")
        dist = GAP(noise=_noise(), progress=False).fit(frames)
        with parallel.dask_passes(client):
            r2 = dist.optimize_hyperparameters(frames, noise_groups="config_type")
    assert r2["noise_scale"] == pytest.approx(r1["noise_scale"], rel=1e-6)
    assert r2["log_marginal_likelihood_refit"] == pytest.approx(
        r1["log_marginal_likelihood_refit"], rel=1e-9)


def _factor(m: int, seed: int):
    import torch

    from gapkit.gp.sparse import _augmented, _QRPart

    g = torch.Generator().manual_seed(seed)
    r = torch.randn((m, m), generator=g, dtype=torch.float64).triu_()
    return _QRPart(_augmented(r, fortran=True), 1, 0.0, 0, ())


def _layout(part) -> tuple:
    """How a received factor lies: aligned, writable, Fortran order."""
    a = part.aug.numpy()
    return bool(a.flags.aligned), bool(a.flags.writeable), bool(a.flags.f_contiguous)


def test_factors_cross_between_workers_aligned(client):
    """An R factor sent to another worker arrives as an aligned, writable Fortran-order
    array, which the in-place combine (LAPACK) works in without a copy. Dask's TCP comm
    reads a message's first out-of-band buffer into the header's buffer at an odd offset,
    so SendsTensors sends a small array first (without it the combine of received factors
    copied one: +191 MiB at M 5,000). The combined factor equals one process's, and this
    process gathers it straight from the worker."""
    from gapkit.gp.sparse import _stack_qr

    workers = sorted(client.scheduler_info()["workers"])
    a = client.submit(_factor, 400, 0, workers=[workers[0]], pure=False)
    b = client.submit(_factor, 400, 1, workers=[workers[1]], pure=False)
    seen = client.submit(_layout, b, workers=[workers[0]], pure=False).result()
    assert seen == (True, True, True)
    both = client.submit(_stack_qr, a, b, workers=[workers[0]], pure=False)
    passes = parallel.DaskPasses(client)
    assert passes._direct()
    got = passes.reduce(lambda x, y: x, [both])
    want = _stack_qr(_factor(400, 0), _factor(400, 1))
    assert np.array_equal(got.aug.numpy(), want.aug.numpy())


def test_symmetry_warning_names_the_frame_of_the_fit(client, frames):
    """A label breaking symmetry in the second partition is named by its frame in the fit,
    not in the partition."""
    bad = read_frames(bundled_path("Si_test.xyz"))[:12]  # frame 8's virial xz: 1.16 eV
    with warnings.catch_warnings(record=True) as one:
        warnings.simplefilter("always")
        GAP(noise=_noise(), progress=False).fit(bad)
    with warnings.catch_warnings(record=True) as two:
        warnings.simplefilter("always")
        GAP(noise=_noise(), progress=False).fit(bad, client=client)
    text = [str(w.message) for w in one if "symmetry" in str(w.message)]
    assert text, "the bundled data has a symmetry-breaking label; the test needs one"
    assert text == [str(w.message) for w in two if "symmetry" in str(w.message)]


def test_default_fit_noise_cv_on_workers(client, frames, test_frames):
    """The default fit (noise by cross-validation, predictive variance calibrated out of
    fold) makes the same choices and the same model on two workers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = GAP(progress=False).fit(frames)
        two = GAP(progress=False).fit(frames, client=client)
    assert one.noise_ == two.noise_
    cv1, cv2 = one.fit_info_["noise_cv"], two.fit_info_["noise_cv"]
    for r1, r2 in zip(cv1["table"], cv2["table"]):
        assert r2["forces_mae"] == pytest.approx(r1["forces_mae"], rel=1e-7)  # 1.2e-9 seen
    for kind, spec in one.predictive_.items():
        if spec is not None:
            assert two.predictive_[kind]["a"] == pytest.approx(spec["a"], rel=1e-8)
            assert two.predictive_[kind]["f"] == spec["f"]
    _same_predictions(one, two, test_frames)


def test_predict_on_workers_and_model_file(client, frames, test_frames, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GAP(noise=_noise(), progress=False).fit(frames, client=client)
    path = model.save(tmp_path / "distributed.gapkit")
    loaded = GAP.load(path)  # the same format: loads anywhere, no client needed
    p1 = loaded.predict(test_frames)
    p2 = model.predict(test_frames, client=client)
    for name in ("energy", "forces", "virial", "forces_variance"):
        assert _relative(getattr(p1, name), getattr(p2, name)) < 1e-12, name


def test_more_workers_than_frames(client, frames):
    few = frames[:1]
    with pytest.warns(UserWarning, match="1 frames for 2 Dask partitions"):
        model = GAP(noise=_noise(), progress=False).fit(few, client=client)
    one = GAP(noise=_noise(), progress=False).fit(few)
    assert _relative(one.alpha_, model.alpha_) < 1e-9


def test_killed_worker_is_recomputed(client, frames, test_frames):
    """A worker killed (SIGKILL) while the fit runs: Dask recomputes its partition on the
    restarted worker and the model is the same."""
    frames = read_frames(bundled_path("Si_train.xyz"))[:80]  # a pass of several seconds
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = GAP(noise=_noise(), progress=False, batch_atoms=64).fit(frames)
    result: dict = {}

    def fit():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                result["model"] = GAP(noise=_noise(), progress=False, batch_atoms=64).fit(
                    frames, client=client)
            except Exception as exc:  # noqa: BLE001 - reported below
                result["error"] = exc

    pids = client.run(os.getpid)
    thread = threading.Thread(target=fit)
    thread.start()
    busy: list = []
    while thread.is_alive() and not busy:  # until a pass runs on the workers
        busy = [w for w, keys in client.processing().items()
                if any("_run" in str(k) for k in keys)]
        time.sleep(0.01)
    assert busy and thread.is_alive(), "the fit ended before a worker could be killed"
    os.kill(pids[busy[0]], signal.SIGKILL)
    thread.join(timeout=300)
    assert "error" not in result, result.get("error")
    _same_predictions(one, result["model"], test_frames)
    client.wait_for_workers(2, timeout=60)


def _short_of_memory(frames, obs, start):
    """A pass that runs out of memory on every partition but the first."""
    if start > 0:
        raise MemoryError("test: no memory")
    return len(frames)


def _worker_dies(frames, obs, start):
    """A pass that ends its worker's process, as the operating system does out of memory."""
    os._exit(1)


@pytest.fixture
def by_value():
    """The passes above are pickled by value: the workers cannot import this module."""
    import sys

    import cloudpickle

    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    yield
    cloudpickle.unregister_pickle_by_value(module)


def test_out_of_memory_names_the_partition(client, frames, by_value):
    """A pass out of memory on a worker (a MemoryError there, or the worker killed again
    and again: Dask's KilledWorker) stops the fit with an error naming the partition's
    frames and what to lower."""
    passes = parallel.DaskPasses(client)
    try:
        futures = passes.map(_short_of_memory, frames, None)
        a, b = passes.bounds[1]
        with pytest.raises(MemoryError, match=rf"_short_of_memory on the partition of frames "
                           rf"{a}-{b - 1} of the fit, \d+ atoms .*--memory-limit"):
            passes.gather(futures)
        scheduler = client.cluster.scheduler
        allowed, scheduler.allowed_failures = scheduler.allowed_failures, 0
        try:
            futures = passes.map(_worker_dies, frames, None)
            with pytest.raises(MemoryError, match=r"Dask workers died running worker_dies on "
                               r"the partition of frames \d+-\d+ of the fit, \d+ atoms.*"
                               r"out of memory.*batch_atoms"):
                passes.gather(futures)
        finally:
            scheduler.allowed_failures = allowed
    finally:
        passes.close()
        client.wait_for_workers(2, timeout=60)


def test_progress_bar_per_pass(client, frames, capsys):
    """With progress, each pass on the workers shows a bar over its partitions."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        GAP(noise=_noise(), progress=True).fit(frames[:8], client=client)
    err = capsys.readouterr().err
    for name in ("summary", "qr_pass"):  # the sparse points' descriptors, the QR
        assert f"{name} on 2 Dask workers:" in err and "/2 [" in err


def test_bad_setups(monkeypatch, client, frames):
    with pytest.raises(ValueError, match="not both"):
        GAP(noise=_noise(), progress=False).fit(frames, client=client, n_workers=2)
    monkeypatch.setattr(parallel, "CONNECT_TIMEOUT", 2)
    start = time.monotonic()
    with pytest.raises(ConnectionError, match="no Dask scheduler answered at 'tcp://127.0.0.1:9'"):
        GAP(noise=_noise(), progress=False).fit(frames, client="tcp://127.0.0.1:9")
    assert time.monotonic() - start < 30
    with pytest.raises(FileNotFoundError, match="no such scheduler file"):
        GAP(noise=_noise(), progress=False).fit(frames, client="nowhere/scheduler.json")
    import gapkit._version

    monkeypatch.setattr(gapkit._version, "__version__", "0.0.0-test")
    with pytest.raises(ImportError, match="another gapkit than this process .0.0.0-test."):
        GAP(noise=_noise(), progress=False).fit(frames, client=client)


def test_cli_fit_and_predict_on_workers(tmp_path, client, capsys):
    """``gapkit fit --scheduler ADDRESS`` and ``gapkit predict --workers 2``: the model and
    predictions of one process; conflicting options fail with one line."""
    from gapkit.cli import main

    train = tmp_path / "train.xyz"
    import ase.io

    ase.io.write(train, read_frames(bundled_path("Si_train.xyz"))[:12])
    settings = [f"at_file={train}", "soap_cutoff=4.0", "soap_n_max=4", "soap_l_max=3",
                "n_sparse=40", "default_sigma={0.002 0.05 0.02 0}"]
    one, two = tmp_path / "one.gapkit", tmp_path / "two.gapkit"
    learn = ["--learn-noise", "kind"]  # on the fit's workers too
    assert main(["--quiet", "fit", *settings, "-o", str(one), *learn]) == 0
    scheduler_file = tmp_path / "scheduler.json"  # as dask-mpi --scheduler-file writes
    scheduler_file.write_text(json.dumps({"address": client.scheduler.address}))
    assert main(["--quiet", "fit", *settings, "-o", str(two), "--scheduler",
                 str(scheduler_file), *learn]) == 0
    assert GAP.load(two).noise_ != _noise()  # learnt
    test = read_frames(bundled_path("Si_test.xyz"))[:4]
    _same_predictions(GAP.load(one), GAP.load(two), test)
    ase.io.write(tmp_path / "in.xyz", test)
    assert main(["--quiet", "predict", str(two), str(tmp_path / "in.xyz"),
                 str(tmp_path / "out.xyz"), "--workers", "2"]) == 0
    out = ase.io.read(tmp_path / "out.xyz", index=":")
    pred = GAP.load(two).predict(test)
    np.testing.assert_allclose([a.info["gap_energy"] for a in out], pred.energy, rtol=1e-12)
    capsys.readouterr()
    assert main(["--quiet", "fit", *settings, "-o", str(tmp_path / "x.gapkit"), "--workers",
                 "2", "--scheduler", client.scheduler.address]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["--quiet", "fit", *settings, "-o", str(tmp_path / "x.gapkit"), "--auto",
                 "--workers", "2"]) == 2
    assert "--auto budgets the CPU time" in capsys.readouterr().err
