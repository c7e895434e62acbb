"""Command-line options generated from the frozen dataclass configs.

``rnnkit train lm --model.hidden_size 512 --trainer.max_time 60`` sets fields of the model, data
and trainer configs. Every field of each config becomes an option ``--SECTION.FIELD`` whose help is
the field's attribute docstring (the string literal under it, which the API docs show as well)
and its default; a TOML file (``--config run.toml``, sections ``[model]``, ``[data]``,
``[trainer]``) sits between the defaults and the flags.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import sys
import textwrap
import typing
from pathlib import Path
from typing import Any

import click

from rnnkit.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["config_options", "resolve_sections", "read_toml"]

_SCALARS = {int: click.INT, float: click.FLOAT, str: click.STRING, bool: click.BOOL}


class _Numbers(click.ParamType):
    """A tuple of numbers written ``0.9,0.999`` (``""``: empty), for ``tuple[float, float]`` or
    ``tuple[int, ...]`` fields such as ``trainer.betas`` and ``model.softmax_cutoffs``."""

    def __init__(self, kind: type) -> None:
        self.kind, self.name = kind, f"{kind.__name__},..."

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple:
        if isinstance(value, tuple):
            return value
        if str(value).strip() in ("()", "[]"):  # what the help shows as the empty default
            return ()
        try:
            return tuple(self.kind(v) for v in str(value).split(",") if v.strip())
        except ValueError:
            self.fail(f"expected comma-separated {self.kind.__name__} values such as "
                      f"{'0.9,0.999' if self.kind is float else '2000,10000'}, got {value!r}", param, ctx)


class _Unset:
    """An option set to ``none`` on the command line: the field's value is None, whatever a TOML file
    (or a run's recorded config.toml, on --resume) said. A flag left out is plain None: not given."""

    def __repr__(self) -> str:
        return "none"


NONE = _Unset()


class _OrNone(click.ParamType):
    """An optional field's type: its values, or ``none`` (the help shows the default None as 'none')."""

    def __init__(self, inner: click.ParamType) -> None:
        self.inner, self.name = inner, inner.name

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is NONE or (isinstance(value, str) and value.strip().lower() == "none"):
            return NONE
        return self.inner.convert(value, param, ctx)


def _click_type(hint: Any):
    """The click type of a field annotation (``int | None`` -> INT or ``none``); None for unsupported ones."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
        inner = _click_type(args[0])
        return None if inner is None else _OrNone(inner)
    if typing.get_origin(hint) is tuple:
        kinds = {a for a in typing.get_args(hint) if a is not Ellipsis}
        if len(kinds) == 1 and next(iter(kinds)) in (int, float):
            return _Numbers(next(iter(kinds)))
        return None
    return _SCALARS.get(hint)


@functools.lru_cache(maxsize=None)
def field_docs(config_class: type) -> dict[str, str]:
    """``{field: docstring}`` from the string literals right under the fields of a dataclass.

    Empty when the source is not available (a frozen or byte-compiled-only install): the options
    then show their defaults alone.
    """
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(config_class)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _default_text(field: dataclasses.Field, defaults: dict[str, Any] | None = None) -> str:
    """The default as it is written on the command line (none, 'lstm' -> lstm, () -> '')."""
    value = defaults[field.name] if defaults and field.name in defaults else field.default
    if value is dataclasses.MISSING:
        return "required"
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ",".join(map(str, value)) if value else "''"
    if isinstance(value, str):
        return value if value else "''"
    return repr(value)


def config_options(section: str, config_class: type, skip: tuple[str, ...] = (),
                   plain: bool = False, defaults: dict[str, Any] | None = None) -> list[click.Option]:
    """One ``--section.field`` option per supported field of ``config_class`` (default None = unset).

    ``plain=True`` names them ``--field-name`` instead (``--time-col``), for the data options;
    ``defaults`` are the values a command uses instead of the class's (shown in the help).
    """
    hints = typing.get_type_hints(config_class)
    docs = field_docs(config_class)
    options = []
    for field in dataclasses.fields(config_class):
        ctype = _click_type(hints[field.name])
        if ctype is None or field.name in skip:
            continue
        flag = f"--{field.name.replace('_', '-')}" if plain else f"--{section}.{field.name}"
        options.append(click.Option([flag, f"{section}__{field.name}"], type=ctype,
                                    default=None,
                                    help=f"{docs.get(field.name, '').replace('``', '')} "
                                         f"[default: {_default_text(field, defaults)}]".lstrip()))
    return options


def read_toml(path: str | None) -> dict[str, dict[str, Any]]:
    """The sections of a TOML run file (empty without a file)."""
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from None
    for key, value in data.items():
        if not isinstance(value, dict):
            raise ConfigError(f"{p}: expected tables [model], [data], [trainer]; got a value for {key!r}")
    return data


def resolve_sections(params: dict[str, Any], toml: dict[str, dict[str, Any]],
                     sections: dict[str, type], base: dict[str, dict[str, Any]] | None = None) -> dict[str, dict]:
    """Merge defaults < ``base`` (a preset) < TOML < flags into one dict of field values per section."""
    unknown = sorted(set(toml) - set(sections))
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}; expected {sorted(sections)}")
    out: dict[str, dict[str, Any]] = {}
    for section, cls in sections.items():
        names = {f.name for f in dataclasses.fields(cls)}
        values = dict((base or {}).get(section, {}))
        extra = sorted(set(toml.get(section, {})) - names)
        if extra:
            raise ConfigError(f"[{section}] has unknown key(s) {extra}; expected some of {sorted(names)}")
        values.update(toml.get(section, {}))
        for name in names:
            flag = params.get(f"{section}__{name}")
            if flag is not None:
                values[name] = None if flag is NONE else flag
        out[section] = values
    return out
