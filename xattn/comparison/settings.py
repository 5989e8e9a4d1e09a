"""How a comparison runs, validated once: :class:`RunSettings`, and the resolved :class:`Plan`.

The CLI, :func:`xattn.compare` and :func:`xattn.sweep` all take their run options through
:class:`RunSettings` (a bad value is a ValueError naming the field, raised before anything runs),
and resolve backend and variant names into a :class:`Plan` once: a sweep resolves its plan once
and runs it at every point.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

from xattn.backends.frameworks import DEVICES, MATMUL_PRECISIONS, side
from xattn.comparison.memory import parse_limit
from xattn.timing import DEFAULT_MAX_TIME, DEFAULT_MIN_TIME, DEFAULT_WARMUP, check_times

#: ``variants=ALL`` runs every variant of every backend, the one-backend ones (JAX's ``threaded``, torch's
#: ``compiled``) included.
ALL = "all"
#: The most intra-op threads a run may ask for.
MAX_THREADS = 1024


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """The options of a comparison run, the same at every point of a sweep.

    ``device``: cpu, cuda or auto (cuda when every selected framework sees one). ``matmul_precision``:
    highest, high or default (leave both frameworks as they are), applied to both frameworks for the
    run and restored after. ``min_time``/``max_time``/``warmup``: measured seconds per variant (see
    :mod:`xattn.timing`); ``timing=False`` skips the timed loop. ``threads``: intra-op threads for
    every framework (default: torch gets XLA's count; XLA's can only be set, to 1, before JAX is
    first imported). ``grad``: also compare gradients (:mod:`xattn.comparison.gradients`).
    ``max_memory``: the limit the estimated peak must fit in, checked before anything runs
    (:mod:`xattn.comparison.memory`): bytes, a size such as ``"8GiB"``, a share such as ``"50%"`` of
    the memory available, or None for the default share.
    """

    device: str = "cpu"
    matmul_precision: str = "highest"
    min_time: float = DEFAULT_MIN_TIME
    max_time: float = DEFAULT_MAX_TIME
    warmup: float = DEFAULT_WARMUP
    timing: bool = True
    threads: int | None = None
    grad: bool = False
    max_memory: int | float | str | None = None
    #: Why xattn chose ``threads`` itself (:func:`threads_for_load`); None when it did not.
    threads_note: str | None = None

    def __post_init__(self):
        if self.device not in DEVICES:
            raise ValueError(f"device: expected one of {', '.join(DEVICES)}; got {self.device!r}")
        if self.matmul_precision not in MATMUL_PRECISIONS:
            raise ValueError(
                f"matmul_precision: expected one of {', '.join(MATMUL_PRECISIONS)}; got {self.matmul_precision!r}"
            )
        check_times(self.min_time, self.max_time, self.warmup)
        threads = self.threads
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or not 1 <= threads <= MAX_THREADS):
            raise ValueError(f"threads: expected an integer from 1 to {MAX_THREADS}; got {threads!r}")
        parse_limit(self.max_memory)
        for name in ("timing", "grad"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected True or False; got {getattr(self, name)!r}")

    @classmethod
    def of(cls, settings: RunSettings | None, options: dict, caller: str) -> RunSettings:
        """``settings`` with ``options`` (keyword arguments of ``caller``) applied: one RunSettings, validated."""
        fields = [field.name for field in dataclasses.fields(cls)]
        unknown = [name for name in options if name not in fields]
        if unknown:
            raise TypeError(f"{caller}: expected keyword arguments among {', '.join(fields)} (RunSettings' fields);"
                            f" got {', '.join(unknown)}")
        if settings is None:
            return cls(**options)
        if not isinstance(settings, cls):
            raise TypeError(f"settings: expected an xattn RunSettings; got {type(settings).__name__}")
        return dataclasses.replace(settings, **options) if options else settings


def threads_for_load(settings: RunSettings, load, *, jax_started: bool) -> RunSettings:
    """One intra-op thread for every framework when ``load`` (:class:`xattn.timing.MachineLoad`) is busy.

    On a machine whose other processes hold cores, a pool of N threads waits at every barrier for
    the one that was descheduled: torch's spin-waiting pool then runs several times slower, XLA's
    less so, and the report would show the contention as a framework gap. One thread each keeps
    the comparison fair. Only where nothing was asked for (``threads`` None, timing on), there are
    cores to give up, and XLA's count can still be set (``jax_started`` False: it is read once, when
    JAX starts); ``threads_note`` says why. ``xattn compare`` and ``xattn sweep`` apply it; the
    library leaves threads alone and warns instead (the report's ``machine`` warnings).
    """
    if settings.threads is not None or not settings.timing or jax_started or load.cores <= 1 or not load.busy:
        return settings
    note = (f"1 instead of {load.cores} for every framework: the machine was busy before the run"
            f" ({load.describe()}), and a thread pool waiting for a descheduled peer would time the contention;"
            " pass threads to choose")
    return dataclasses.replace(settings, threads=1, threads_note=note)


def settle_threads(settings: RunSettings, *, for_load: bool = False) -> RunSettings:
    """The run's threads, settled before anything imports JAX: XLA is asked for ``threads`` when given.

    ``for_load``: first apply :func:`threads_for_load` to the machine's load now (a 0.2 s sample).
    """
    import sys

    from xattn.backends.frameworks import request_xla_threads
    from xattn.timing import machine_load

    if for_load and settings.threads is None and settings.timing and "jax" not in sys.modules:
        settings = threads_for_load(settings, machine_load(), jax_started=False)
    if settings.threads is not None:
        request_xla_threads(settings.threads)  # before anything imports JAX
    return settings


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one comparison runs: the backends, each (backend, variant), and the device resolved."""

    backends: tuple[str, ...]
    runs: tuple[tuple[str, str], ...]
    device: str

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(variant for _, variant in self.runs))


def make_plan(backends, variants, device: str) -> Plan:
    """Resolve names into a :class:`Plan`; ValueError (or BackendUnavailableError) naming what is wrong."""
    names = resolve_backends(backends)
    return Plan(names, resolve_variants(names, variants), resolve_device(device, names))


def resolve_backends(backends: Iterable[str] | str | None) -> tuple[str, ...]:
    """Backend names, validated and importable; ``None`` means every backend installed here."""
    from xattn.backends.registry import available_backends, backend_names, get_backend
    from xattn.errors import BackendUnavailableError

    if backends is None:
        names = available_backends()
        if not names:
            raise BackendUnavailableError(
                f"compare: expected at least one installed backend of {', '.join(backend_names())}; got none."
                " Install one with: pip install 'xattn[jax]' or pip install 'xattn[torch]'"
            )
        return names
    names = split_names(backends)
    if not names:
        raise ValueError(f"backends: expected one or more of {', '.join(backend_names())}; got none")
    unknown = [name for name in names if name not in backend_names()]
    if unknown:
        raise ValueError(f"backends: expected names from {', '.join(backend_names())}; got {', '.join(unknown)}")
    for name in names:
        get_backend(name)  # BackendUnavailableError names the extra to install
    return names


def resolve_variants(backends: tuple[str, ...], variants: Iterable[str] | str | None) -> tuple[tuple[str, str], ...]:
    """(backend, variant) pairs to run.

    ``None``: the variants every selected backend implements, so each row has a partner in the
    other framework (with one backend, all of its variants). ``"all"``: every variant of every
    backend. Named variants: a variant only some backends implement (torch's ``compiled``) runs
    where it exists; a name no selected backend implements is a ValueError listing the valid ones.
    """
    from xattn.backends.registry import variants as variants_of

    available = {backend: variants_of(backend) for backend in backends}
    if variants is None:
        shared = [v for v in available[backends[0]] if all(v in names for names in available.values())]
        return tuple((b, v) for b in backends for v in shared)
    wanted = split_names(variants)
    if wanted == (ALL,):
        return tuple((b, v) for b in backends for v in available[b])
    if ALL in wanted:
        others = ", ".join(v for v in wanted if v != ALL)
        raise ValueError(f"variants: expected {ALL} alone (it runs every variant) or names without it; got {ALL}"
                         f" with {others}. Drop one or the other.")
    valid = list(dict.fromkeys(v for names in available.values() for v in names))
    unknown = [v for v in wanted if v not in valid]
    if unknown or not wanted:
        raise ValueError(
            f"variants: expected names from {', '.join(valid)}, or {ALL} (backends {', '.join(backends)});"
            f" got {', '.join(unknown) or 'none'}"
        )
    return tuple((b, v) for b in backends for v in wanted if v in available[b])


def split_names(names) -> tuple[str, ...]:
    """``"a, b,a"`` or ``["a", "b"]`` -> ``("a", "b")``: stripped, empty ones dropped, first occurrence kept."""
    if isinstance(names, str):
        names = names.split(",")
    return tuple(dict.fromkeys(name.strip() for name in names if name.strip()))


def resolve_device(device: str, backends: tuple[str, ...]) -> str:
    if device not in DEVICES:
        raise ValueError(f"device: expected one of {', '.join(DEVICES)}; got {device!r}")
    if device == "auto":
        return "cuda" if all(side(b).has_cuda() for b in backends) else "cpu"
    for backend in backends:
        side(backend).device(device)  # ValueError naming what the framework sees
    return device
