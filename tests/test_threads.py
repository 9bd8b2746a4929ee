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
