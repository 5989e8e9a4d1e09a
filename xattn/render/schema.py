"""The JSON Schemas (draft 2020-12) of ``xattn compare``/``sweep``/``check --format json``.

compare's and sweep's are documented in docs/comparator.md and docs/sweep.md, check's (a
:class:`xattn.porting.check.DriftReport`) in docs/porting.md.

Stable within a ``schema`` id: fields may be added, none renamed or removed. Every key listed in
``required`` is always present; metrics that do not apply (an errored row, no timing) are ``null``.
Non-finite floats are written as ``null`` so the output is strict JSON.
"""

from xattn.numerics.judge import VERDICTS

SCHEMA_ID = "xattn.compare/1"

_number = {"type": ["number", "null"]}
_integer = {"type": ["integer", "null"]}
_string = {"type": ["string", "null"]}

RESULT_SCHEMA = {
    "type": "object",
    "required": [
        "backend", "variant", "quantity", "dtype", "device", "verdict", "error", "error_type",
        "max_abs_err", "mean_abs_err", "rel_l2_err", "max_ulp", "dissimilarity", "nonfinite_mismatches",
        "uncompared", "ulp_at_scale", "budget_use",
        "budget", "budget_method", "naive_max_abs_err", "rounding_step", "naive_runs",
        "median_s", "iqr_s", "min_s", "n", "number", "noisy", "page_faults_per_call", "compile_s", "eager",
        "first_call_s", "gflops", "notes",
    ],
    "properties": {
        "backend": {"type": "string"},
        "variant": {"type": "string"},
        "quantity": {"type": "string", "pattern": "^(out|grad/.+)$"},
        "dtype": {"enum": ["float32", "float16", "bfloat16", "float64"]},
        "device": {"type": "string"},
        "verdict": {"enum": [str(verdict) for verdict in VERDICTS]},
        "error": _string,
        "error_type": _string,
        "max_abs_err": _number,
        "mean_abs_err": _number,
        "rel_l2_err": _number,
        "max_ulp": _number,
        "dissimilarity": _number,
        "nonfinite_mismatches": _integer,
        "uncompared": _integer,
        "ulp_at_scale": _number,
        "budget_use": _number,
        "budget": _number,
        "budget_method": {"enum": ["naive", "tolerance", "exact", None]},
        "naive_max_abs_err": _number,
        "rounding_step": _number,
        "naive_runs": _integer,
        "median_s": _number,
        "iqr_s": _number,
        "min_s": _number,
        "n": _integer,
        "number": _integer,
        "noisy": {"type": ["boolean", "null"]},
        "page_faults_per_call": _number,
        "compile_s": _number,
        "eager": {"type": "boolean"},
        "first_call_s": _number,
        "gflops": _number,
        "notes": {"type": "array", "items": {"type": "string"}},
    },
}

PAIR_SCHEMA = {
    "type": "object",
    "required": ["a", "b", "quantity", "max_abs_diff", "rel_l2_diff", "a_max_abs_err", "b_max_abs_err", "budget",
                 "over_budget", "attribution"],
    "properties": {
        "a": {"type": "string"},
        "b": {"type": "string"},
        "quantity": {"type": "string"},
        "max_abs_diff": _number,
        "rel_l2_diff": _number,
        "a_max_abs_err": _number,
        "b_max_abs_err": _number,
        "budget": _number,
        "over_budget": {"type": "array", "items": {"type": "string"}},
        "attribution": {"type": "string"},
    },
}

SPEC_SCHEMA = {
    "type": "object",
    "required": ["batch", "q_len", "kv_len", "embed", "heads", "kv_heads", "head_dim", "causal", "key_lengths",
                 "scale", "dtype", "seed"],
    "properties": {
        **{name: {"type": "integer", "minimum": 1}
           for name in ("batch", "q_len", "kv_len", "embed", "heads", "kv_heads", "head_dim")},
        "causal": {"type": "boolean"},
        "key_lengths": {"type": ["array", "null"], "items": {"type": "integer", "minimum": 1}},
        "scale": _number,
        "dtype": {"enum": ["float32", "float16", "bfloat16", "float64"]},
        "seed": {"type": "integer", "minimum": 0},
    },
}

#: How busy the machine was (:meth:`xattn.timing.MachineLoad.as_dict`): at ``env`` time, and while timing.
LOAD_SCHEMA = {
    "type": "object",
    "required": ["cores", "seconds", "others_cores", "steal", "load_1m", "busy"],
    "properties": {
        "cores": {"type": "integer", "minimum": 1},
        "seconds": {"type": "number", "minimum": 0},
        "others_cores": _number,
        "steal": _number,
        "load_1m": _number,
        "load_1m_per_core": _number,
        "busy": {"type": "boolean"},
        "warnings": {"type": "array", "items": {"type": "string"}},
    },
}

ENV_SCHEMA = {
    "type": "object",
    "required": ["xattn", "python", "platform", "versions", "cpu", "load", "devices", "threads", "numerics"],
    "properties": {
        "load": LOAD_SCHEMA,
        "versions": {"type": "object", "additionalProperties": _string},
        "threads": {"type": "object", "additionalProperties": {"type": "integer"}},
        "numerics": {"type": "object"},
        "devices": {"type": "object"},
    },
}

REPORT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "xattn compare report",
    "type": "object",
    "required": ["schema", "xattn_version", "ok", "exit_code", "env", "spec", "settings", "results", "pairs"],
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "xattn_version": {"type": "string"},
        "ok": {"type": "boolean"},
        "exit_code": {"enum": [0, 1]},
        "env": ENV_SCHEMA,
        "spec": SPEC_SCHEMA,
        "settings": {
            "type": "object",
            "required": ["backends", "variants", "device", "matmul_precision", "min_time_s", "max_time_s", "threads",
                         "machine", "threads_note"],
            "properties": {"machine": {"oneOf": [{"type": "null"}, LOAD_SCHEMA]}, "threads_note": _string},
        },
        "results": {"type": "array", "items": RESULT_SCHEMA},
        "pairs": {"type": "array", "items": PAIR_SCHEMA},
    },
}

SWEEP_SCHEMA_ID = "xattn.sweep/1"

#: ``xattn sweep --format json``: the swept fields and one complete compare report per point.
SWEEP_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SWEEP_SCHEMA_ID,
    "title": "xattn sweep report",
    "type": "object",
    "required": ["schema", "xattn_version", "ok", "exit_code", "complete", "planned_points", "stopped_by", "fields",
                 "values", "spec", "points"],
    "properties": {
        "schema": {"const": SWEEP_SCHEMA_ID},
        "xattn_version": {"type": "string"},
        "ok": {"type": "boolean"},
        "exit_code": {"enum": [0, 1, 130, 143]},
        "complete": {"type": "boolean"},
        "planned_points": {"type": "integer", "minimum": 1},
        "stopped_by": {"enum": [None, "SIGINT", "SIGTERM"]},
        "fields": {"type": "array", "minItems": 1, "items": {"type": "string"}},
        "values": {"type": "object", "additionalProperties": {"type": "array", "minItems": 1}},
        "spec": SPEC_SCHEMA,
        "points": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["values", "report"],
                "properties": {"values": {"type": "object"}, "report": REPORT_SCHEMA},
            },
        },
    },
}

CHECK_SCHEMA_ID = "xattn.check/1"

#: One line of a drift report: one function's drift on one output (or gradient) against its budget.
CHECK_SIDE_SCHEMA = {
    "type": "object",
    "required": ["function", "output", "verdict", "max_abs_err", "rel_l2_err", "ulp_at_scale",
                 "nonfinite_mismatches", "uncompared", "budget", "budget_method", "budget_use", "notes"],
    "properties": {
        "function": {"type": "string"},
        "output": {"type": "string", "pattern": "^(out|grad/).*$"},
        "verdict": {"enum": [str(verdict) for verdict in VERDICTS]},
        "max_abs_err": _number,
        "rel_l2_err": _number,
        "ulp_at_scale": _number,
        "nonfinite_mismatches": {"type": "integer"},
        "uncompared": {"type": "integer"},
        "budget": _number,
        "budget_method": {"type": "string"},
        "budget_use": _number,
        "notes": {"type": "array", "items": {"type": "string"}},
    },
}

#: ``xattn check --format json``: a :class:`xattn.porting.check.DriftReport`.
CHECK_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": CHECK_SCHEMA_ID,
    "title": "xattn check report",
    "type": "object",
    "required": ["schema", "xattn_version", "ok", "exit_code", "names", "frameworks", "kinds", "dtype", "dtype_reason",
                 "basis", "sides", "pairs", "notes"],
    "properties": {
        "schema": {"const": CHECK_SCHEMA_ID},
        "xattn_version": {"type": "string"},
        "ok": {"type": "boolean"},
        "exit_code": {"enum": [0, 1]},
        "names": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "string"}},
        "frameworks": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "string"}},
        "kinds": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "string"}},
        "dtype": {"type": "string"},
        "dtype_reason": {"type": "string"},
        "basis": {"type": "string"},
        "sides": {"type": "array", "items": CHECK_SIDE_SCHEMA},
        "pairs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["output", "max_abs_diff", "rel_l2_diff", "attribution"],
                "properties": {"output": {"type": "string"}, "max_abs_diff": _number, "rel_l2_diff": _number,
                               "attribution": {"type": "string"}},
            },
        },
        "notes": {"type": "array", "items": {"type": "string"}},
    },
}
