"""What the commands share: option types and decorators, the run's validation, and writing a report."""

from __future__ import annotations

import click

from xattn.backends.frameworks import DEVICES, MATMUL_PRECISIONS
from xattn.contract.spec import DTYPES
from xattn.render.text import FORMATS

format_option = click.option(
    "--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
    help="table and markdown read at 100 columns; json: see docs/comparator.md (sweep: docs/sweep.md).",
)


class OutputPath(click.ParamType):
    """A file path checked writable when the command line is read, before any work (:mod:`xattn.render.files`)."""

    name = "file"

    def get_metavar(self, param, ctx=None):
        return "FILE"

    def convert(self, value, param, ctx):
        from xattn.render.files import check_writable

        try:
            check_writable(value)
        except ValueError as error:
            self.fail(str(error), param, ctx)
        return value


output_option = click.option(
    "--output", "-o", type=OutputPath(), default=None,
    help="Write the report to this file (atomically: whole or not at all) instead of standard output.",
)


def _key_lengths(ctx, param, value):
    if value is None:
        return None
    try:
        return tuple(int(n) for n in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers such as 5,16; got {value!r}") from None


def emit(text: str, output: str | None) -> None:
    """``text`` to ``output`` (atomically) or standard output; a write that fails sends it to standard output."""
    from xattn.render.files import write_atomic

    if output is None:
        click.echo(text, nl=False)
        return
    try:
        write_atomic(output, text)
    except OSError as error:
        click.echo(text, nl=False)
        click.echo(f"xattn: could not write {output} ({error.strerror or error}); the report is on standard output",
                   err=True)
        raise SystemExit(2) from None
    click.echo(f"wrote {output}", err=True)


def _options(*decorators):
    """Several click decorators as one, applied so that --help lists them in the order given."""

    def apply(command):
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


class CommaList(click.ParamType):
    """One value or a comma-separated list of them (``128,256,512``), each converted by ``item``."""

    def __init__(self, item: click.ParamType, metavar: str):
        self.item, self.metavar, self.name = item, metavar, f"{item.name} list"

    def get_metavar(self, param, ctx=None):
        return self.metavar

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = [part.strip() for part in str(value).split(",")]
        if not all(parts):
            self.fail(f"expected one value or a comma-separated list such as 128,256; got {value!r}", param, ctx)
        return tuple(self.item.convert(part, param, ctx) for part in parts)


def in_given_order(ctx, param, value):
    # click processes options in command-line order: this records which sweep option came first.
    if value is not None:
        ctx.meta.setdefault("xattn.given_order", []).append(param.name)
    return value


#: The AttentionSpec size options: one integer for compare; for sweep, a comma list sweeps the field.
SIZE_OPTIONS = (
    ("--batch", "B  [default: 2]"),
    ("--q-len", "T, query length  [default: 64]"),
    ("--kv-len", "S, key/value length  [default: T]"),
    ("--embed", "E, model width  [default: 64]"),
    ("--heads", "H, query heads  [default: 4]"),
    ("--kv-heads", "G, key/value heads dividing H  [default: H]"),
    ("--head-dim", "D  [default: E // H]"),
)
INTEGERS = CommaList(click.INT, "N[,N...]")


def size_options(sweepable: bool):
    if sweepable:
        return _options(*(click.option(name, type=INTEGERS, callback=in_given_order, help=text)
                          for name, text in SIZE_OPTIONS))
    return _options(*(click.option(name, type=int, help=text) for name, text in SIZE_OPTIONS))


def dtype_option(sweepable: bool):
    text = "Run dtype (float64 turns on jax_enable_x64 for the run)."
    if sweepable:
        return click.option("--dtype", type=CommaList(click.Choice(DTYPES), "DTYPE[,DTYPE...]"), default="float32",
                            show_default=True, callback=in_given_order, help=text)
    return click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True, help=text)


selection_options = _options(
    click.option("--backends", help="Comma-separated backends, e.g. jax,torch (default: every one installed)."),
    click.option("--variants", help="Comma-separated variants, or 'all' (default: the variants every chosen"
                 " backend has, so each row has a partner; 'all' adds JAX's threaded and torch's compiled)."),
    click.option("--seed-shape", is_flag=True,
                 help="The seed notebook's shape: B=32 T=512 E=128 H=16 D=8 (other size options override it)."),
)
mask_options = _options(
    click.option("--causal/--no-causal", default=None, help="Causal mask (needs T == S).  [default: no]"),
    click.option("--key-lengths", callback=_key_lengths, help="Valid keys per batch row, e.g. 5,16 (key padding)."),
    click.option("--scale", type=float, help="Logit scale  [default: 1/sqrt(D)]"),
)
run_options = _options(
    click.option("--seed", type=int, default=0, show_default=True, help="Seed of the inputs."),
    click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True),
    click.option("--matmul-precision", type=click.Choice(MATMUL_PRECISIONS), default="highest",
                 show_default=True, help="float32 matmul precision in both frameworks; 'default' leaves each"
                 " framework's own setting."),
    click.option("--threads", type=int, help="Intra-op threads for both frameworks, 1 to 1024 [default: XLA's]."),
    click.option("--min-time", type=float, default=0.05, show_default=True,
                 help="Measured seconds per variant before its timing may converge."),
    click.option("--max-time", type=float, default=0.3, show_default=True,
                 help="Measured seconds per variant at most (then it is flagged if noisy)."),
    click.option("--no-timing", is_flag=True, help="Check drift only; skip the timed loop."),
    click.option("--max-memory", help="Refuse to start when the estimated peak memory is over this: a size"
                 " (8GiB, 512MiB) or a share of the memory available now (50%).  [default: 75%]"),
)


def _flag(argument: str) -> str:
    return "--" + argument.replace("_", "-")


def _checked(flag: str, resolve, *args):
    """``resolve(*args)``, its ValueError a usage error of ``flag`` (exit 2)."""
    try:
        return resolve(*args)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint=flag) from None


def prepare_run(backends, variants, **options):
    """``(plan, settings)``, the library's own RunSettings and Plan: bad options are usage errors (exit 2)."""
    from xattn.comparison import settings as run_settings
    from xattn.errors import BackendUnavailableError

    try:
        settings = run_settings.RunSettings(**options)
    except ValueError as error:  # "max_time: expected at least min_time=2; got 1" -> --max-time, in flags
        field, _, message = str(error).partition(": ")
        for name in options:
            message = message.replace(name, _flag(name))
        raise click.BadParameter(message, param_hint=_flag(field)) from None
    settings = run_settings.settle_threads(settings, for_load=True)  # before anything imports JAX
    try:
        names = _checked("--backends", run_settings.resolve_backends, backends)
    except BackendUnavailableError as error:
        raise click.UsageError(str(error)) from None
    runs = _checked("--variants", run_settings.resolve_variants, names, variants)
    device = _checked("--device", run_settings.resolve_device, settings.device, names)
    _enable_caches(names)
    return run_settings.Plan(names, runs, device), settings


def _enable_caches(names) -> None:
    """The compilation caches, a second run skipping XLA and inductor compiles; an unusable one is a warning line."""
    import warnings

    from xattn.backends.caches import enable_compilation_caches

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            enable_compilation_caches(names)
        except ValueError as error:  # XATTN_NO_CACHE=maybe
            raise click.UsageError(str(error)) from None
    for warning in caught:
        click.echo(f"xattn: warning: {warning.message}", err=True)


def check_memory(plan, specs, settings, names=None) -> None:
    """Exit 2 before anything runs when a problem's estimated peak is over --max-memory."""
    from xattn.comparison import memory
    from xattn.errors import MemoryLimitError

    try:
        memory.check_run(specs, plan, settings, names)
    except MemoryLimitError as error:
        raise click.UsageError(str(error).replace("max_memory", "--max-memory")) from None
