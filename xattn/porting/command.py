"""What ``xattn check MOD:FN_A MOD:FN_B --inputs FILE.npz`` does, apart from its command line.

:func:`load_target` finds ``FN`` in ``MOD`` (an importable dotted name, the current directory on
the path, or a ``.py`` file); :func:`load_inputs` reads the npz; :func:`bind` says how a function
takes those arrays: **by name** where every array's name is one of its parameters, else **in the
file's order**; :func:`check_targets` puts it together and calls :func:`xattn.check_port`. Every
mistake in what was given (a missing module, attribute, file or parameter) is a
:class:`TargetError`, one line saying what was expected, what was got and what to do.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np

#: Modules loaded from ``.py`` paths, by resolved path.
_FILES: dict[Path, object] = {}


class TargetError(ValueError):
    """A ``MOD:FN``, npz file or binding that cannot be used as given (a usage error of ``xattn check``)."""


def _import_module(module: str):
    if module.endswith(".py") or os.sep in module or "/" in module:
        path = Path(module).expanduser().resolve()
        if not path.is_file():
            raise TargetError(f"{module}: expected a Python file; no such file (from {Path.cwd()})")
        if path in _FILES:  # both targets in one file: one module, one set of globals
            return _FILES[path]
        name = f"_xattn_check_{len(_FILES)}_{path.stem}"
        sys.path.insert(0, str(path.parent))  # as `python file.py` would: its neighbours import
        spec = importlib.util.spec_from_file_location(name, path)
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[name] = loaded  # dataclasses and pickling look a module up while it runs
        try:
            spec.loader.exec_module(loaded)
        except BaseException as error:
            del sys.modules[name]
            raise TargetError(f"{module}: importing it raised {_one_line(error)}") from None
        _FILES[path] = loaded
        return loaded
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would: the current directory's modules import
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name and module.startswith(error.name):
            raise TargetError(f"{module}: expected an importable module (a dotted name from {Path.cwd()} or the"
                              f" installed packages) or a .py file path; {_one_line(error)}") from None
        raise TargetError(f"{module}: importing it raised {_one_line(error)}") from None
    except BaseException as error:  # the user's module failed on import: say what it raised, in one line
        raise TargetError(f"{module}: importing it raised {_one_line(error)}") from None


def load_target(target: str) -> Callable:
    """The callable named by ``MOD:FN`` (``FN`` may be dotted: ``model.encoder``, ``Class.method``)."""
    module, colon, attribute = target.rpartition(":")
    if not colon or not module or not attribute:
        raise TargetError(f"expected MOD:FN such as mymodel:forward or path/to/model.py:forward; got {target!r}")
    found = _import_module(module)
    for part in attribute.split("."):
        if not hasattr(found, part):
            names = sorted(n for n, v in vars(found).items() if callable(v) and not n.startswith("_"))[:12]
            raise TargetError(f"{target}: expected {module} to have {attribute!r}; it has no {part!r}"
                              f" (callables there: {', '.join(names) or 'none'})")
        found = getattr(found, part)
    if not callable(found):
        raise TargetError(f"{target}: expected a function or module; got a {type(found).__name__}")
    return found


def load_inputs(path: str) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file by name, in the file's order."""
    if not Path(path).is_file():
        raise TargetError(f"{path}: expected an .npz file (numpy.savez(path, x=x, mask=mask)); no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise TargetError(f"{path}: expected an .npz archive of named arrays; got a single .npy array."
                                  " Save it with numpy.savez(path, x=x)")
            return {name: archive[name] for name in archive.files}
    except TargetError:
        raise
    except Exception as error:  # not a zip, a pickled object array...
        raise TargetError(f"{path}: expected an .npz file of arrays (numpy.savez); {_one_line(error)}") from None


@dataclasses.dataclass(frozen=True)
class Binding:
    """How one function takes the npz arrays: ``by`` ``"name"`` (``keywords[i]`` for array i) or ``"order"``."""

    by: str
    keywords: tuple[str, ...] = ()

    def describe(self) -> str:
        return "by name" if self.by == "name" else "in the file's order (the names are not all its parameters)"


def _parameters(fn) -> dict[str, inspect.Parameter] | None:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(fn, torch.nn.Module):  # its __call__ is (*args, **kwargs)
        fn = fn.forward
    try:
        return dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # a builtin or C function without a signature: only order works
        return None


def bind(fn, names) -> Binding:
    """By name where every array name is one of ``fn``'s parameters (and the rest have defaults), else in order."""
    parameters = _parameters(fn)
    keyword_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    if parameters is not None and names and all(n in parameters and parameters[n].kind in keyword_kinds
                                                for n in names):
        missing = [n for n, p in parameters.items() if n not in names and p.default is p.empty
                   and p.kind in keyword_kinds]
        if missing:
            raise TargetError(f"the arrays' names match parameters of {getattr(fn, '__name__', fn)}, but it also"
                              f" needs {', '.join(missing)}; add {'them' if len(missing) > 1 else 'it'} to the npz")
        return Binding("name", tuple(names))
    return Binding("order")


def positional_order(fn, binding: Binding, names) -> list[str] | None:
    """The order of ``names`` in which ``fn(*arrays)`` binds as ``binding`` says (None: no such order)."""
    if binding.by == "order":
        return list(names)
    leading = list((_parameters(fn) or {}).values())[: len(names)]
    if {p.name for p in leading} == set(names) and all(p.kind == p.POSITIONAL_OR_KEYWORD for p in leading):
        return [p.name for p in leading]
    return None


def as_called(fn, binding: Binding, names, order, label: str, framework: str | None = None):
    """``fn`` itself where ``fn(*arrays in order)`` already binds as ``binding`` says; else a thin function that does.

    ``names`` is the file's order, ``order`` the order check_port passes the arrays in. The stand-in's
    signature is ``order`` (check_port names ``grad/<input>`` rows from it) then ``fn``'s other
    parameters as keywords (a reference's ``dtype``, ``rounding_seed``).
    """
    if positional_order(fn, binding, names) == list(order):
        return fn

    def bound(*arrays, **keywords):
        given = dict(zip(order, arrays))
        if binding.by == "name":
            return fn(**given, **keywords)
        return fn(*(given[name] for name in names), **keywords)

    parameters = list((_parameters(fn) or {}).items())
    if binding.by == "order":
        parameters = parameters[len(names):]
    rest = [p.replace(kind=p.KEYWORD_ONLY) for n, p in parameters
            if n not in names and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    positional = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in order]
    bound.__signature__ = inspect.Signature(positional + rest)
    bound.__name__ = bound.__qualname__ = label
    if framework is not None:
        bound.framework = framework  # infer_framework asks this first: the wrapper would hide fn's framework
    return bound


def check_targets(target_a: str, target_b: str, inputs_path: str, *, reference: str | None = None,
                  grad: bool = False, frameworks=None, say=None):
    """Load both targets (and a ``MOD:FN`` reference), bind the npz arrays and run :func:`xattn.check_port`.

    ``reference``: None, ``"a"``/``"b"`` (that side's float64 rerun, passed to check_port as is) or
    ``MOD:FN``; ``frameworks``: two names or None (guessed); ``say(line)`` hears how each function
    takes the arrays. The arrays go to check_port in the order the rerun side (else A) takes them,
    so that side is passed as itself (check_port reruns modules, not stand-ins); a function that
    takes them otherwise gets a stand-in. Raises :class:`TargetError` for anything given wrong;
    what the functions raise while running propagates.
    """
    from xattn.backends.calls import FRAMEWORK_NAMES
    from xattn.porting.check import RERUN_SIDES, check_port
    from xattn.porting.infer import guess_framework

    if frameworks is not None and (len(frameworks) != 2 or any(f not in FRAMEWORK_NAMES for f in frameworks)):
        raise TargetError(f"frameworks: expected two of {', '.join(FRAMEWORK_NAMES)}, one per function, such as"
                          f" jax,torch; got {','.join(frameworks)}")
    fn_a, fn_b = load_target(target_a), load_target(target_b)
    oracle = None if reference in (None, *RERUN_SIDES) else load_target(reference)
    arrays = load_inputs(inputs_path)
    names = list(arrays)
    if frameworks is None:
        try:
            guesses = [guess_framework(fn_a), guess_framework(fn_b)]
        except ValueError as error:
            raise TargetError(str(error)) from None
        frameworks = tuple(framework for framework, _ in guesses)
        whys = [f"guessed: {why}" for _, why in guesses]
    else:
        whys = ["as told", "as told"]
    targets = [(fn_a, target_a, frameworks[0], whys[0]), (fn_b, target_b, frameworks[1], whys[1])]
    if oracle is not None:
        targets.append((oracle, reference, None, "the reference"))
    bindings = [bind(fn, names) for fn, *_ in targets]
    first = 1 if reference == "b" else 0
    order = positional_order(targets[first][0], bindings[first], names) or names
    called = []
    for (fn, target, framework, why), binding in zip(targets, bindings):
        if say is not None:
            say(f"{target} takes {', '.join(names)} {binding.describe()}, as {framework or 'numpy'} arrays ({why})")
        called.append(as_called(fn, binding, names, order, target, framework))
    reference = called[2] if oracle is not None else reference
    return check_port(called[0], called[1], *(arrays[n] for n in order), reference=reference,
                      names=(target_a, target_b), frameworks=tuple(frameworks), grad=grad)


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"


def failure(error: BaseException) -> str:
    """What a run that raised says in one line: the exception and the innermost frame outside xattn and libraries."""
    import traceback

    package = str(Path(__file__).resolve().parents[1])
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not f.filename.startswith(package) and "-packages" not in f.filename
              and not f.filename.startswith(sys.prefix) and not f.filename.startswith(sys.base_prefix)]
    where = f" (at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    return f"{_one_line(error)}{where}"
