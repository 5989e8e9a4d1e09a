"""xattn.compare: rows, verdicts, budgets, pairs, numerics settings, the JSON schema."""

import itertools
import json
import subprocess
import sys
import textwrap

import jsonschema
import pytest

import xattn
import xattn.backends.registry
import xattn.timing
from xattn import _compat
from xattn.contract.spec import AttentionSpec
from xattn.numerics.judge import DRIFT, ERROR, OK, UNSUPPORTED
from xattn.render.schema import REPORT_SCHEMA

from conftest import require_backend

SMALL = AttentionSpec(batch=2, q_len=16, embed=32, heads=4)


def both():
    require_backend("jax")
    require_backend("torch")


def test_every_variant_of_one_backend_is_a_row(backend):
    report = xattn.compare(backends=[backend], spec=SMALL, timing=False)
    assert [row.variant for row in report.results] == list(xattn.variants(backend))
    for row in report.results:
        assert row.verdict == OK, (row.label, row.error)
        assert row.budget.method == "naive" and row.drift.max_abs_err <= row.budget.max_abs
        assert row.quantity == "out" and row.dtype == "float32" and row.device == "cpu"
        assert row.first_call_s is not None and row.timing is None
        # torch's eager variants compile nothing: no compile time, "eager" in the table
        eager = backend == "torch" and row.variant != "compiled"
        assert row.eager is eager and (row.compile_s is None) is eager
    assert report.pairs == () and report.ok and report.exit_code == 0


def test_two_backends_pair_the_same_variant():
    both()
    report = xattn.compare(backends="jax,torch", variants="einsum,sdpa", spec=SMALL, timing=False)
    assert [row.label for row in report.results] == ["jax/einsum", "jax/sdpa", "torch/einsum", "torch/sdpa"]
    assert [(p.a, p.b) for p in report.pairs] == [("jax/einsum", "torch/einsum"), ("jax/sdpa", "torch/sdpa")]
    for pair in report.pairs:
        assert pair.attribution == "rounding noise" and pair.over_budget == ()
        assert pair.max_abs_diff <= pair.a_max_abs_err + pair.b_max_abs_err


def test_timing_fields_and_gflops():
    require_backend("jax")
    report = xattn.compare(backends="jax", variants="einsum,packed", spec=SMALL, min_time=0.0, max_time=0.01,
                           warmup=0.0)
    for row in report.results:
        assert row.timing.n >= 3 and row.timing.median_s > 0
        assert row.gflops == pytest.approx(xattn.timing.attention_flops(SMALL) / row.timing.median_s / 1e9)
        assert row.compile_s > 0


def test_a_busy_machine_is_measured_while_timing_and_said(monkeypatch):
    require_backend("jax")
    busy = xattn.timing.MachineLoad(cores=2, seconds=1.0, others_cores=1.6, steal=0.0, load_1m=5.0)
    monkeypatch.setattr(xattn.timing, "machine_load", lambda since=None, sample_s=0.2: busy)
    report = xattn.compare(backends="jax", variants="einsum", spec=SMALL, min_time=0.0, max_time=0.01, warmup=0.0)
    assert report.settings.machine["busy"] and report.settings.machine["others_cores"] == 1.6
    assert "! machine busy: other processes used 1.6 of 2 cores" in str(report)
    data = json.loads(report.to_json())
    jsonschema.validate(data, REPORT_SCHEMA)
    assert data["settings"]["machine"]["warnings"] == list(busy.warnings)
    assert data["env"]["load"]["cores"] >= 1 and isinstance(data["env"]["load"]["busy"], bool)  # measured
    untimed = xattn.compare(backends="jax", variants="einsum", spec=SMALL, timing=False)
    assert untimed.settings.machine is None and "machine busy" not in str(untimed)


def test_page_faults_are_counted_and_said_where_a_call_maps_fresh_memory(monkeypatch):
    """Every call counted at 3000 faults (a fake getrusage): the JSON carries it and the report says it once."""
    require_backend("jax")
    counter = itertools.count(step=3000)
    monkeypatch.setattr(xattn.timing, "minor_faults", lambda: next(counter))
    report = xattn.compare(backends="jax", variants="einsum", spec=SMALL, min_time=0.0, max_time=0.01, warmup=0.0)
    row = report.results[0]
    assert row.timing.faults_per_call == pytest.approx(3000 / row.timing.number)
    text = str(report)
    assert text.count("! page faults a call: jax/einsum") == 1 and "MALLOC_MMAP_THRESHOLD_" in text
    data = json.loads(report.to_json())
    jsonschema.validate(data, REPORT_SCHEMA)
    assert data["results"][0]["page_faults_per_call"] == pytest.approx(row.timing.faults_per_call)
    monkeypatch.setattr(xattn.timing, "minor_faults", lambda: 0)
    quiet = xattn.compare(backends="jax", variants="einsum", spec=SMALL, min_time=0.0, max_time=0.01, warmup=0.0)
    assert "page faults" not in str(quiet) and quiet.results[0].timing.faults_per_call == 0


class _Wrong:
    """A variant that scales the right answer, or plants a NaN: a port bug the comparator must catch."""

    def __init__(self, fn, mode):
        self.fn, self.mode = fn, mode

    def compile(self, *args):
        return self

    def __call__(self, *args):
        out = self.fn(*args)
        if self.mode == "nan":
            return out.at[0, 0, 0].set(float("nan"))
        return out * 1.001


@pytest.mark.parametrize("mode", ["scale", "nan"])
def test_a_wrong_variant_is_drift_and_its_pair_names_it(monkeypatch, mode):
    both()
    real = xattn.backends.registry.build

    def build(backend, variant, **options):
        fn = real(backend, variant, **options)
        return _Wrong(fn, mode) if (backend, variant) == ("jax", "packed") else fn

    monkeypatch.setattr(xattn.backends.registry, "build", build)
    report = xattn.compare(backends="jax,torch", variants="einsum,packed", spec=SMALL, timing=False)
    verdicts = {row.label: row.verdict for row in report.results}
    assert verdicts == {"jax/einsum": OK, "jax/packed": DRIFT, "torch/einsum": OK, "torch/packed": OK}
    pair = next(p for p in report.pairs if p.a == "jax/packed")
    assert pair.over_budget == ("jax/packed",) and pair.attribution == "jax/packed over budget"
    if mode == "nan":
        assert report.row("jax", "packed").drift.nonfinite_mismatches == 1
    assert report.exit_code == 1


def test_an_unsupported_variant_is_a_refusal_row_with_its_message():
    both()
    if _compat.jax_sdpa_runs_float16_on_cpu():
        pytest.skip("this JAX runs float16 sdpa on CPU (0.4.38 does): nothing to refuse")
    report = xattn.compare(backends="jax,torch", variants="sdpa,einsum", spec=SMALL.replace(dtype="float16"),
                           timing=False)
    row = report.row("jax", "sdpa")
    assert row.verdict == UNSUPPORTED and row.error_type == "VariantUnsupportedError"
    assert "float16" in row.error and row.drift is None
    assert report.row("torch", "sdpa").verdict == OK and report.row("jax", "einsum").verdict == OK
    pair = next(p for p in report.pairs if p.a == "jax/sdpa")
    assert pair.attribution == "n/a: jax/sdpa unsupported" and pair.max_abs_diff is None
    # an honest refusal does not fail the run; the table says what was refused and why
    assert report.exit_code == 0
    assert "VariantUnsupportedError" in str(report) and "1 unsupported here (not a failure): jax/sdpa" in str(report)


def test_any_other_exception_is_an_error_row_that_fails_the_run(monkeypatch):
    require_backend("jax")
    real = xattn.backends.registry.build

    def broken(backend, variant, **options):
        if variant == "packed":
            raise RuntimeError("kernel exploded")
        return real(backend, variant, **options)

    monkeypatch.setattr(xattn.backends.registry, "build", broken)
    report = xattn.compare(backends="jax", variants="einsum,packed", spec=SMALL, timing=False)
    row = report.row("jax", "packed")
    assert row.verdict == ERROR and row.error == "kernel exploded" and row.error_type == "RuntimeError"
    assert report.exit_code == 1 and "not ok: jax/packed" in str(report)


def test_float64_runs_jax_in_float64_and_restores_x64():
    jax = require_backend("jax").jax
    before = jax.config.jax_enable_x64
    report = xattn.compare(backends="jax", variants="einsum", spec=SMALL.replace(dtype="float64"), timing=False)
    row = report.results[0]
    assert row.verdict == OK and row.drift.max_abs_err < 1e-12  # float32 would be ~1e-7
    assert report.settings["jax_enable_x64_set_by_xattn"] is (not before)
    assert ("jax_enable_x64 was turned on by xattn" in str(report)) is (not before)
    assert report.env["numerics"]["jax"]["jax_enable_x64"] is True
    assert jax.config.jax_enable_x64 == before


def test_matmul_precision_applies_to_both_and_is_restored():
    both()
    import jax
    import torch

    before = (jax.config.jax_default_matmul_precision, torch.get_float32_matmul_precision())
    report = xattn.compare(backends="jax,torch", variants="einsum", spec=SMALL, timing=False, matmul_precision="high")
    assert report.env["numerics"]["jax"]["jax_default_matmul_precision"] == "high"
    assert report.env["numerics"]["torch"]["float32_matmul_precision"] == "high"
    assert (jax.config.jax_default_matmul_precision, torch.get_float32_matmul_precision()) == before
    assert report.settings["threads"]["jax"] == report.settings["threads"]["torch"]


@pytest.mark.parametrize("arguments, message", [
    ({"backends": "jax,mxnet"}, "backends: expected names from jax, torch; got mxnet"),
    ({"backends": "jax", "variants": "einsum,flash"}, "variants: expected names from einsum, packed"),
    ({"backends": "jax", "variants": "compiled"}, "got compiled"),
    ({"backends": "jax", "device": "tpu"}, "device: expected one of cpu, cuda, auto"),
    ({"backends": "jax", "matmul_precision": "low"}, "matmul_precision: expected one of highest, high, default"),
    ({"backends": "jax", "threads": 0}, "threads: expected an integer from 1 to 1024"),
])
def test_bad_arguments_are_value_errors_naming_the_valid_ones(arguments, message):
    require_backend("jax")
    with pytest.raises(ValueError, match=message):
        xattn.compare(spec=SMALL, timing=False, **arguments)


def test_compiled_runs_only_where_it_exists():
    both()
    from xattn.comparison.settings import resolve_variants

    assert resolve_variants(("jax", "torch"), "einsum,compiled") == (
        ("jax", "einsum"), ("torch", "einsum"), ("torch", "compiled"))


def test_the_default_runs_the_paired_variants_and_all_adds_the_rest():
    both()
    from xattn.comparison.settings import resolve_variants

    shared = ("einsum", "packed", "vmap", "sdpa", "blocked", "tiled")
    paired = resolve_variants(("jax", "torch"), None)
    assert paired == tuple((b, v) for b in ("jax", "torch") for v in shared)
    assert ("torch", "compiled") not in paired  # torch-only: no partner, and seconds of torch.compile
    assert ("jax", "threaded") not in paired  # JAX-only
    everything = resolve_variants(("jax", "torch"), "all")
    assert everything == paired[:6] + (("jax", "threaded"),) + paired[6:] + (("torch", "compiled"),)
    assert resolve_variants(("torch",), None) == resolve_variants(("torch",), "all")  # one backend: all of it
    assert ("torch", "compiled") in resolve_variants(("torch",), None)
    with pytest.raises(ValueError, match="expected all alone .*; got all with einsum. Drop one or the other"):
        resolve_variants(("jax", "torch"), "all,einsum")
    with pytest.raises(ValueError, match="expected names from .*; got flash"):
        resolve_variants(("jax", "torch"), "einsum,flash")


def test_missing_framework_names_the_extra():
    code = """
        import sys
        sys.modules["torch"] = None
        import xattn
        try:
            xattn.compare(backends="torch", timing=False)
        except ImportError as error:  # what code written for a missing framework catches
            print(type(error).__name__, error)
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("BackendUnavailableError ") and "pip install 'xattn[torch]'" in result.stdout


def test_json_follows_the_schema_and_the_table_fits_100_columns():
    both()
    report = xattn.compare(backends="jax,torch", variants="einsum,blocked", spec=SMALL.replace(causal=True),
                           min_time=0.0, max_time=0.005, warmup=0.0)
    data = json.loads(report.to_json())
    jsonschema.validate(data, REPORT_SCHEMA)
    assert [r["verdict"] for r in data["results"]] == ["ok"] * 4
    assert data["spec"]["causal"] is True and data["pairs"][0]["attribution"] == "rounding noise"
    table = str(report)
    assert all(len(line) <= 100 for line in table.splitlines()), table
    for header in ("max err", "budget", "err/bud", "ULP", "median", "IQR", "compile", "GFLOP/s"):
        assert header in table
    assert report.render("markdown").count("|") > 20
    csv_lines = report.render("csv").splitlines()
    assert csv_lines[0].startswith("backend,variant,quantity,dtype") and len(csv_lines) == 5


def test_the_schema_rejects_a_broken_report():
    require_backend("jax")
    data = xattn.compare(backends="jax", variants="einsum", spec=SMALL, timing=False).to_dict()
    jsonschema.validate(json.loads(json.dumps(data)), REPORT_SCHEMA)
    del data["results"][0]["max_ulp"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, REPORT_SCHEMA)
