"""Run the version matrix (tox label ``matrix``) one env at a time and write docs/compat.md from it.

    .venv/bin/python scripts/run_matrix.py                       # every env of the label, then the table
    .venv/bin/python scripts/run_matrix.py -e jax0.5,jax0.6      # only these envs (the table holds only them)
    .venv/bin/python scripts/run_matrix.py --pytest-args=-x      # stop each env at its first failure

Needs a Python with tox >= 4.11 (the dev .venv has it). Each env's result comes from a JUnit file
that pytest writes; the versions are read afterwards from the env's own interpreter, so the table
shows what pip resolved, not what tox.ini asked for. Envs run one after another: the machine is
shared, and timings from parallel runs would mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LABEL = "matrix"
CI_LABEL = "ci"
#: Distributions whose resolved versions the table shows, in column order.
PACKAGES = ("jax", "jaxlib", "flax", "torch", "numpy", "ml_dtypes")
VERSION_PROBE = (
    "import importlib.metadata as m, json, platform\n"
    "def v(name):\n"
    "    try:\n"
    "        return m.version(name)\n"
    "    except m.PackageNotFoundError:\n"
    "        return None\n"
    f"print(json.dumps({{'python': platform.python_version(), **{{n: v(n) for n in {PACKAGES!r}}}}}))\n"
)


@dataclass
class EnvResult:
    name: str
    description: str = ""
    exit_code: int | None = None
    seconds: float = 0.0
    versions: dict = field(default_factory=dict)
    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    failed_names: list = field(default_factory=list)
    ran_tests: bool = False

    @property
    def passed(self) -> int:
        return self.tests - self.failures - self.errors - self.skipped

    @property
    def verdict(self) -> str:
        if self.exit_code == 0 and self.ran_tests:
            return "pass"
        if not self.ran_tests:
            return "fail (no tests ran: install or set-up failed)"
        return "fail"


def tox(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tox", *args], cwd=ROOT, text=True, check=False, **kwargs)


def label_envs(label: str) -> dict[str, str]:
    """{env name: description} of the envs that carry ``label``, in tox.ini's order."""
    result = tox("config", "-m", label, "-k", "description", capture_output=True)
    if result.returncode != 0:
        sys.exit(f"tox config -m {label} failed:\n{result.stdout}{result.stderr}")
    envs, name = {}, None
    for line in result.stdout.splitlines():
        header = re.match(r"\[testenv:(.+)\]$", line.strip())
        if header:
            name = header.group(1)
        elif name and line.startswith("description = "):
            envs[name] = line.split("=", 1)[1].strip()
    if not envs:
        sys.exit(f"no envs carry the tox label {label!r}")
    return envs


def read_junit(path: Path, result: EnvResult) -> None:
    if not path.exists():
        return
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    for suite in suites:
        result.tests += int(suite.get("tests", 0))
        result.failures += int(suite.get("failures", 0))
        result.errors += int(suite.get("errors", 0))
        result.skipped += int(suite.get("skipped", 0))
        for case in suite.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                result.failed_names.append(f"{case.get('classname', '')}::{case.get('name', '')}")
    result.ran_tests = result.tests > 0


def env_versions(name: str) -> dict:
    python = ROOT / ".tox" / name / "bin" / "python"
    if not python.exists():
        return {}
    probe = subprocess.run([str(python), "-c", VERSION_PROBE], capture_output=True, text=True, check=False)
    return json.loads(probe.stdout) if probe.returncode == 0 else {}


def run_env(name: str, description: str, pytest_args: list[str], log_dir: Path) -> EnvResult:
    result = EnvResult(name, description)
    junit = log_dir / f"{name}.xml"
    log = log_dir / f"{name}.log"
    posargs = ["-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *pytest_args]
    print(f"== {name}: {description}", flush=True)
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        completed = tox("run", "-e", name, "--", *posargs, stdout=handle, stderr=subprocess.STDOUT)
    result.seconds = time.perf_counter() - start
    result.exit_code = completed.returncode
    read_junit(junit, result)
    result.versions = env_versions(name)
    print(f"   {result.verdict}: {result.passed} passed, {result.failures + result.errors} failed,"
          f" {result.skipped} skipped in {result.seconds:.0f} s (log: {log})", flush=True)
    return result


def machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "uname -m": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "nproc": str(os.cpu_count()),
        "cpu": cpu or "unknown",
        "tox": (tox("--version", capture_output=True).stdout.split() or ["?"])[0],
    }


def render(results: list[EnvResult], info: dict, ci_envs: list[str], pytest_args: list[str]) -> str:
    cell = lambda value: value or "—"  # noqa: E731 - a one-line formatter
    lines = [
        "# Compatibility matrix",
        "",
        "Which versions of JAX, Flax and PyTorch xattn's test suite passes on. Generated by",
        "`scripts/run_matrix.py` (which runs `tox run -e ENV` for each env of the tox label",
        f"`{LABEL}`, one at a time); rerun it to refresh this page. The versions are those pip resolved",
        "in each env, read back from the env itself. Every env but `nobackend` demands both frameworks",
        "(`XATTN_REQUIRE_BACKENDS=jax,torch`), so a framework that fails to import fails the run.",
        "",
        f"Run started {info['date']}; " + ", ".join(f"{key} {value}" for key, value in info.items() if key != "date")
        + (f"; pytest arguments added: `{' '.join(pytest_args)}`" if pytest_args else ""),
        "",
        "| env | python | " + " | ".join(PACKAGES) + " | result | passed | failed | skipped | time |",
        "|---|---|" + "---|" * len(PACKAGES) + "---|---:|---:|---:|---:|",
    ]
    for result in results:
        versions = result.versions
        row = [f"`{result.name}`" + (" (CI)" if result.name in ci_envs else ""), cell(versions.get("python"))]
        row += [cell(versions.get(name)) for name in PACKAGES]
        row += [f"**{result.verdict}**", str(result.passed), str(result.failures + result.errors),
                str(result.skipped), f"{result.seconds:.0f} s"]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "What each env is (`tox list` says the same):",
        "",
        *(f"- `{result.name}`: {result.description}" for result in results),
        "",
        f"CI (`.ci/run`, the README's test command `tox run -m {CI_LABEL}`) runs only"
        f" {', '.join(f'`{name}`' for name in ci_envs)} (marked CI above; the tox label `{CI_LABEL}` says which).",
        "The rest of the matrix runs only through this script, to keep CI short: each env adds a fresh",
        "install (1-4 minutes here) to its test run.",
        "",
        "Not tried: torch releases other than 2.13.0 (a CPU build) and 2.14.1 (a CUDA build, run on",
        "CPU). Both lie on this machine's disk; every other torch release on PyPI is a multi-GB CUDA",
        "build, so none is in the matrix, and setup.cfg declares only the torch range proven here.",
    ]
    failed = [result for result in results if result.failed_names]
    if failed:
        lines += ["", "## Failures", ""]
        for result in failed:
            lines.append(f"- `{result.name}`:")
            lines += [f"  - `{name}`" for name in result.failed_names[:30]]
            if len(result.failed_names) > 30:
                lines.append(f"  - ... and {len(result.failed_names) - 30} more")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-e", "--envs", help="comma-separated envs (default: every env of the tox label 'matrix')")
    parser.add_argument("--pytest-args", default="", help="extra pytest arguments for every env, e.g. -x")
    parser.add_argument("--output", default=str(ROOT / "docs" / "compat.md"), help="the Markdown page to write")
    parser.add_argument("--logs", default=None, help="folder for each env's log and JUnit file (default: a temp dir)")
    args = parser.parse_args(argv)

    envs = label_envs(LABEL)
    if args.envs:
        wanted = [name.strip() for name in args.envs.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in envs]
        if unknown:
            parser.error(f"--envs: expected envs of the tox label {LABEL!r} ({', '.join(envs)}); got {unknown}")
        envs = {name: envs[name] for name in wanted}
    ci_envs = list(label_envs(CI_LABEL))
    log_dir = Path(args.logs or tempfile.mkdtemp(prefix="xattn-matrix-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    pytest_args = args.pytest_args.split()

    info = machine()
    results = [run_env(name, description, pytest_args, log_dir) for name, description in envs.items()]
    info["python"] = ", ".join(sorted({r.versions["python"] for r in results if r.versions.get("python")})) or "?"
    page = render(results, info, ci_envs, pytest_args)
    Path(args.output).write_text(page, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0 if all(result.verdict == "pass" for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
