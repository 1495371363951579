"""The command line's promises, checked over every command: an instant ``--help`` (no torch
imported), help text on every option, ``-h``, ``--threads``, ``--json`` where something is
computed, one-line user errors with exit code 1, ``.h5`` result files, and progress bars that
never run into log lines when stderr is a file.

References: ``sys.modules`` of a fresh interpreter, click's own parameter lists, and
``torch.get_num_threads`` observed inside a command body.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from landscape.cli import main

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = sorted(main.commands)
# commands that only draw or record (everything else computes, so it has --json)
READ_ONLY = {"plot", "adopt", "report"}


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.mark.parametrize("argv", [None, ["--help"], ["-h"], ["hessian", "--help"],
                                  ["surface", "-h"], ["train", "--help"]])
def test_import_and_help_load_no_torch(argv: list[str] | None) -> None:
    code = ("import sys\nimport landscape, landscape.cli\n" if argv is None else
            f"import sys\nfrom landscape.cli import main\nsys.argv = ['landscape', *{argv!r}]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n")
    proc = _python(code + "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_lazy_package_gives_the_same_public_names() -> None:
    proc = _python("import landscape, inspect\n"
                   "missing = [n for n in landscape.__all__ if getattr(landscape, n) is None]\n"
                   "import landscape.training.trainer\n"  # the training subpackage
                   "print(missing, callable(landscape.train), landscape.train.__module__)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[]", "True", "landscape.training.trainer"]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_has_help_text_and_every_command_threads_and_h(name: str) -> None:
    command = main.commands[name]
    options = [p for p in command.params if isinstance(p, click.Option)]
    assert [o.name for o in options if not (o.help or "").strip()] == []
    assert "threads" in {o.name for o in options}
    if name not in READ_ONLY:
        assert "--json" in {flag for o in options for flag in o.opts}
    result = CliRunner().invoke(main, [name, "-h"])
    assert result.exit_code == 0 and "--threads" in result.output


@pytest.mark.parametrize("name", COMMANDS)
@pytest.mark.parametrize("bad", [["--no-such-option"], ["--threads", "0"]])
def test_usage_errors_are_one_line_with_exit_code_1(name: str, bad: list[str]) -> None:
    result = CliRunner().invoke(main, [name, *bad], prog_name="landscape")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: landscape {name}: "), lines


@pytest.mark.parametrize("argv", [["no-such-command"], ["train", "--epochs", "x"],
                                  ["hessian", "--out", "h.h5"]])
def test_group_and_missing_option_errors_are_one_line(argv: list[str]) -> None:
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output


def test_landscape_alone_prints_the_help_and_succeeds() -> None:
    result = CliRunner().invoke(main, [])
    assert result.exit_code == 0 and "Commands:" in result.output


@pytest.mark.parametrize("name", ["surface", "interpolate", "plane", "trajectory", "hessian",
                                  "sharpness", "noise"])
def test_result_files_that_are_not_h5_are_refused(name: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [name, "--out", str(tmp_path / "result.txt")])
    assert result.exit_code == 1 and "ends in .h5" in result.output
    assert not (tmp_path / "result.txt").exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from landscape.training import train

    out = tmp_path_factory.mktemp("cli") / "run"
    train(model_options={"widths": [4]}, dataset="spirals", train_size=40, epochs=1, out=out,
          progress=False)
    return out


def test_hessian_with_nothing_requested_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["hessian", "--run", str(tiny_run), "--top", "0",
                                       "--bottom", "0", "--out", str(tmp_path / "h.h5")])
    assert result.exit_code == 1 and "nothing to compute" in result.output
    assert not (tmp_path / "h.h5").exists()


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_hold_inside_the_command_and_are_restored(threads: int, tiny_run: Path,
                                                          monkeypatch) -> None:
    import torch

    import landscape.analysis.measures as measures

    seen, real = [], measures.measures_of_run

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(measures, "measures_of_run", spy)
    before = torch.get_num_threads()
    result = CliRunner().invoke(main, ["noise", "--run", str(tiny_run), "--json",
                                       "--noise-batch-size", "8",
                                       "--threads", str(threads)])
    assert result.exit_code == 0, result.output
    assert seen == [threads] and torch.get_num_threads() == before
    assert "noise_scale" in json.loads(result.stdout)


def test_progress_bars_and_log_lines_stay_whole_lines_in_a_file(tmp_path: Path) -> None:
    log = tmp_path / "stderr.txt"
    code = ("import sys\nfrom landscape.progress import progress\n"
            "outer = progress(total=1, desc='surface', disable=False)\nouter.refresh()\n"
            "bar = progress(range(3), desc='lanczos', total=3, disable=False)\n"
            "for i in bar:\n    bar.refresh()\n    print(f'Warning: line {i}', file=sys.stderr)\n"
            "bar.close()\nouter.close()\n")
    with open(log, "w") as err:
        subprocess.run([sys.executable, "-c", code], stderr=err, check=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    text = log.read_text()
    assert "\r" not in text and "\x1b" not in text and "[A" not in text  # nested: no cursor
    lines = text.splitlines()
    assert [ln for ln in lines if ln.startswith("Warning")] == [f"Warning: line {i}"
                                                              for i in range(3)]
    assert all(ln.startswith(("Warning: line", "lanczos: ", "surface: ")) for ln in lines)
    assert sum(ln.startswith("lanczos: ") for ln in lines) >= 3


def test_info_on_a_run_directory_reports_its_record(tiny_run: Path) -> None:
    result = CliRunner().invoke(main, ["info", str(tiny_run), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    history = json.loads((tiny_run / "history.json").read_text())
    assert info["status"] == "complete" and info["last"] == history[-1]
    assert info["config"]["dataset"] == "spirals"
    assert info["checkpoints"] == sorted(p.name for p in (tiny_run / "checkpoints").glob("*.pt"))
    bad = CliRunner().invoke(main, ["info", str(tiny_run / "checkpoints")])
    assert bad.exit_code == 1 and "not a run directory" in bad.output


def test_info_cuts_a_long_settings_line_between_items(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    info = json.loads((run / "run.json").read_text())
    info["config"]["tags"] = [f"tag{i:04d}" for i in range(400)]
    (run / "run.json").write_text(json.dumps(info))
    result = CliRunner().invoke(main, ["info", str(run)])
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.output.splitlines() if ln.startswith("  config: "))
    assert len(line) <= 2012 and line.endswith(", ...")
    assert re.fullmatch(r'"tag\d{4}"', line[:-5].rpartition(" ")[2].rstrip(","))


def test_ctrl_c_says_what_was_kept_and_the_command_that_continues(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from landscape.training import rundir

    real = rundir.save_checkpoint

    def interrupted(file: Path, state: dict) -> None:
        if state["epoch"] == 2:
            raise KeyboardInterrupt
        real(file, state)

    out = tmp_path / "run"
    args = ["train", "--model", "mlp", "--widths", "4", "--dataset", "spirals", "--train-size",
            "40", "--epochs", "3", "--overwrite", "--out", str(out)]
    monkeypatch.setattr(rundir, "save_checkpoint", interrupted)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"Error: interrupted; what was computed so far is kept in {out}; to continue: "), lines
    rerun = shlex.split(lines[0].partition("to continue: ")[2])
    assert rerun[0] == "landscape" and "--resume" in rerun and "--overwrite" not in rerun
    monkeypatch.setattr(rundir, "save_checkpoint", real)
    result = CliRunner().invoke(main, rerun[1:])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "history.json").read_text())[-1]["epoch"] == 3
    assert [r["epoch"] for r in json.loads((out / "run.json").read_text())["resumed"]] == [1]


def test_resume_of_a_finished_run_leaves_it_alone_and_says_so(tiny_run: Path,
                                                               tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    config = json.loads((run / "run.json").read_text())["config"]
    result = CliRunner().invoke(main, [
        "train", "--model", "mlp", "--widths", "4", "--dataset", config["dataset"],
        "--train-size", str(config["train_size"]), "--epochs", str(config["epochs"]),
        "--batch-size", str(config["batch_size"]), "--out", str(run), "--resume"])
    assert result.exit_code == 0, result.output
    assert f"Warning: run {run} is already complete (epoch {config['epochs']}): nothing was " \
           "trained or written" in result.stderr.splitlines()
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
