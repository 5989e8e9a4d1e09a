"""Output paths: refused before any work in every command, written whole or not at all."""

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

import xattn.comparison.comparator
import xattn.comparison.sweeper
from xattn.cli import main
from xattn.render import files
from xattn.render.files import check_writable, write_atomic

from conftest import require_backend

SELECTION = ["--backends", "jax", "--variants", "einsum", "--batch", "1", "--embed", "16", "--heads", "2",
             "--no-timing"]
TINY = [*SELECTION, "--q-len", "8"]
SWEEP = ["sweep", *SELECTION, "--seq", "8,16"]
#: Paths no report can be written to, and what the one-line reason says.
BAD_PATHS = [
    ("/nonexistent-xattn/r.json", "expected an existing directory for '/nonexistent-xattn/r.json'; got nothing"),
    ("/etc/hostname/r.json", "got a file at '/etc/hostname'"),
    ("/dev/full", "expected a regular file; got '/dev/full', a device or pipe"),
    ("/proc/xattn-report.json", "expected a directory xattn can write in; got '/proc'"),
    ("{tmp}", "expected a file path; got '{tmp}', a directory"),
]


def no_work(*args, **kwargs):
    raise AssertionError("the command started working before refusing its output path")


@pytest.fixture
def refuse_work(monkeypatch):
    monkeypatch.setattr(xattn.comparison.comparator, "run", no_work)
    monkeypatch.setattr(xattn.comparison.sweeper, "run", no_work)
    monkeypatch.setattr("xattn.backends.env.environment", no_work)
    monkeypatch.setattr("xattn.bridge.matrix.bridge_matrix", no_work)


@pytest.mark.parametrize("path, reason", BAD_PATHS)
@pytest.mark.parametrize("command", [
    ["compare", *TINY, "-o"],
    [*SWEEP, "-o"],
    [*SWEEP, "--plot"],
    ["env", "-o"],
    ["bridge", "-o"],
])
def test_a_bad_output_path_is_exit_2_with_one_line_before_any_work(command, path, reason, tmp_path, refuse_work):
    path, reason = path.format(tmp=tmp_path), reason.format(tmp=tmp_path)
    result = CliRunner().invoke(main, [*command, path])
    assert result.exit_code == 2, result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and reason in error_lines[0], result.output
    assert "Traceback" not in result.output


def test_an_unwritable_directory_is_refused(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes through directory permissions; /proc stands for an unwritable directory above")
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(ValueError, match="expected a directory xattn can write in"):
            check_writable(tmp_path / "r.json")
    finally:
        tmp_path.chmod(0o700)


def test_a_plot_format_matplotlib_cannot_write_is_refused_before_the_sweep(tmp_path, refuse_work):
    pytest.importorskip("matplotlib")
    result = CliRunner().invoke(main, [*SWEEP, "--plot", str(tmp_path / "s.xyz")])
    assert result.exit_code == 2 and "expected a file name ending in one of" in result.output, result.output
    assert "'.png'" not in result.output and ".png" in result.output


def test_checking_a_path_leaves_nothing_behind(tmp_path):
    assert check_writable(tmp_path / "r.json") == tmp_path / "r.json"
    assert check_writable(os.devnull) == Path(os.devnull)
    assert list(tmp_path.iterdir()) == []


def test_an_atomic_write_replaces_the_file_whole_and_keeps_its_permissions(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    target.chmod(0o640)
    write_atomic(target, "new ✓")
    assert target.read_text(encoding="utf-8") == "new ✓" and (target.stat().st_mode & 0o777) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


@pytest.mark.parametrize("failure", [KeyboardInterrupt, OSError])
def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, failure):
    target = tmp_path / "r.json"
    target.write_text("old")

    def fail(*args):
        raise failure()

    monkeypatch.setattr(files.os, "replace", fail)
    with pytest.raises(failure):
        write_atomic(target, "x" * 10_000)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_a_write_that_fails_after_the_work_puts_the_report_on_stdout(tmp_path, monkeypatch):
    require_backend("jax")

    def disk_full(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files, "write_atomic", disk_full)
    result = CliRunner().invoke(main, ["compare", *TINY, "--format", "json", "-o", str(tmp_path / "r.json")])
    assert result.exit_code == 2
    assert "could not write" in result.output and "No space left on device" in result.output
    report = json.loads(result.output[result.output.index("{"):result.output.rindex("}") + 1])
    assert report["results"][0]["variant"] == "einsum"
    assert not (tmp_path / "r.json").exists()


def test_a_good_path_gets_the_report(tmp_path):
    require_backend("jax")
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["compare", *TINY, "--format", "json", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["results"][0]["backend"] == "jax"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_a_plot_that_cannot_be_written_after_the_sweep_is_one_line_and_the_report_stays(tmp_path, monkeypatch):
    require_backend("jax")
    pytest.importorskip("matplotlib")

    def disk_full(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("xattn.render.plot.write_atomic", disk_full)
    result = CliRunner().invoke(main, [*SWEEP, "--format", "json", "--plot", str(tmp_path / "s.png")])
    assert result.exit_code == 2
    assert f"could not write {tmp_path / 's.png'} (No space left on device)" in result.output
    assert '"schema": "xattn.sweep/1"' in result.output and not (tmp_path / "s.png").exists()
