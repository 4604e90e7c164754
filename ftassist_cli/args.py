"""Build argparse flags from a config dataclass, and the config back from parsed flags.

One definition serves the CLI, `--config FILE.yaml` and Python callers: flags named after the
fields (`lora_r` -> `--lora-r`), help from the field metadata, and flags given on the command
line override values from the YAML file.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

from ftassist.config import build_config, load_config
from ftassist.errors import ConfigError


def _base_type(tp: Any) -> Any:
    """`int | None` -> int; `list[str]` -> list; plain types unchanged."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    return origin or tp


def add_command(sub, name: str, cls: type, handler, *, help: str, skip: tuple[str, ...] = (),  # noqa: A002
                **parser_kw: Any) -> argparse.ArgumentParser:
    """The subcommand `name` with one flag per field of its config `cls` (its docstring is the description),
    run by `handler(args)`."""
    parser = sub.add_parser(name, help=help, **{"description": cls.__doc__, **parser_kw})
    add_config_args(parser, cls, skip=skip)
    parser.set_defaults(handler=handler)
    return parser


def add_config_args(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add one flag per field of `cls` (defaults left as SUPPRESS so YAML values are not overridden)."""
    hints = typing.get_type_hints(cls)
    parser.add_argument("--config", metavar="FILE.yaml", help="Read these settings from a YAML file; flags override it.")
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        meta, tp = f.metadata, _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[operator]
        plain = meta.get("help", "").replace("%", "%%")  # argparse %-formats help text: "10%" would break --help
        help_text = plain + f" (default: {default!r})".replace("%", "%%")
        if meta.get("positional"):
            parser.add_argument(f.name, nargs="*" if tp is list else "?", default=argparse.SUPPRESS, help=plain)
            continue
        flag = "--" + meta.get("flag", f.name).replace("_", "-")
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif tp is list:
            kw["action"] = "append"
        elif tp is dict:
            kw.update(action="append", metavar="KEY=VALUE")
        else:
            kw["type"] = tp
            if "choices" in meta:
                kw["choices"] = meta["choices"]
        parser.add_argument(flag, **kw)


def config_from_args(cls: type, ns: argparse.Namespace) -> Any:
    """The validated config for parsed flags (plus `--config` YAML); raises ConfigError."""
    names = {f.name for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for name in names:
        if not hasattr(ns, name):
            continue
        value = getattr(ns, name)
        if _base_type(hints[name]) is dict and isinstance(value, list):
            meta = next(f for f in dataclasses.fields(cls) if f.name == name).metadata
            value = parse_pairs(value, flag="--" + meta.get("flag", name).replace("_", "-"))
        values[name] = value
    path = getattr(ns, "config", None)
    if path:
        return load_config(cls, path, **values)
    return build_config(cls, values)


def parse_pairs(items: list[str], flag: str) -> dict[str, str]:
    """['a=b', 'c=d'] -> {'a': 'b', 'c': 'd'}; ConfigError naming the flag for a malformed item."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError([f"{flag} {item!r} must look like NAME=VALUE"])
        out[key.strip()] = value.strip()
    return out
