"""Thread count of the command line and the demo (issue 16 item 6): the free cores by
default, a number when the user names one, and the caller's setting left as it was."""

import os
import re
import shlex
from pathlib import Path

import pytest
import torch

from gapkit import _threads
from gapkit.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_free_cores_subtracts_the_load(monkeypatch):
    monkeypatch.setattr(_threads, "usable_cores", lambda: 8)
    monkeypatch.setattr(os, "getloadavg", lambda: (5.4, 0.0, 0.0))
    assert _threads.free_cores() == 3
    monkeypatch.setattr(os, "getloadavg", lambda: (30.0, 0.0, 0.0))
    assert _threads.free_cores() == 1  # a saturated machine still gets one thread
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert _threads.free_cores() == 8


def test_resolve_threads_sources(monkeypatch):
    monkeypatch.setattr(_threads, "free_cores", lambda: 3)
    monkeypatch.delenv(_threads.ENV, raising=False)
    assert _threads.resolve_threads("auto") == 3
    assert _threads.resolve_threads(None) == 3
    assert _threads.resolve_threads("2") == 2
    monkeypatch.setenv(_threads.ENV, "5")
    assert _threads.resolve_threads("auto") == 5
    assert _threads.resolve_threads(1) == 1  # an explicit count wins over the variable
    monkeypatch.setenv(_threads.ENV, "auto")
    assert _threads.resolve_threads("auto") == 3
    for bad in ("0", "-2", "two", "1.5"):
        with pytest.raises(ValueError, match="--threads must be a positive whole number"):
            _threads.resolve_threads(bad)
    monkeypatch.setenv(_threads.ENV, "many")
    with pytest.raises(ValueError, match="GAPKIT_THREADS must be"):
        _threads.resolve_threads("auto")


def test_cli_threads_applied_during_the_command_and_restored(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr("gapkit.cli.cmd_info", lambda args: seen.append(
        torch.get_num_threads()) or 0)
    before = torch.get_num_threads()
    target = 2 if before != 2 else 1
    for argv in (["--threads", str(target), "info", "m.gapkit"],
                 ["info", "m.gapkit", "--threads", str(target)]):
        assert main(argv) == 0
        assert seen[-1] == target
        assert torch.get_num_threads() == before
    assert main(["--threads", "0", "info", "m.gapkit"]) == 2
    assert "--threads must be a positive whole number" in capsys.readouterr().err
    assert torch.get_num_threads() == before


def test_demo_refuses_a_bad_thread_count(capsys):
    from gapkit.demo import main as demo_main

    with pytest.raises(SystemExit):
        demo_main(["--threads", "none"])
    assert "--threads must be a positive whole number" in capsys.readouterr().err


def _readme_cli_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    block = text[text.index("## Command line"):]
    block = block[block.index("```bash") + 7:]
    block = block[:block.index("```")].replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in block.splitlines()
            if line.split("#")[0].strip()]


def test_readme_cli_examples_name_files_that_exist_or_came_before():
    """The README's command-line block runs top to bottom from the repository root: every
    file a command reads is bundled or written by an earlier line (the block used to name
    train.xyz, test.xyz, in.xyz, config.toml)."""
    made: set[str] = set()
    commands = _readme_cli_commands()
    assert len(commands) >= 6
    for argv in commands:
        assert argv[0] == "gapkit"
        if ">" in argv:  # a redirect writes a file
            made.add(argv[argv.index(">") + 1])
            argv = argv[:argv.index(">")]
        reads, writes = [], []
        for a in argv[2:]:
            key, eq, value = a.partition("=")
            if eq and key == "at_file":
                reads.append(value)
            elif eq and key == "gp_file":
                writes.append(value)
            elif re.search(r"\.(xyz|toml|gapkit)$", a) and not eq:
                reads.append(a)
        if "-o" in argv:
            writes.append(argv[argv.index("-o") + 1])
            reads.remove(argv[argv.index("-o") + 1])
        if argv[1] == "predict":  # gapkit predict MODEL IN OUT
            writes.append(reads.pop())
        for path in reads:
            assert path in made or (ROOT / path).is_file(), (
                f"README command {' '.join(argv)!r} reads {path}, which is neither in the "
                f"repository nor written by an earlier line")
        made.update(writes)


# -- library calls (issue 17 item 4): the free cores at each call, or what set_threads said


@pytest.fixture
def restore_threads():
    restore = _threads.snapshot()
    yield
    restore()


def test_other_load_leaves_out_this_process(monkeypatch):
    """Other processes' CPU time per second since the last look: the machine's busy ticks
    less this process's own (a fit's own threads are not load)."""
    clock = iter([100.0, 100.2, 101.0, 103.0])
    ticks = iter([(1000, 50), (1200, 150), (1600, 350)])  # /proc is not read at 100.2
    monkeypatch.setattr(_threads.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(_threads, "_cpu_ticks", lambda: next(ticks))
    monkeypatch.setattr(_threads, "_last", {})
    monkeypatch.setattr(_threads.os, "sysconf", lambda name: 100)
    assert _threads.other_load() is None  # the first look: nothing to compare with
    assert _threads.other_load() is None  # 0.2 s later: too short to count ticks
    # 1 s: 200 busy ticks of which 100 this process's own: 1 core's worth of others
    assert _threads.other_load() == pytest.approx(1.0)
    # 2 s more: 400 ticks, 200 own -> 1 core
    assert _threads.other_load() == pytest.approx(1.0)


def test_free_cores_now_falls_back_to_the_load_average(monkeypatch):
    monkeypatch.setattr(_threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(_threads, "other_load", lambda: None)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 0.0, 0.0))
    assert _threads.free_cores_now() == 1
    monkeypatch.setattr(_threads, "other_load", lambda: 1.4)
    assert _threads.free_cores_now() == 3
    monkeypatch.setattr(_threads, "other_load", lambda: 9.0)
    assert _threads.free_cores_now() == 1


def test_calls_run_on_the_free_cores_or_the_count_set(monkeypatch, restore_threads):
    """fit, predict and Descriptor.compute take the free cores at each call (never more
    than torch's count), or exactly what set_threads was given; torch's count is the
    caller's again after the call."""
    from ase.build import bulk

    from gapkit import GAP, SOAP, NoiseModel, SOAPKernel, Term, set_threads
    from gapkit.testing import label

    seen = []
    original = SOAP._plan_batch

    def spy(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SOAP, "_plan_batch", spy)
    monkeypatch.delenv(_threads.ENV, raising=False)
    monkeypatch.setattr(_threads, "usable_cores", lambda: 3)
    free = {"n": 1}
    monkeypatch.setattr(_threads, "free_cores_now", lambda: free["n"])
    from ase.calculators.emt import EMT

    atoms = bulk("Cu", "fcc", 3.6, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.05, seed=1)
    frames = [label(atoms, EMT())]
    soap = SOAP(cutoff=3.0, n_max=2, l_max=1)
    model = GAP([Term(soap, SOAPKernel(), n_sparse=4)], noise=NoiseModel(), progress=False)

    assert set_threads("auto") == 1  # what a call would take now
    assert torch.get_num_threads() == 3  # the most a call may take
    soap.compute(frames, gradients=True)
    model.fit(frames)
    model.predict(frames)
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == 3
    seen.clear()
    free["n"] = 5  # more free cores than torch's count: torch's count
    soap.compute(frames)
    assert seen == [3]
    seen.clear()
    assert set_threads(2) == 2  # a count: every call, however busy the machine
    free["n"] = 1
    soap.compute(frames)
    model.predict(frames)
    assert set(seen) == {2}
    assert torch.get_num_threads() == 2


def test_the_environment_sets_a_count_for_calls(monkeypatch, restore_threads):
    monkeypatch.setenv(_threads.ENV, "2")
    monkeypatch.setattr(_threads, "free_cores_now", lambda: 1)
    monkeypatch.setattr(_threads, "_setting", {})
    torch.set_num_threads(1)
    with _threads.call_threads():
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1
    assert _threads.set_threads("auto") == 2  # "auto" defers to GAPKIT_THREADS


def test_a_bad_environment_count_is_named_at_the_call(monkeypatch, restore_threads):
    monkeypatch.setenv(_threads.ENV, "many")
    monkeypatch.setattr(_threads, "_setting", {})
    with pytest.raises(ValueError, match="GAPKIT_THREADS must be a positive whole number"):
        _threads.call_threads()
