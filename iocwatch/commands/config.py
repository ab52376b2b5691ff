"""``--config FILE``: a TOML file whose keys are the sensor's long flag names
(``stats-interval = 10``).

The file supplies defaults; anything given on the command line wins. Keys may use ``-`` or
``_``; a ``[section]`` table is only a visual grouping (its keys are flags too). Unknown keys
and wrongly typed values are errors, so a typo never silently leaves a setting at its default.
"""

from __future__ import annotations

import argparse
from typing import Any


class ConfigError(Exception):
    """The configuration file cannot be used (one-line message)."""


def load_config(path: str) -> dict[str, Any]:
    """Read ``path``, flattening tables one level deep."""
    import tomllib  # (3 ms of start-up: only a run with a config file needs it)

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}")
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path}: {exc}")
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                if isinstance(v, dict):
                    raise ConfigError(f"config {path}: [{key}.{sub}]: tables nest one level only")
                flat[sub] = v
        else:
            flat[key] = value
    return flat


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Every spelling of a long option (and its dest) -> its action."""
    out: dict[str, argparse.Action] = {}
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        names = [o.lstrip("-") for o in action.option_strings if o.startswith("--")]
        if not action.option_strings:
            continue
        names.append(action.dest)
        for n in names:
            out[n] = action
            out[n.replace("-", "_")] = action
            out[n.replace("_", "-")] = action
    return out


def _convert(path: str, key: str, action: argparse.Action, value: Any) -> Any:
    where = f"config {path}: {key}"
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false")
        return value if isinstance(action, argparse._StoreTrueAction) else not value
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        return [_scalar(where, action, v) for v in items]
    return _scalar(where, action, value)


def _scalar(where: str, action: argparse.Action, value: Any) -> Any:
    if isinstance(value, list | dict | bool):
        raise ConfigError(f"{where}: expected a single value")
    conv = action.type
    try:
        out = conv(value if isinstance(value, str) else str(value)) if callable(conv) else value
    except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
        raise ConfigError(f"{where}: {exc}")
    if conv is None and not isinstance(value, str):
        out = str(value)
    if action.choices is not None and out not in action.choices:
        raise ConfigError(f"{where}: must be one of {', '.join(map(str, action.choices))}")
    return out


def _exclusive(parser: argparse.ArgumentParser, action: argparse.Action) -> bool:
    """True for a member of a mutually exclusive group (the mode: ``-r`` or ``-i``)."""
    return any(action in g._group_actions for g in parser._mutually_exclusive_groups)


def apply_config(parser: argparse.ArgumentParser, path: str) -> dict[str, Any]:
    """Make the file's values the parser's defaults (required options become optional).

    Values of mutually exclusive options (the mode, ``read`` or ``interface``) are not made
    defaults but returned: they apply only when the command line names no member of their
    group (see :func:`parse_args_with_config`), so a config file never switches the mode.
    """
    actions = _actions(parser)
    defaults: dict[str, Any] = {}
    held: dict[str, Any] = {}
    for key, value in load_config(path).items():
        action = actions.get(key)
        if key == "config":
            raise ConfigError(f"config {path}: a config file cannot name another")
        if action is None:
            raise ConfigError(f"config {path}: unknown key {key!r}")
        converted = _convert(path, key, action, value)
        if _exclusive(parser, action):
            held[action.dest] = converted
        else:
            defaults[action.dest] = converted
        action.required = False
    for group in parser._mutually_exclusive_groups:
        given = [a for a in group._group_actions if a.dest in held]
        if len(given) > 1:
            names = " and ".join(a.option_strings[-1].lstrip("-") for a in given)
            raise ConfigError(f"config {path}: {names} cannot both be set (they are one choice)")
    parser.set_defaults(**defaults)
    return held


def parse_args_with_config(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)`` with ``--config FILE`` applied first as defaults.

    The command line wins: a config value of a mutually exclusive option (``interface`` or
    ``read``) is used only when the command line gives no option of that group.
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _rest = pre.parse_known_args(argv)
    if not known.config:
        return parser.parse_args(argv)
    required = [g for g in parser._mutually_exclusive_groups if g.required]
    held = apply_config(parser, known.config)
    for group in parser._mutually_exclusive_groups:
        group.required = False  # checked below, once the file's choice is known
    args = parser.parse_args(argv)
    for group in parser._mutually_exclusive_groups:
        members = group._group_actions
        if any(getattr(args, a.dest, None) != a.default for a in members):
            continue  # the command line chose: the file's choice is ignored
        for a in members:
            if a.dest in held:
                setattr(args, a.dest, held[a.dest])
        if group in required and all(getattr(args, a.dest, None) == a.default for a in members):
            names = " ".join("/".join(a.option_strings) for a in members)
            parser.error(f"one of the arguments {names} is required")
    return args
