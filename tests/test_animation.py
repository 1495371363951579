"""`landscape plot --animate`: paths drawn as they go, as a GIF read back with Pillow.

Checked: the GIF has the frames and per-frame time asked for, consecutive frames differ, and
the last frame's path points are exactly the stored path (the toy optimizers' paths, and a
trajectory's checkpoints followed by the final model at the origin).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _helpers import invoke
from PIL import Image, ImageSequence

from landscape.plot.animation import animate_toy, animate_trajectory
from landscape.toy import load_paths, run_toy


def test_toy_gif_has_the_frames_and_duration_asked_for_and_they_differ(tmp_path: Path) -> None:
    run_toy("quadratic", ["sgd", "momentum", "adam"], out=tmp_path, steps=12)
    gif = animate_toy(tmp_path / "paths.h5", frames=8).save(tmp_path / "p.gif", 1.6, dpi=40)
    with Image.open(gif) as im:
        assert im.n_frames == 8
        frames = [np.asarray(f.convert("RGB"), dtype=np.int16) for f in ImageSequence.Iterator(im)]
        durations = []
        for i in range(im.n_frames):
            im.seek(i)
            durations.append(im.info["duration"])
    assert durations == [200] * 8  # 1.6 s / 8 frames, in ms
    assert all(np.abs(a - b).sum() > 0 for a, b in zip(frames, frames[1:]))


def test_last_frame_shows_exactly_the_stored_paths(tmp_path: Path,
                                                   plot_files: dict[str, Path]) -> None:
    run_toy("rosenbrock", ["sgd", "adam"], out=tmp_path, steps=7)
    anim = animate_toy(tmp_path / "paths.h5", frames=5)
    _, stored = load_paths(tmp_path / "paths.h5")
    anim.draw(4)
    for label, p in stored.items():
        np.testing.assert_array_equal(np.stack(anim.lines[label].get_data(), -1), p.path)
    anim.draw(2)  # halfway: 3.5 of 7 steps, the head between points 3 and 4
    xy = np.stack(anim.lines["sgd"].get_data(), -1)
    np.testing.assert_array_equal(xy[:4], stored["sgd"].path[:4])
    np.testing.assert_allclose(xy[4], 0.5 * (stored["sgd"].path[3] + stored["sgd"].path[4]))

    traj = animate_trajectory(plot_files["traj"], frames=3)
    traj.draw(2)
    import h5py

    with h5py.File(plot_files["traj"]) as f:
        coords = f["path/coords"][()]
    np.testing.assert_array_equal(np.stack(traj.lines["training path"].get_data(), -1),
                                  np.vstack([coords, [[0.0, 0.0]]]))


def test_cli_animates_and_refuses_a_surface_or_a_bad_suffix_in_one_line(
        tmp_path: Path, plot_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    gif = tmp_path / "traj.gif"
    r = invoke("plot", str(plot_files["traj"]), "--animate", str(gif), "--frames", "2",
               "--duration", "0.5")
    assert r.exit_code == 0 and r.output.strip() == str(gif)
    with Image.open(gif) as im:
        assert im.n_frames == 2
    r = invoke("plot", str(plot_files["surface"]), "--animate", str(tmp_path / "a.gif"))
    assert r.exit_code == 1 and "'trajectory' or 'toy'" in r.output
    r = invoke("plot", str(plot_files["traj"]), "--animate", str(tmp_path / "a.png"),
               "--frames", "2")
    assert r.exit_code == 1 and ".gif or .mp4" in r.output
    assert len(r.output.strip().splitlines()) == 1
    monkeypatch.setattr("landscape.plot.animation.shutil.which", lambda name: None)
    r = invoke("plot", str(plot_files["traj"]), "--animate", str(tmp_path / "a.mp4"))
    assert r.exit_code == 1 and "needs ffmpeg" in r.output  # an .mp4 without ffmpeg
