"""The ``lamina`` command, run in-process through ``lamina.cli.main``: what
it prints, its exit codes and the files it writes."""

from __future__ import annotations

import pytest

import lamina
from lamina.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_info_prints_versions_device_and_backend(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"lamina   {lamina.__version__}" in out
    for key in ("torch", "triton", "numpy", "python", "device", "backend"):
        assert any(line.startswith(key) for line in out.splitlines()), f"no {key} line in:\n{out}"


def test_check_relu_passes(capsys):
    assert main(["check", "--device", "cpu", "--backend", "auto", "--ops", "relu"]) == 0  # auto on CPU: the reference
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("relu ")]
    assert [row[2] for row in rows] == ["float64", "float32"]  # one row per dtype
    assert all(row[-1] == "pass" for row in rows)
    assert out.strip().splitlines()[-1] == "check: 2 passed, 0 failed"


def test_check_fails_on_a_wrong_op(capsys, monkeypatch):
    """A wrong result is reported as FAIL and gives exit code 1."""
    from lamina import optable

    relu = next(case for case in optable.OPS if case.name == "relu")
    monkeypatch.setattr(relu, "lamina", lambda x: lamina.functional.relu(x) * 1.01)
    assert main(["check", "--device", "cpu", "--backend", "auto", "--ops", "relu", "--dtype", "float64"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out
    assert out.strip().splitlines()[-1] == "check: 0 passed, 1 failed"


@pytest.mark.parametrize("argv", [
    ["check", "--no-such-option"],
    ["check", "--dtype", "int8"],
    ["check", "--ops", "no_such_op"],
    ["demo", "--epochs", "zero"],
    ["bench", "--no-such-option"],
    ["no-such-command"],
    [],
])
def test_usage_error_is_one_line_and_exit_code_2(argv, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert "error:" in lines[0] and "Traceback" not in captured.err


@pytest.mark.parametrize("command", [[], ["demo"], ["check"], ["bench"], ["info"]])
def test_every_command_has_help(command, capsys):
    assert main(command + ["--help"]) == 0
    assert "usage: lamina" in capsys.readouterr().out


def test_python_dash_m_lamina_is_the_command():
    """``python -m lamina`` (a source checkout, no console script installed)
    runs the same command: here the check's help, which names --ops."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-m", "lamina", "check", "--help"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: lamina check") and "--ops" in done.stdout


def test_demo_one_epoch_writes_a_png(tmp_path, capsys):
    plot = tmp_path / "plots" / "demo.png"
    assert main(["demo", "--epochs", "1", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and str(plot) in out
    assert plot.read_bytes()[:8] == PNG_SIGNATURE
