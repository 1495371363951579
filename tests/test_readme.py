"""The README's shell examples run as written, in order, in a fresh directory.

Every ```bash block of README.md is split into commands (``\\`` continuations joined) and run
with bash in one temporary directory (``landscape`` served by tests/_cli_server.py), each
command after the ones before it, so a later example finds what an earlier one made. Sizes
are made small by the substitutions below (one table, applied to the text of each command),
and some measuring commands get a data subset appended; the commands that need what this
machine lacks are skipped by name: nothing else.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

#: the tests that read the demo run in one xdist worker (its fixture resumes outputs/demo)
pytestmark = pytest.mark.xdist_group("demo")

ROOT = Path(__file__).resolve().parents[1]

# text in a command -> its small replacement (grids, epochs, steps)
SUBSTITUTIONS = [
    ("-1:1:51", "-1:1:5"), ("-0.5:1.5:101", "-0.5:1.5:5"), ("epochs=100", "epochs=2"),
    ("--epochs 200", "--epochs 3"), ("--steps 4500", "--steps 30"), ("--steps 200", "--steps 20"),
    ("--steps 150", "--steps 20"), ("--seeds 0,1,2", "--seeds 0"),
    ("--match steps=2000", "--match steps=20"), ("--match train-loss=0.02", "--match steps=20"),
    ("--plane-points 21", "--plane-points 3"), ("--points 25", "--points 5"),
    ("--spawn 0,1,2,5 --pairs 3 --epochs 20", "--spawn 0 --pairs 2 --epochs 1"),
    ("--frames 40", "--frames 3"),
    ("--model-option d_model=128", "--model-option d_model=32"), ("--epochs 60 ", "--epochs 3 "),
]
# command prefix -> options appended (a data subset, small study grids, one measure)
APPENDED = {
    "landscape hessian": "--subset 100",
    "landscape curvature": "--subset 100",
    "landscape sharpness": "--subset 200",
    "landscape compare": "--curve -1:1:3 --surface -1:1:3 --interpolation 0:1:3 "
                         "--direction-seeds 1 --measures top_eigenvalue,noise_scale "
                         "--checkpoints 1",
}
# commands skipped, by the text that names what they need
SKIPPED = {
    "pip install": "installs the package (the tests run from the checkout)",
    "python -m pytest": "the test suite itself",
    "landscape demo": "runs once per session (conftest.demo_study), shared with "
                      "test_demo_effect.py and the checks below",
    "--dataset mnist": "needs the MNIST files in ~/data",
    "--dataset cifar10": "needs the CIFAR-10 files in ~/data",
    "outputs/runs/resnet56": "a ResNet-56 trained on CIFAR-10",
    "torchrun": "several processes (tested in the distributed tests)",
    "mine.py": "the reader's own model file and checkpoint",
    "outputs/runs/mine": "the run adopted from the reader's own files",
}


def _blocks(language: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


def _commands() -> list[str]:
    commands: list[str] = []
    for block in _blocks("bash"):
        loop: list[str] = []  # the lines of a multi-line for ... done
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if loop or (line.startswith("for ") and not line.endswith("done")):
                loop.append(line)
                if line == "done":
                    commands.append("\n".join(loop))
                    loop = []
            else:
                commands.append(line)
    return commands


# the README's spelling-out of the demo's design: run at full size on a copy of the demo's
# runs, it must train nothing (the same recipes, seeds and matching rule)
DEMO_DESIGN = "--seeds 0,1,2 --out outputs/sweep"


def _small(command: str) -> str:
    for old, new in SUBSTITUTIONS if DEMO_DESIGN not in command else ():
        command = command.replace(old, new)
    code, _, comment = command.partition("  #")  # an appended option goes before a comment
    for prefix, extra in APPENDED.items():
        if code.startswith(prefix):
            code = f"{code.rstrip()} {extra}"
    return code


def test_the_readme_names_the_commands_this_test_runs() -> None:
    commands = _commands()
    assert sum(c.startswith("landscape ") for c in commands) >= 30
    for needle in SKIPPED:  # a skip that matches nothing is stale
        assert any(needle in c for c in commands), needle


def test_readme_examples_write_under_outputs() -> None:
    """No example writes into the project's own folders (docs/, the working directory)."""
    outs = [o for c in _commands() for o in re.findall(r"--out[ =](\S+)", c)]
    assert len(outs) >= 20 and [o for o in outs if not o.startswith("outputs/")] == []


def test_readme_demo_table_and_findings_are_a_fresh_demos_files(demo_study) -> None:
    text = (ROOT / "README.md").read_text()
    out = demo_study.path.parent
    for name, made in (("table", (out / "table.md").read_text().split("\n\n")[0]),
                       ("findings", (out / "findings.md").read_text())):
        (block,) = re.findall(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", text,
                              flags=re.S)
        assert block.strip() == made.strip(), name


@pytest.fixture
def landscape_on_path(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment whose ``landscape`` is this checkout's CLI, served by a fork server
    that imported torch once (tests/_cli_server.py): each README command pays its own work,
    not another ``import torch``."""
    env = {**os.environ, "LANDSCAPE_QUIET": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    server_py = Path(__file__).with_name("_cli_server.py")
    with tempfile.TemporaryDirectory(prefix="ls-") as sockets:  # short: AF_UNIX paths <= 107
        sock = f"{sockets}/cli"
        server = subprocess.Popen([sys.executable, str(server_py), sock], env=env,
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            bin_dir = tmp_path / ".bin"
            bin_dir.mkdir()
            (bin_dir / "landscape").write_text(
                f'#!/bin/sh\nexec {sys.executable} -S -E {server_py} --client {sock} "$@"\n')
            (bin_dir / "landscape").chmod(0o755)
            yield {**env, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}"}
        finally:
            server.kill()
            server.wait()


def test_readme_bash_examples_run_in_order(tmp_path: Path, demo_study,
                                           landscape_on_path: dict[str, str]) -> None:
    env = landscape_on_path
    ran = 0
    for command in _commands():
        if any(needle in command for needle in SKIPPED):
            continue
        small = _small(command)
        if DEMO_DESIGN in command:
            shutil.copytree(demo_study.path.parent / "runs", tmp_path / "outputs/sweep/runs")
            stamps = {f: f.stat().st_mtime_ns
                      for f in (tmp_path / "outputs/sweep/runs").rglob("run.json")}
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", small], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{small}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        if DEMO_DESIGN in command:   # nothing retrained
            assert stamps and all(f.stat().st_mtime_ns == t for f, t in stamps.items())
        ran += 1
    assert ran >= 30
    for made in ("outputs/runs/mlp-digits/run.json", "outputs/surface.h5", "outputs/hessian.h5",
                 "outputs/sweep/table.md", "outputs/sgd-adam/table.md", "outputs/path.svg"):
        assert (tmp_path / made).exists(), made
