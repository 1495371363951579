"""run.json has one validator, used by its writer and its readers: what a reader would refuse
is never written, and what is written reads back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from landscape.errors import LandscapeError
from landscape.runs import RUN_FORMAT, read_run_json, write_run_json

GOOD = {"format": RUN_FORMAT, "format_version": 1, "config": {"seed": 0},
        "model": {"name": "mlp"}, "dataset": {"name": "digits"}}


@pytest.mark.parametrize("damage", [{"format": "other"}, {"format_version": 2},
                                    {"config": {"seed": "0"}}, {"model": {"name": 3}},
                                    {"data_sizes": {"train": 1}}])
def test_a_record_every_reader_refuses_is_never_written(tmp_path: Path, damage: dict) -> None:
    with pytest.raises(LandscapeError) as refused:
        write_run_json(tmp_path, {**GOOD, **damage})
    assert not (tmp_path / "run.json").exists()
    (tmp_path / "run.json").write_text(json.dumps({**GOOD, **damage}))
    with pytest.raises(LandscapeError) as read:
        read_run_json(tmp_path)
    assert str(read.value) == str(refused.value)
    write_run_json(tmp_path, GOOD)
    assert read_run_json(tmp_path) == GOOD
