"""Typer options generated from the settings declarations (vae_cli/settings.py).

`@with_settings(names)` adds one option per named setting to a command: its flag, type,
default, help panel (the setting's group), the allowed values in the help and shell completion
of choices. The command receives the values given on the command line as
`settings: dict[str, Any]`; flags left at their default are left out, so that lower layers
(experiments.yaml, --config) still count. Typer reads the command's inspect.signature, so
the generated parameters are set as `__signature__`. Help text is escaped: the CLI uses rich
markup for its panels, and `[...]` in a help string would otherwise be swallowed as a tag.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import typer
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from vae_cli.settings import GROUPS, SETTINGS, Declared, allowed

F = TypeVar("F", bound=Callable[..., Any])
FROM_RUN = "the run's"  # shown as the default of flags that default to the evaluated run's value


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def complete(choices: tuple[Any, ...]) -> Callable[[str], list[str]]:
    """Shell completion of a setting's choices."""
    return lambda incomplete: [str(c) for c in choices if str(c).startswith(incomplete)]


def option(d: Declared, from_run: bool = False, help: str | None = None) -> Any:
    """typer.Option for one declared setting. `from_run`: no default of its own (None, shown
    as "the run's"): `vae eval`'s --batch-size and the like."""
    text = help or d.spec.help
    values = allowed(d)
    if values != "any":
        text = f"{text} Allowed: {values}."
    choices = d.spec.choices
    short = "|".join(map(str, choices))
    metavar = (short if len(short) <= 24 else "NAME") if choices else d.spec.metavar
    decls = [f"{flag(d.name)}/--no-{d.name.replace('_', '-')}"] if d.type is bool else [flag(d.name)]
    kwargs: dict[str, Any] = {
        "help": escape(text),
        "rich_help_panel": d.spec.group,
        "show_default": FROM_RUN if from_run else d.default is not None,
    }
    if d.type is bool:
        kwargs["metavar"] = ""  # an on/off pair takes no value: no "<bool>" placeholder
    elif metavar:
        kwargs["metavar"] = metavar
    if choices:
        kwargs["autocompletion"] = complete(choices)
    return typer.Option(None if from_run else d.default, *decls, **kwargs)


def parameter(name: str, from_run: bool = False, help: str | None = None) -> inspect.Parameter:
    d = SETTINGS[name]
    annotation = d.type | None if (from_run or d.optional) else d.type
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=option(d, from_run, help)
    )


def with_settings(
    names: Iterable[str], from_run: Iterable[str] = (), help: dict[str, str] | None = None
) -> Callable[[F], F]:
    """Add an option per setting in `names` to the command; it gets `settings=` the given ones.

    `from_run`: names whose default is the evaluated run's value; `help`: per-command help
    text replacing the declared one (the declared range is still added)."""
    names, from_run, help = tuple(names), set(from_run), help or {}

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != "settings"]
        # in the panels' order (Data, Model, ..., Output): Typer shows panels as first met
        ordered = sorted(names, key=lambda n: GROUPS.index(SETTINGS[n].spec.group))
        generated = [parameter(n, n in from_run, help.get(n)) for n in ordered]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ctx = kwargs["ctx"]
            given = {}
            for name in names:
                value = kwargs.pop(name)
                source = ctx.get_parameter_source(name)
                if value is not None and source is not None and source.name != "DEFAULT":
                    given[name] = value
            return fn(*args, settings=given, **kwargs)

        wrapper.__signature__ = sig.replace(parameters=[*own, *generated])  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def _no_flag_placeholders(params: list[Any]) -> list[Any]:
    # Typer 0.29 shows every option's type; an on/off flag (--help, --install-completion) takes
    # no value, so it gets no "<bool>" placeholder.
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:  # Typer may vendor click
            param.metavar = ""
    return params


class Command(TyperCommand):
    """A command whose flags show no `<bool>` placeholder."""

    def get_params(self, ctx: typer.Context) -> list[Any]:
        return _no_flag_placeholders(super().get_params(ctx))


class Group(TyperGroup):
    """The `vae` group, whose flags show no `<bool>` placeholder."""

    def get_params(self, ctx: typer.Context) -> list[Any]:
        return _no_flag_placeholders(super().get_params(ctx))
