"""Outputs: never half-written, never silently replaced, readable as the umask says, safe under kill -9."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import SST2_SENTENCES
from onnx_tokprune.io import OutputExistsError, atomic_output_dir, recover_output, write_json_atomic


def modes(root: Path) -> dict[str, int]:
    """Permission bits of `root` and everything under it, by relative path."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.stat().st_mode)
    return found


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def sentences_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "sentences.txt"
    path.write_text("\n".join(SST2_SENTENCES) + "\n")
    return path


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_checkpoint_and_artifact_modes_follow_the_umask(tiny_checkpoint, sentences_file, tmp_path, umask):
    from onnx_tokprune.cli import calibrate_command, export_command

    previous = os.umask(umask)
    try:
        ckpt, art = tmp_path / "ckpt", tmp_path / "art"
        result = CliRunner().invoke(calibrate_command, ["--model", str(tiny_checkpoint), "--data", str(sentences_file), "--keep", "0.5", "--output", str(ckpt)])
        assert result.exit_code == 0, result.output
        result = CliRunner().invoke(export_command, ["--model", str(ckpt), "--output", str(art), "--int8"])
        assert result.exit_code == 0, result.output
    finally:
        os.umask(previous)
    for root in (ckpt, art):
        for name, mode in modes(root).items():
            want = (0o777 if (root / name).is_dir() else 0o666) & ~umask
            assert mode == want, f"{root.name}/{name}: {oct(mode)}, expected {oct(want)} under umask {oct(umask)}"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_write_json_atomic_mode(tmp_path):
    previous = os.umask(0o002)
    try:
        path = write_json_atomic(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o664 and json.loads(path.read_text()) == {"x": 1}


def test_concurrent_writer_without_force_does_not_replace(tmp_path):
    out = tmp_path / "art"
    with pytest.raises(OutputExistsError, match="created by another process"):
        with atomic_output_dir(out) as first:
            (first / "config.json").write_text("first")
            with atomic_output_dir(out) as second:  # a second writer that finishes first
                (second / "config.json").write_text("second")
    assert (out / "config.json").read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["art"]


def test_force_replaces_a_tokprune_output(tmp_path):
    out = tmp_path / "art"
    with atomic_output_dir(out) as tmp:
        (tmp / "model.onnx").write_text("old")
    with atomic_output_dir(out, force=True) as tmp:
        (tmp / "model.onnx").write_text("new")
    assert (out / "model.onnx").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["art"]


def test_force_refuses_a_directory_that_is_not_a_tokprune_output(tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_text("precious")
    with pytest.raises(OutputExistsError, match="not a tokprune output"):
        with atomic_output_dir(out, force=True) as tmp:
            (tmp / "model.onnx").write_text("new")
    assert (out / "holiday.jpg").read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["photos"]


def test_cli_force_refuses_a_user_directory(calibrated_ckpt, tmp_path):
    from conftest import assert_one_line_error
    from onnx_tokprune.cli import export_command

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = CliRunner().invoke(export_command, ["--model", str(calibrated_ckpt), "--output", str(out), "--force"])
    assert_one_line_error(result, "not a tokprune output")
    assert (out / "notes.txt").read_text() == "keep me" and [p.name for p in out.iterdir()] == ["notes.txt"]


def test_leftovers_of_a_dead_writer_are_cleaned_and_a_parked_output_restored(tmp_path):
    out = tmp_path / "art"
    pid = dead_pid()
    tmp_left = tmp_path / f".art.tmp-{pid}-abc"
    tmp_left.mkdir()
    (tmp_left / "model.onnx").write_text("partial")
    parked = tmp_path / f".art.old-{pid}-def" / "art"  # killed between the two renames of the fallback swap
    parked.mkdir(parents=True)
    (parked / "model.onnx").write_text("old")
    live = tmp_path / f".art.tmp-{os.getppid()}-ghi"  # a writer that still runs: left alone
    live.mkdir()
    recover_output(out)
    assert (out / "model.onnx").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["art", live.name])


@pytest.fixture(scope="module")
def calibrated_ckpt(tiny_checkpoint, sentences_file, tmp_path_factory):
    from onnx_tokprune.cli import calibrate_command

    out = tmp_path_factory.mktemp("cal") / "ckpt"
    result = CliRunner().invoke(calibrate_command, ["--model", str(tiny_checkpoint), "--data", str(sentences_file), "--keep", "0.5", "--output", str(out)])
    assert result.exit_code == 0, result.output
    return out


def artifact_state(path: Path) -> str:
    """'complete' when `path` holds a loadable model.onnx and a manifest, 'missing' when absent, else 'partial'."""
    import onnx

    if not path.exists():
        return "missing"
    try:
        onnx.load(str(path / "model.onnx"))
        json.loads((path / "tokprune_manifest.json").read_text())
    except Exception:
        return "partial"
    return "complete"


def test_kill_9_during_export_and_force_never_leaves_a_partial_artifact(calibrated_ckpt, tmp_path):
    """SIGKILL `tokprune-export` at spread-out moments: the output is absent or complete (first export)
    and always complete (--force over an existing artifact); the next run cleans the leftovers."""
    out = tmp_path / "art"
    command = [sys.executable, "-m", "onnx_tokprune.cli", "export", "--model", str(calibrated_ckpt), "--output", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env, timeout=300)
    duration = time.perf_counter() - start
    original = (out / "model.onnx").read_bytes()
    for fraction in (0.6, 0.85, 0.95, 0.99):
        proc = subprocess.Popen([*command, "--force"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        time.sleep(duration * fraction)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert artifact_state(out) == "complete", f"killed at {fraction:.0%} of an export: {artifact_state(out)}"
    fresh = tmp_path / "fresh"
    fresh_command = [*command[:-1], str(fresh)]
    for fraction in (0.9, 0.99):
        proc = subprocess.Popen(fresh_command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        time.sleep(duration * fraction)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert artifact_state(fresh) in ("missing", "complete")
        if fresh.exists():
            break
    subprocess.run([*command, "--force"], check=True, capture_output=True, env=env, timeout=300)
    assert artifact_state(out) == "complete" and (out / "model.onnx").read_bytes() == original
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".art.")], "leftovers of killed writers remain"
