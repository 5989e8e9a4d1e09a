"""`xattn.sweep` and `xattn sweep`: the grid, the report's JSON/CSV/table, progress on stderr, the plot, exit codes."""

import csv
import io
import json
import subprocess
import sys
import textwrap

import jsonschema
import pytest

import xattn
import xattn.backends.registry
from xattn.cli import main
from xattn.comparison.sweeper import sweep_points
from xattn.contract.spec import AttentionSpec
from xattn.render.schema import REPORT_SCHEMA, SWEEP_SCHEMA

from conftest import REQUIRED, Scaled, cli_runner, require_backend

SMALL = AttentionSpec(batch=1, q_len=8, embed=16, heads=2)
#: A tiny problem and tiny time caps: these tests check behaviour, not speed.
TINY = ["--batch", "1", "--embed", "16", "--min-time", "0", "--max-time", "0.005"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def both():
    require_backend("jax")
    require_backend("torch")


def require_matplotlib():
    """matplotlib, or a skip; a failure where CI demands the frameworks (its environments install the plot extra)."""
    if REQUIRED:
        import matplotlib

        return matplotlib
    return pytest.importorskip("matplotlib")


def run(*args):
    """Invoke the CLI with standard output and standard error kept apart (``result.stdout``, ``result.stderr``)."""
    return cli_runner().invoke(main, list(args), catch_exceptions=False)


# ------------------------------------------------------------------------- the grid (no framework)


def test_grid_is_the_cartesian_product_in_the_order_given():
    fields, points = sweep_points(SMALL, {"seq": [8, 16], "dtype": ["float32", "bfloat16"]})
    assert fields == ("seq", "dtype")
    assert [values for values, _ in points] == [(8, "float32"), (8, "bfloat16"), (16, "float32"), (16, "bfloat16")]
    assert [(s.q_len, s.kv_len, s.dtype) for _, s in points][-1] == (16, 16, "bfloat16")


def test_derived_fields_follow_their_sources_unless_held_or_set():
    _, points = sweep_points(SMALL, {"q_len": [8, 32]})
    assert [(s.q_len, s.kv_len) for _, s in points] == [(8, 8), (32, 32)]  # self-attention stays self-attention
    _, points = sweep_points(SMALL, {"heads": [2, 4]})
    assert [(s.heads, s.kv_heads, s.head_dim) for _, s in points] == [(2, 2, 8), (4, 4, 4)]
    _, points = sweep_points(SMALL, {"heads": [2, 4]}, hold=["head_dim"])
    assert [s.head_dim for _, s in points] == [8, 8]
    cross = SMALL.replace(kv_len=12)
    _, points = sweep_points(cross, {"q_len": [8, 16]})
    assert [s.kv_len for _, s in points] == [12, 12]


@pytest.mark.parametrize("sweep, message", [
    ({"seq": [8, 16]}, None),
    ({"heads": [2, 3]}, "sweep point 2 of 2 (heads=3): head_dim: expected embed divisible by heads"),
    ({"colour": [1, 2]}, "sweep: expected fields from seq, batch"),
    ({"seq": [8, 8]}, "expected distinct values; got 8 more than once"),
    ({"seq": [8], "q_len": [8, 16]}, "'seq' sets q_len and kv_len together; got it with q_len"),
    ({"seq": []}, "expected at least one value"),
    ({"seq": "8,16"}, "expected a list of values"),
    ({}, "expected a mapping of field -> values"),
])
def test_impossible_points_and_bad_sweeps_are_value_errors_naming_them(sweep, message):
    if message is None:
        fields, points = sweep_points(SMALL, sweep)
        assert fields == ("seq",) and [values for values, _ in points] == [(8,), (16,)]
        assert [(spec.q_len, spec.kv_len) for _, spec in points] == [(8, 8), (16, 16)]
        return
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sweep_points(SMALL, sweep)


def test_causal_with_a_swept_kv_len_names_the_point():
    with pytest.raises(ValueError, match=r"sweep point 2 of 2 \(kv_len=16\): causal: expected q_len == kv_len"):
        sweep_points(SMALL.replace(causal=True), {"kv_len": [8, 16]})


def test_importing_the_sweep_modules_loads_no_framework_and_keeps_xattn_sweep_the_function():
    code = """
        import sys
        import xattn.comparison.sweeper, xattn.render.sweep_report, xattn.render.plot, xattn.cli
        import xattn
        assert callable(xattn.sweep) and xattn.sweep.__module__ == "xattn.comparison.sweeper", xattn.sweep
        print(",".join(m for m in ("jax", "torch", "flax", "matplotlib") if m in sys.modules))
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


# ---------------------------------------------------------------------------------- the library


def test_sweep_report_holds_one_report_per_point_and_calls_progress():
    require_backend("jax")
    calls = []
    result = xattn.sweep("jax", "einsum", SMALL, {"seq": [8, 16], "dtype": ["float32", "bfloat16"]}, timing=False,
                         progress=lambda i, n, label: calls.append((i, n, label)))
    assert isinstance(result, xattn.SweepReport)
    assert result.fields == ("seq", "dtype") and len(result.reports) == 4 and result.exit_code == 0
    assert result.values("dtype") == ("float32", "bfloat16")
    assert [(r.spec.q_len, r.spec.dtype) for r in result.reports][1] == (8, "bfloat16")
    assert calls[0] == (0, 4, "seq=8, dtype=float32") and calls[-1] == (3, 4, "seq=16, dtype=bfloat16")
    data = result.to_dict()
    jsonschema.validate(data, SWEEP_SCHEMA)
    assert data["values"] == {"seq": [8, 16], "dtype": ["float32", "bfloat16"]}
    assert "xattn sweep: T = S in 8, 16 x dtype in float32, bfloat16 (4 points)" in str(result)


def test_library_rejects_bad_arguments_before_running():
    with pytest.raises(ValueError, match="max_time: expected at least min_time"):
        xattn.sweep("jax", "einsum", SMALL, {"seq": [8, 16]}, min_time=1, max_time=0.5)
    with pytest.raises(ValueError, match="matmul_precision: expected one of"):
        xattn.sweep("jax", "einsum", SMALL, {"seq": [8, 16]}, matmul_precision="fast")


# ---------------------------------------------------------------------------------------- the CLI


def test_json_has_every_point_as_a_compare_report_and_progress_goes_to_stderr():
    both()
    result = run("sweep", "--backends", "jax,torch", "--variants", "einsum,sdpa", "--seq", "8,16", *TINY,
                 "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # stdout is the JSON alone: no progress mixed in
    jsonschema.validate(data, SWEEP_SCHEMA)
    assert data["fields"] == ["seq"] and data["values"] == {"seq": [8, 16]} and data["exit_code"] == 0
    assert [point["values"] for point in data["points"]] == [{"seq": 8}, {"seq": 16}]
    for point, length in zip(data["points"], (8, 16)):
        report = point["report"]
        jsonschema.validate(report, REPORT_SCHEMA)
        assert (report["spec"]["q_len"], report["spec"]["kv_len"]) == (length, length)
        assert len(report["results"]) == 4 and len(report["pairs"]) == 2
        assert all(row["median_s"] is not None for row in report["results"])
    assert "xattn sweep: point 1/2: seq=8" in result.stderr and "point 2/2: seq=16" in result.stderr
    assert "xattn sweep: point" not in result.stdout


def test_csv_is_one_line_per_point_and_row_and_the_first_option_given_is_the_first_field(tmp_path):
    require_backend("jax")
    out = tmp_path / "sweep.csv"
    result = run("sweep", "--backends", "jax", "--variants", "einsum,tiled", "--dtype", "float32,bfloat16",
                 "--heads", "2,4", "--q-len", "8", *TINY, "--no-timing", "--format", "csv", "--output", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and f"wrote {out}" in result.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 2 * 2 * 2
    assert list(rows[0])[:9] == ["point", "batch", "q_len", "kv_len", "embed", "heads", "kv_heads", "head_dim",
                                 "causal"]
    # --dtype came first on the command line: dtype varies slowest
    assert [(r["point"], r["dtype"], r["heads"], r["head_dim"]) for r in rows[::2]] == [
        ("0", "float32", "2", "8"), ("1", "float32", "4", "4"),
        ("2", "bfloat16", "2", "8"), ("3", "bfloat16", "4", "4"),
    ]
    assert {r["q_len"] for r in rows} == {"8"}
    assert {r["verdict"] for r in rows} == {"ok"}


def test_table_and_markdown_read_at_100_columns():
    require_backend("jax")
    result = run("sweep", "--backends", "jax", "--variants", "einsum,packed", "--seq", "8,16", *TINY, "--no-timing")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("xattn sweep: T = S in 8, 16 (2 points); fixed B=1 E=16 H=4 G=4 D=4 float32")
    assert all(len(line) <= 100 for line in lines)
    assert "verdict: all 4 rows that ran are ok at every point" in result.stdout
    markdown = run("sweep", "--backends", "jax", "--variants", "einsum", "--seq", "8,16", *TINY, "--no-timing",
                   "--format", "markdown").stdout
    assert "| T = S | backend" in markdown.replace("  ", " ")


def test_plot_writes_a_png(tmp_path):
    require_matplotlib()
    both()
    png = tmp_path / "sweep.png"
    result = run("sweep", "--backends", "jax,torch", "--variants", "einsum,sdpa", "--seq", "8,16",
                 "--dtype", "float32,float16", *TINY, "--plot", str(png))
    assert result.exit_code == 0, result.output  # jax/sdpa float16 is unsupported: not a failure
    assert f"wrote {png}" in result.stderr
    data = png.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 20_000


def test_plot_without_timing_draws_the_error_panel_alone(tmp_path):
    require_matplotlib()
    require_backend("jax")
    result = xattn.sweep("jax", "einsum", SMALL, {"heads": [1, 2, 4]}, timing=False)
    path = result.plot(tmp_path / "errors.png")
    assert open(path, "rb").read(8) == PNG_MAGIC


def test_exit_1_when_a_row_drifts_at_one_point(monkeypatch):
    require_backend("jax")
    real = xattn.backends.registry.build

    def build(backend, variant, **options):
        fn = real(backend, variant, **options)
        return Scaled(fn) if options["causal"] else fn

    monkeypatch.setattr(xattn.backends.registry, "build", build)
    result = run("sweep", "--backends", "jax", "--variants", "einsum", "--seq", "8,16", *TINY, "--no-timing",
                 "--causal")
    assert result.exit_code == 1
    assert "not ok: jax/einsum at seq=8 (drift); jax/einsum at seq=16 (drift)" in " ".join(result.stdout.split())


@pytest.mark.parametrize("args, message", [
    (["--seq", "8"], "nothing to sweep: expected a comma list in --seq"),
    (["--causal", "--q-len", "8", "--kv-len", "8,16"],
     "impossible sweep point 2 of 2 (kv_len=16): causal: expected q_len == kv_len"),
    (["--heads", "3,2"], "impossible sweep point 1 of 2 (heads=3): head_dim: expected embed divisible by heads"),
    (["--seq", "8,4", "--key-lengths", "6"], "impossible sweep point 2 of 2 (seq=4): key_lengths: expected every"),
    (["--seq", "8,16", "--q-len", "8"], "--seq sets T and S together; got it with --q-len/--kv-len"),
    (["--seq", "8,x"], "'x' is not a valid integer"),
    (["--seq", "8,,16"], "expected one value or a comma-separated list"),
    (["--seq", "8,8"], "expected distinct values; got 8 more than once"),
    (["--seq", "8,16", "--dtype", "float32,int8"], "'int8' is not one of"),
    (["--seq", "8,16", "--backends", "mxnet"], "expected names from jax, torch; got mxnet"),
    (["--seq", "8,16", "--min-time", "2", "--max-time", "1"], "expected at least --min-time"),
])
def test_usage_errors_exit_2_before_anything_runs(args, message):
    result = cli_runner().invoke(main, ["sweep", "--batch", "1", "--embed", "16", "--heads", "2", "--no-timing", *args])
    assert result.exit_code == 2, result.stderr
    assert message in " ".join(result.stderr.split()) and result.stdout == ""
    assert "Traceback" not in result.stderr and "xattn sweep: point" not in result.stderr


def test_missing_matplotlib_is_a_usage_error_naming_the_extra_before_running(tmp_path):
    code = (
        "import sys; sys.modules['matplotlib'] = None; from xattn.cli import main;"
        f" main(['sweep', '--seq', '8,16', '--plot', {str(tmp_path / 'x.png')!r}])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "pip install 'xattn[plot]'" in result.stderr and "Traceback" not in result.stderr
    assert "point 1/" not in result.stderr


def test_progress_bar_on_a_terminal_names_the_current_point(monkeypatch):
    from xattn.cli.run import _progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with _progress(3) as progress:
        progress(0, 3, "seq=8")
        progress(1, 3, "seq=16")
    text = terminal.getvalue()
    assert "xattn sweep" in text and "seq=16" in text and "3/3" in text


def test_help_explains_lists_and_the_cartesian_product():
    text = " ".join(run("sweep", "--help").output.split())
    assert "a list sweeps that field" in text and "cartesian product" in text and "--plot" in text


# ------------------------------------------------------------------------ keeping finished points


def test_a_point_that_fails_is_error_rows_and_the_sweep_goes_on(monkeypatch):
    require_backend("jax")
    from xattn.comparison import comparator

    real = comparator.run

    def oracle_out_of_memory(plan, spec, settings, progress=None):
        if spec.q_len == 16:
            raise MemoryError("Unable to allocate 64.0 GiB for an array")
        return real(plan, spec, settings, progress)

    monkeypatch.setattr(comparator, "run", oracle_out_of_memory)
    result = run("sweep", "--backends", "jax", "--variants", "einsum,packed", "--seq", "8,16,32",
                                       "--format", "json", *TINY, "--no-timing")
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    jsonschema.validate(data, SWEEP_SCHEMA)
    assert data["complete"] is True and data["exit_code"] == 1 and len(data["points"]) == 3
    verdicts = [[row["verdict"] for row in point["report"]["results"]] for point in data["points"]]
    assert verdicts == [["ok", "ok"], ["error", "error"], ["ok", "ok"]]
    failed = data["points"][1]["report"]["results"][0]
    assert failed["error_type"] == "MemoryError" and "64.0 GiB" in failed["error"]


def interrupt_at_point(monkeypatch, number: int, signum=None):
    from xattn.comparison import comparator

    real, calls = comparator.run, []

    def run(plan, spec, settings, progress=None):
        calls.append(spec)
        if len(calls) == number:
            stop = KeyboardInterrupt()
            if signum is not None:
                stop.signum = signum
            raise stop
        return real(plan, spec, settings, progress)

    monkeypatch.setattr(comparator, "run", run)


@pytest.mark.parametrize("signum, code", [(None, 130), (15, 143)], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_writes_the_finished_points_marked_incomplete(monkeypatch, tmp_path, signum, code):
    require_backend("jax")
    interrupt_at_point(monkeypatch, 3, signum)
    out = tmp_path / "sweep.json"
    result = run("sweep", "--backends", "jax", "--variants", "einsum", "--seq", "8,16,32,64",
                                       "--format", "json", "-o", str(out), *TINY, "--no-timing")
    assert result.exit_code == code, result.output
    data = json.loads(out.read_text())
    jsonschema.validate(data, SWEEP_SCHEMA)
    name = "SIGINT" if signum is None else "SIGTERM"
    assert (data["complete"], data["planned_points"], data["stopped_by"], data["exit_code"], data["ok"]) == \
        (False, 4, name, code, False)
    assert [point["values"]["seq"] for point in data["points"]] == [8, 16]
    assert "writing the 2 of 4 points that finished" in result.stderr


def test_an_interrupted_table_says_so(monkeypatch):
    require_backend("jax")
    interrupt_at_point(monkeypatch, 2)
    result = run("sweep", "--backends", "jax", "--variants", "einsum", "--seq", "8,16,32",
                                       *TINY, "--no-timing")
    assert result.exit_code == 130
    assert "INCOMPLETE (stopped by SIGINT after 1 of 3 points)" in result.stdout
    assert "verdict: incomplete, stopped by SIGINT after 1 of 3 points: all 1 rows" in " ".join(result.stdout.split())


def test_an_interrupt_before_any_point_finished_writes_nothing(monkeypatch, tmp_path):
    require_backend("jax")
    interrupt_at_point(monkeypatch, 1)
    out = tmp_path / "sweep.json"
    result = run("sweep", "--backends", "jax", "--variants", "einsum", "--seq", "8,16",
                                       "-o", str(out), *TINY, "--no-timing")
    assert result.exit_code == 130 and "interrupted by SIGINT" in result.stderr
    assert not out.exists()


def test_the_library_sweep_raises_a_keyboard_interrupt_carrying_the_finished_points(monkeypatch):
    require_backend("jax")
    from xattn.comparison.sweeper import SweepInterrupted

    interrupt_at_point(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt) as caught:
        xattn.sweep("jax", "einsum", SMALL, {"seq": [8, 16, 32]}, timing=False)
    assert isinstance(caught.value, SweepInterrupted)
    report = caught.value.report
    assert report.points == ((8,),) and report.planned == 3 and not report.complete and report.exit_code == 130


def test_sigterm_to_the_console_script_writes_the_finished_points_and_exits_143(tmp_path):
    require_backend("jax")
    import signal
    import time

    out = tmp_path / "sweep.json"
    # Each point is timed for 3 s: SIGTERM lands while point 2 runs, after point 1 finished.
    command = [sys.executable, "-m", "xattn", "sweep", "--backends", "jax", "--variants", "einsum", "--seq", "8,16,32",
               "--batch", "1", "--embed", "16", "--min-time", "3", "--max-time", "3", "--format", "json",
               "-o", str(out)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            lines.append(line)
            if "point 2/3" in line or not line:
                break
        assert "point 2/3" in lines[-1], "".join(lines)
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 143, "".join(lines) + rest
    data = json.loads(out.read_text())
    assert data["complete"] is False and data["stopped_by"] == "SIGTERM" and data["exit_code"] == 143
    assert [point["values"]["seq"] for point in data["points"]] == [8]
    assert "Traceback" not in rest
