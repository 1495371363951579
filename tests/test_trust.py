"""Opening a run directory or a study file never imports or calls code the user did not name.

Every route gets a hostile file whose code would create a marker file; the marker must never
appear. A user model named on the command line (or trusted explicitly) keeps working, and a
recorded model file that changed since the run was made is noticed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sysconfig
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

import landscape
import landscape.models
import landscape.trust
from landscape.cli import main
from landscape.errors import LandscapeError
from landscape.training import train

USER_MODEL = """
from pathlib import Path
from torch import nn

Path({marker!r}).touch()  # importing this file is running it

def factory(input_shape, num_outputs, hidden=3):
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], hidden), nn.ReLU(),
                         nn.Linear(hidden, num_outputs))
"""


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny registry-model run (4-unit MLP on 40 spirals, 1 epoch)."""
    path = tmp_path_factory.mktemp("trust") / "run"
    train(model="mlp", model_options={"widths": [4]}, dataset="spirals", train_size=40,
          epochs=1, batch_size=20, out=path, progress=False)
    return path


def _hostile_copy(run: Path, dest: Path, model: dict) -> Path:
    shutil.copytree(run, dest)
    info = json.loads((dest / "run.json").read_text())
    info["model"] = {**info["model"], **model}
    (dest / "run.json").write_text(json.dumps(info))
    return dest


def _system_spec(name: str, marker: Path) -> dict:
    return {"name": name, "options": {"command": f"touch {marker}", "args": f"touch {marker}",
                                      "source": f"open({str(marker)!r}, 'w')"}}


def _invoke(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line_error(result: Result) -> str:
    assert result.exit_code == 1, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("name", ["os:system", "subprocess:run", "builtins:eval",
                                  "landscape.runs:atomic_write_json"])
def test_load_run_never_calls_a_recorded_module_outside_user_code_even_when_trusted(
        plain_run: Path, tmp_path: Path, name: str) -> None:
    marker = tmp_path / "PWNED"
    run = _hostile_copy(plain_run, tmp_path / "run", _system_spec(name, marker))
    for trust in (False, True):
        with pytest.raises(LandscapeError, match="outside your own code") as err:
            landscape.load_run(run, data=False, trust=trust)
        assert "\n" not in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("command", [
    ["hessian", "--top", "1", "--bottom", "0", "--out", "{tmp}/h.h5"],
    ["surface", "--x", "-1:1:3", "--out", "{tmp}/s.h5"],
    ["sharpness", "--measures", "epsilon_sharpness"],
])
def test_cli_commands_on_a_hostile_run_refuse_it_with_one_line(
        plain_run: Path, tmp_path: Path, command: list[str]) -> None:
    marker = tmp_path / "PWNED"
    run = _hostile_copy(plain_run, tmp_path / "run", _system_spec("os:system", marker))
    args = [command[0], "--run", run, *(a.format(tmp=tmp_path) for a in command[1:])]
    assert "outside your own code" in _one_line_error(_invoke(*args))
    assert "outside your own code" in _one_line_error(_invoke(*args, "--trust-code"))
    assert not marker.exists()
    assert not list(tmp_path.glob("*.h5"))


def test_recorded_user_file_runs_only_when_trusted_and_unchanged(plain_run: Path,
                                                                 tmp_path: Path) -> None:
    marker = tmp_path / "IMPORTED"
    code = tmp_path / "net.py"
    code.write_text(USER_MODEL.format(marker=str(marker)))
    landscape.train(model=f"{code}:factory", dataset="spirals", train_size=40, epochs=1,
                    batch_size=20, out=tmp_path / "run", progress=False)
    marker.unlink()  # training named the file: it ran then, as it should
    run = tmp_path / "run"
    recorded = json.loads((run / "run.json").read_text())["model"]
    assert recorded["name"] == f"{code}:factory" and len(recorded["sha256"]) == 64

    with pytest.raises(LandscapeError, match="--trust-code") as err:
        landscape.load_run(run, data=False)
    assert "\n" not in str(err.value) and f"--model {code}:factory" in str(err.value)
    message = _one_line_error(_invoke("hessian", "--run", run, "--top", "1", "--bottom", "0",
                                      "--out", tmp_path / "h.h5"))
    assert "not run unless you trust it" in message
    message = _one_line_error(_invoke("surface", "--run", run, "--x", "-1:1:3",
                                      "--out", tmp_path / "s.h5"))
    assert "not run unless you trust it" in message
    assert not marker.exists()

    # Trusted explicitly, or named again: the same model comes back.
    loaded = landscape.load_run(run, data=False, trust=True)
    assert marker.exists() and loaded.model[1].out_features == 3
    result = _invoke("surface", "--run", run, "--x", "-1:1:3", "--out", tmp_path / "s.h5",
                     "--model", f"{code}:factory", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["done"] == 3

    # A changed file is noticed even with --trust-code; naming it again accepts it as it is.
    code.write_text(USER_MODEL.format(marker=str(marker)) + "\n# edited\n")
    marker.unlink()
    with pytest.raises(LandscapeError, match="changed since"):
        landscape.load_run(run, data=False, trust=True)
    message = _one_line_error(_invoke("surface", "--run", run, "--x", "-1:1:3", "--out",
                                      tmp_path / "s2.h5", "--trust-code"))
    assert "changed since" in message
    assert not marker.exists()
    with landscape.trust.trusting([f"{code}:factory"]):
        assert landscape.load_run(run, data=False).model[1].out_features == 3


@pytest.mark.parametrize("where", ["top", "recipe"])
def test_study_toml_naming_os_system_is_refused_before_anything_runs(tmp_path: Path,
                                                                     where: str) -> None:
    marker = tmp_path / "PWNED"
    model = 'model = "os:system"\nmodel_options = "command=touch ' + str(marker) + '"\n'
    text = (model + '[recipes.a]\nepochs = 1\n[recipes.b]\nepochs = 2\n' if where == "top"
            else '[recipes.a]\nepochs = 1\nmodel = "os:system"\n[recipes.b]\nepochs = 2\n')
    toml = tmp_path / "study.toml"
    toml.write_text(text)
    for extra in ([], ["--trust-code"]):
        message = _one_line_error(_invoke("compare", "--recipes", toml, "--out",
                                          tmp_path / "study", *extra))
        assert "outside your own code" in message and str(toml) in message
    assert not marker.exists() and not (tmp_path / "study").exists()


def test_study_toml_naming_a_user_file_needs_trust(tmp_path: Path) -> None:
    marker = tmp_path / "IMPORTED"
    code = tmp_path / "net.py"
    code.write_text(USER_MODEL.format(marker=str(marker)))
    toml = tmp_path / "study.toml"
    toml.write_text(f'model = "{code}:factory"\n[recipes.a]\nepochs = 1\n'
                    '[recipes.b]\nepochs = 2\n')
    message = _one_line_error(_invoke("compare", "--recipes", toml, "--out", tmp_path / "s"))
    assert "not run unless you trust it" in message
    assert not marker.exists()


def test_user_model_named_on_the_command_line_trains(tmp_path: Path) -> None:
    code = tmp_path / "net.py"
    code.write_text(USER_MODEL.format(marker=str(tmp_path / "m")))
    result = _invoke("train", "--model", f"{code}:factory", "--dataset", "spirals",
                     "--train-size", "40", "--epochs", "1", "--batch-size", "20",
                     "--out", tmp_path / "run", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["config"]["model"] == f"{code}:factory"


def test_locating_a_module_imports_nothing(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "userpkg_trust"
    package.mkdir()
    marker = tmp_path / "IMPORTED"
    (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w')\n")
    (package / "nets.py").write_text(USER_MODEL.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert landscape.trust.source_file("userpkg_trust.nets:factory") == package / "nets.py"
    assert landscape.trust.source_file("os:system").name == "os.py"
    assert landscape.trust.source_file("builtins:eval") is None
    digest = landscape.trust.record("userpkg_trust.nets:factory")["sha256"]
    with pytest.raises(LandscapeError, match="not run unless you trust it"):
        landscape.trust.check_recorded("userpkg_trust.nets:factory", digest, source="x")
    with landscape.trust.trusting(trust_all=True):
        code = landscape.trust.check_recorded("userpkg_trust.nets:factory", digest, source="x")
    assert code.file == package / "nets.py" and not marker.exists()


STDLIB = Path(sysconfig.get_paths()["stdlib"])


def _sha256(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


def _spellings(tmp: Path) -> dict[str, str]:
    """Ways to name the standard library's ``os.system`` (and friends) from a record."""
    link = tmp / "innocent.py"
    link.symlink_to(STDLIB / "os.py")
    up = "../" * len(tmp.parts)
    return {"file_path": f"{STDLIB}/os.py:system",
            "dotdot_path": f"{tmp}/{up}{str(STDLIB).lstrip('/')}/os.py:system",
            "symlink": f"{link}:system",
            "subprocess_run": f"{STDLIB}/subprocess.py:run",
            "getpid": f"{STDLIB}/os.py:getpid",
            "site_packages": f"{Path(click.__file__).resolve()}:echo"}


@pytest.mark.parametrize("spelling", ["file_path", "dotdot_path", "symlink", "subprocess_run",
                                      "getpid", "site_packages"])
def test_recorded_file_path_into_the_standard_library_is_refused_even_when_trusted(
        plain_run: Path, tmp_path: Path, spelling: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The standard library or site-packages named by a file path (plain, ``..``, a
    symlink) is refused like a module name; nothing of it is called (os.getpid neither)."""
    marker = tmp_path / "PWNED"
    name = _spellings(tmp_path)[spelling]
    file = Path(name.rpartition(":")[0]).resolve()
    called = []
    monkeypatch.setattr(os, "getpid", lambda: called.append(1) or 1)
    run = _hostile_copy(plain_run, tmp_path / "run", {**_system_spec(name, marker),
                                                      "sha256": _sha256(file)})
    for extra in ([], ["--trust-code"]):
        message = _one_line_error(_invoke("surface", "--run", run, "--x", "-1:1:3", "--out",
                                          tmp_path / "s.h5", *extra))
        assert "outside your own code" in message and str(file) in message, message
    with pytest.raises(LandscapeError, match="outside your own code"):
        landscape.load_run(run, data=False, trust=True)
    assert not marker.exists() and not called and not (tmp_path / "s.h5").exists()


@pytest.mark.parametrize("spelling", ["file_path", "dotdot_path", "symlink"])
def test_study_toml_naming_a_standard_library_file_is_refused(tmp_path: Path,
                                                              spelling: str) -> None:
    marker = tmp_path / "PWNED"
    toml = tmp_path / "study.toml"
    toml.write_text(f'model = "{_spellings(tmp_path)[spelling]}"\n'
                    f'model_options = "command=touch {marker}"\n'
                    '[recipes.a]\nepochs = 1\n[recipes.b]\nepochs = 2\n')
    for extra in ([], ["--trust-code"]):
        message = _one_line_error(_invoke("compare", "--recipes", toml, "--out",
                                          tmp_path / "study", *extra))
        assert "outside your own code" in message and str(toml) in message
    assert not marker.exists() and not (tmp_path / "study").exists()


def test_local_file_shadowing_a_standard_library_module_is_refused(
        plain_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``PYTHONPATH=.`` with a local ``os.py`` and a record ``os:system``: the check used to
    judge the local file user code while the import returned the real ``os``. A
    standard-library name is refused from a record whatever file it finds first."""
    marker = tmp_path / "PWNED"
    shadow = tmp_path / "code"
    shadow.mkdir()
    (shadow / "os.py").write_text("def system(command):\n    return 0\n")
    monkeypatch.syspath_prepend(str(shadow))
    assert landscape.trust.source_file("os:system") == shadow / "os.py"
    run = _hostile_copy(plain_run, tmp_path / "run", {**_system_spec("os:system", marker),
                                                      "sha256": _sha256(shadow / "os.py")})
    message = _one_line_error(_invoke("surface", "--run", run, "--x", "-1:1:3", "--out",
                                      tmp_path / "s.h5", "--trust-code"))
    assert "'os' is a standard-library module" in message, message
    assert not marker.exists()


@pytest.mark.parametrize("sha256", [None, "", "abc", "0" * 63 + "g", 12, "missing"])
def test_recorded_user_file_without_a_valid_hash_is_refused_not_trusted(
        plain_run: Path, tmp_path: Path, sha256: object) -> None:
    marker = tmp_path / "IMPORTED"
    code = tmp_path / "net.py"
    code.write_text(USER_MODEL.format(marker=str(marker)))
    run = _hostile_copy(plain_run, tmp_path / "run", {
        "name": f"{code}:factory", "options": {}, "sha256": sha256})
    if sha256 == "missing":
        info = json.loads((run / "run.json").read_text())
        del info["model"]["sha256"]
        (run / "run.json").write_text(json.dumps(info))
    message = _one_line_error(_invoke("surface", "--run", run, "--x", "-1:1:3", "--out",
                                      tmp_path / "s.h5", "--trust-code"))
    assert "records no valid sha256" in message and f"--model {code}:factory" in message
    assert not marker.exists()
    recorded = json.loads((run / "run.json").read_text())["model"]
    with landscape.trust.trusting([f"{code}:factory"]):  # named again: it runs as it is now
        model = landscape.models.model_from_spec(recorded, source=str(run / "run.json"))
    assert model[1].out_features == 3 and marker.exists()


def test_the_judged_file_is_the_loaded_file(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A module spec is loaded from the file its check located, not looked up again: a
    second file of the same name later on sys.path, or one put first after the check, is
    never executed."""
    first, second = tmp_path / "a", tmp_path / "b"
    for folder, value in ((first, 1), (second, 2)):
        folder.mkdir()
        (folder / "judged_mod_trust.py").write_text(f"def f():\n    return {value}\n")
    monkeypatch.syspath_prepend(str(second))
    monkeypatch.syspath_prepend(str(first))
    name = "judged_mod_trust:f"
    with landscape.trust.trusting(trust_all=True):
        code = landscape.trust.check_recorded(name, landscape.trust.record(name)["sha256"],
                                              source="x")
    assert code.file == first / "judged_mod_trust.py"
    (first / "judged_mod_trust.py").write_text("raise SystemExit('edited after the check')\n")
    monkeypatch.syspath_prepend(str(second))
    from landscape.models.user import load_attribute

    assert load_attribute(name, code=code)() == 1
