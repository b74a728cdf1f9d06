"""The one command-line builder: an entry point's options are a dataclass, each field a flag.

`flag` gives a field its help, short forms and choices; `given` builds the parser from the
fields (argparse: bad types and choices print usage and exit 2) and returns only the flags
given, so a resumed run can tell them apart; `parse` makes the dataclass from them, whose
`__post_init__` checks it (an impossible combination is a BcjaxError). No JAX here:
--help and flag errors must not wait for it, nor start it before the device is chosen.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any, TypeVar

from bcjax.errors import BcjaxError

T = TypeVar("T")
REQUIRED = dataclasses.MISSING
_KINDS = {"int": int, "float": float, "str": str, "bool": bool}


def flag(default: Any, help: str, *short: str, choices: tuple[str, ...] | None = None, metavar: str | None = None,
         positional: bool = False, repeat: bool = False, alias: tuple[str, object, str] | None = None,
         **meta: Any) -> Any:
    """A dataclass field that is also a flag (default REQUIRED: one that must be given).

    repeat: a tuple field given once per value (--grid A --grid B), not as one list;
    alias: (option, value, help), a switch that sets this field to value (--do_dagger: --algo dagger);
    meta: facts an entry point keeps about the field (Config's `resumable`, the sweep's `sets`).
    """
    kw = {} if default is REQUIRED else {"default": default}
    return dataclasses.field(**kw, metadata={"help": help, "short": short, "choices": choices, "metavar": metavar,
                                             "positional": positional, "repeat": repeat, "alias": alias, **meta})


def _kind(f: dataclasses.Field) -> tuple[type, bool]:
    """The field's value type, and whether it holds several (a tuple[X, ...] field)."""
    t = f.type.removesuffix(" | None")
    return _KINDS[t.removeprefix("tuple[").split(",")[0]], t.startswith("tuple[")


def field_of(cls: type, name: str) -> dataclasses.Field | None:
    return next((f for f in dataclasses.fields(cls) if f.name == name), None)


def render(name: str, value: object) -> list[str]:
    """The flag tokens that give `name` this value."""
    if isinstance(value, bool):
        return [f"--{name}"] if value else []
    return [f"--{name}", *map(str, value if isinstance(value, tuple) else [value])]


def build_parser(cls: type, abbrev: bool = True) -> argparse.ArgumentParser:
    """The parser of `cls`'s fields (its docstring is the description; PROG its name in usage lines).
    Defaults stay the dataclass's: the namespace holds only the flags given."""
    p = argparse.ArgumentParser(prog=getattr(cls, "PROG", None), description=cls.__doc__, allow_abbrev=abbrev,
                                argument_default=argparse.SUPPRESS)
    for f in dataclasses.fields(cls):
        m = f.metadata
        kind, many = _kind(f)
        text = m["help"].replace("%", "%%")
        if f.default not in (REQUIRED, None, ()):
            text += f" (default: {' '.join(render(f.name, f.default)[1:]) or f.default})"
        kw: dict = {"help": text}
        if kind is bool:
            kw["action"] = "store_true"
        else:
            kw.update(type=kind, choices=m["choices"], metavar=m["metavar"])
            if many and m["repeat"]:
                kw["action"] = "append"
            elif many:
                kw["nargs"] = "+"
        if m["positional"]:
            p.add_argument(f.name, **kw)
            continue
        p.add_argument(f"--{f.name}", *m["short"], required=f.default is REQUIRED, **kw)
        if m["alias"]:  # beside the flag it stands for
            option, value, alias_help = m["alias"]
            p.add_argument(option, action="store_const", const=value, dest=f"alias:{f.name}", help=alias_help)
    for name, presets in getattr(cls, "PRESETS", {}).items():  # a preset names the flags it gives
        sets = "; ".join(f"{key}: {' '.join(t for k, v in given.items() for t in render(k, v)) or 'no flags'}"
                         for key, given in presets.items())
        p.add_argument(f"--{name}", choices=list(presets), dest=f"preset:{name}",
                       help=f"a preset of flags ({sets}); flags given explicitly win (default: {next(iter(presets))})")
    return p


def _raise(message: str) -> None:
    raise BcjaxError(message)


def given(cls: type, argv: list[str] | None, strict: bool = False, known: bool = False) -> tuple[dict, list[str]]:
    """The fields the flags in `argv` give (not defaulted), and with `known` the tokens left over.
    strict: a flag error is a BcjaxError instead of usage and exit 2 (flags checked inside another command)."""
    p = build_parser(cls, abbrev=not known)  # no abbreviations where other flags pass through
    if strict:
        p.error = _raise  # type: ignore[method-assign]
    ns, rest = p.parse_known_args(argv) if known else (p.parse_args(argv), [])
    out = vars(ns)
    for key in [k for k in out if k.startswith("alias:")]:
        name, value = key.removeprefix("alias:"), out.pop(key)
        if out.get(name, value) != value:
            option = field_of(cls, name).metadata["alias"][0]
            raise BcjaxError(f"{option} contradicts {' '.join(render(name, out[name]))}: pass one of them")
        out[name] = value
    for key in [k for k in out if k.startswith("preset:")]:  # under the flags given
        out = {**cls.PRESETS[key.removeprefix("preset:")][out.pop(key)], **out}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in out.items()}, rest


def parse(cls: type[T], argv: list[str] | None = None) -> T:
    """`cls` made (and so checked) from the command line."""
    return cls(**given(cls, argv)[0])


def value_of(cls: type, name: str, text: str) -> object:
    """A flag's value from its text as the parser reads it (a switch: true or false); ValueError if it is none."""
    f = field_of(cls, name)
    if f is None:
        raise ValueError(f"{cls.PROG} has no flag --{name}: see python scripts/{cls.PROG} --help")
    kind, _ = _kind(f)
    if kind is bool:
        if text.lower() not in ("true", "false"):
            raise ValueError(f"--{name} is on or off: give {name}=true,false, got {text!r}")
        return text.lower() == "true"
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"--{name}: invalid {kind.__name__} value: {text!r}") from None


def to_argv(obj: object, always: tuple[str, ...] = ()) -> list[str]:
    """The flags that make `obj` from its class's defaults (a run's command line), and those named in `always`."""
    base = type(obj)()
    return [t for f in dataclasses.fields(obj) if f.name in always or getattr(obj, f.name) != getattr(base, f.name)
            for t in render(f.name, getattr(obj, f.name))]


def check_choices(obj: object) -> None:
    """The fields with choices hold one of them (also when made in code, not by the parser)."""
    for f in dataclasses.fields(obj):
        value, choices = getattr(obj, f.name), f.metadata.get("choices")
        if choices and value is not None and value not in choices:
            raise BcjaxError(f"--{f.name} {value!r}: choose from {', '.join(choices)}")


def select_device(no_gpu: bool, gpu: int | None = None) -> None:
    """Every entry point's --no_gpu, before JAX picks its backend: the CPU, else GPU `gpu` (None: as
    CUDA_VISIBLE_DEVICES says)."""
    if no_gpu:
        os.environ["JAX_PLATFORMS"] = "cpu"
        if "jax" in sys.modules:  # imported already (a library caller): it has read the variable
            sys.modules["jax"].config.update("jax_platforms", "cpu")
    elif gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
