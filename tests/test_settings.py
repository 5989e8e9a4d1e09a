"""RunSettings and Plan: one validation of a run's options for the CLI, xattn.compare and xattn.sweep."""

import json
import math

import pytest
from click.testing import CliRunner

import xattn
from xattn.cli import main
from xattn.comparison.results import RunRecord
from xattn.comparison.settings import RunSettings, make_plan
from xattn.contract.spec import AttentionSpec

from conftest import require_backend

TINY = AttentionSpec(batch=1, q_len=4, embed=8, heads=2)


@pytest.mark.parametrize("options, message", [
    ({"device": "tpu"}, "device: expected one of cpu, cuda, auto; got 'tpu'"),
    ({"matmul_precision": "low"}, "matmul_precision: expected one of highest, high, default"),
    ({"min_time": math.nan}, "min_time: expected a finite non-negative number of seconds; got nan"),
    ({"max_time": math.inf}, "max_time: expected a finite non-negative number of seconds; got inf"),
    ({"warmup": -1.0}, "warmup: expected a finite non-negative number of seconds"),
    ({"min_time": 2.0, "max_time": 1.0}, "max_time: expected at least min_time=2.0; got 1.0"),
    ({"threads": 0}, "threads: expected an integer from 1 to 1024; got 0"),
    ({"threads": 10**6}, "threads: expected an integer from 1 to 1024; got 1000000"),
    ({"threads": True}, "threads: expected an integer from 1 to 1024; got True"),
    ({"max_memory": math.nan}, "max_memory: expected a positive size such as 8GiB"),
    ({"max_memory": math.inf}, "max_memory: expected a positive size"),
    ({"max_memory": 0}, "max_memory: expected a positive size"),
    ({"max_memory": "12 parsecs"}, "max_memory: expected a positive size"),
    ({"max_memory": "0%"}, "max_memory: expected a share in (0%, 100%]; got '0%'"),
    ({"max_memory": "150%"}, "max_memory: expected a share in (0%, 100%]"),
    ({"max_memory": "nan%"}, "max_memory: expected a share in (0%, 100%]"),
    ({"timing": "no"}, "timing: expected True or False; got 'no'"),
])
def test_every_option_is_checked_when_the_settings_are_made(options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RunSettings(**options)


def test_compare_and_sweep_take_the_settings_or_their_fields_and_refuse_unknown_keywords():
    base = RunSettings(max_time=0.5)
    assert RunSettings.of(base, {}, "compare") is base
    assert RunSettings.of(base, {"timing": False}, "compare") == RunSettings(max_time=0.5, timing=False)
    with pytest.raises(TypeError, match="compare: expected keyword arguments among device, .*; got devcie"):
        xattn.compare(spec=TINY, devcie="cpu")
    with pytest.raises(TypeError, match="sweep: expected keyword arguments among"):
        xattn.sweep(spec=TINY, sweep={"seq": [4, 8]}, max_tim=1)
    with pytest.raises(TypeError, match="settings: expected an xattn RunSettings; got dict"):
        xattn.compare(spec=TINY, settings={"timing": False})


def test_a_bad_option_is_refused_before_any_backend_is_resolved(monkeypatch):
    def no_resolution(*args, **kwargs):
        raise AssertionError("resolved backends for a run whose options are invalid")

    from xattn.comparison import comparator, sweeper

    monkeypatch.setattr(comparator, "make_plan", no_resolution)
    monkeypatch.setattr(sweeper, "make_plan", no_resolution)
    with pytest.raises(ValueError, match="max_time"):
        xattn.compare(spec=TINY, max_time=math.nan)
    with pytest.raises(ValueError, match="max_time"):
        xattn.sweep(spec=TINY, sweep={"seq": [4, 8]}, max_time=math.nan)


def test_a_sweep_resolves_its_plan_once_for_every_point(monkeypatch):
    require_backend("jax")
    from xattn.comparison import sweeper

    calls = []
    real = sweeper.make_plan
    monkeypatch.setattr(sweeper, "make_plan", lambda *args: calls.append(args) or real(*args))
    result = xattn.sweep("jax", "einsum", TINY, {"seq": [4, 8, 16]}, timing=False)
    assert len(result.reports) == 3 and len(calls) == 1


def test_the_plan_names_backends_runs_and_the_resolved_device():
    require_backend("jax")
    plan = make_plan("jax", "einsum,packed", "auto")
    assert plan.backends == ("jax",) and plan.runs == (("jax", "einsum"), ("jax", "packed"))
    assert plan.variants == ("einsum", "packed") and plan.device in ("cpu", "cuda")


def test_the_report_records_its_settings_as_attributes_and_as_the_json_mapping():
    require_backend("jax")
    report = xattn.compare("jax", "einsum", TINY, timing=False, matmul_precision="high")
    record = report.settings
    assert isinstance(record, RunRecord)
    assert (record.device, record.matmul_precision, record.timing, record.grad) == ("cpu", "high", False, False)
    assert record.backends == ("jax",) and record.variants == ("einsum",)
    assert record["threads"] == dict(record.threads) and record.get("device") == "cpu"
    assert json.loads(report.to_json())["settings"] == record.to_dict() == dict(record)
    with pytest.raises(AttributeError):
        record.device = "cuda"  # frozen


@pytest.mark.parametrize("flags, hint, message", [
    (["--max-time", "nan"], "--max-time", "expected a finite non-negative number of seconds; got nan"),
    (["--min-time", "inf"], "--min-time", "expected a finite non-negative number of seconds; got inf"),
    (["--min-time", "2", "--max-time", "1"], "--max-time", "expected at least --min-time=2.0; got 1.0"),
])
def test_the_cli_applies_the_same_rule_and_speaks_of_its_flags(flags, hint, message):
    require_backend("jax")
    result = CliRunner().invoke(main, ["compare", "--backends", "jax", "--q-len", "4", *flags])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"Invalid value for {hint}" in text and message in text


def _load(others):
    from xattn.timing import MachineLoad

    return MachineLoad(cores=2, seconds=0.2, others_cores=others, steal=0.0, load_1m=3.0)


def test_a_busy_machine_gets_one_thread_for_every_framework_where_that_can_still_be_set():
    from xattn.comparison.settings import threads_for_load

    quiet, busy = RunSettings(), RunSettings()
    assert threads_for_load(quiet, _load(0.1), jax_started=False) == quiet
    chosen = threads_for_load(busy, _load(1.4), jax_started=False)
    assert chosen.threads == 1 and "other processes used 1.4 of 2 cores" in chosen.threads_note
    assert threads_for_load(busy, _load(1.4), jax_started=True) == busy  # XLA's count is already fixed
    assert threads_for_load(RunSettings(threads=2), _load(1.4), jax_started=False).threads == 2  # asked for
    assert threads_for_load(RunSettings(timing=False), _load(1.4), jax_started=False).threads is None
