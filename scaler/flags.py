"""The scaler's command-line flags, made from the settings' declarations (project/config.py).

A setting with a `flag` is also that flag: its default is the setting's value (from the
environment), its type, bounds and help are the setting's, and the flag overrides the setting.
"""

import argparse
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError

from project import config


def flagged(groups: Iterable[str]) -> list[config.Setting]:
    wanted = set(groups)
    return [setting for setting in config.SETTINGS if setting.flag and setting.group in wanted]


def add_setting_flag(parser, setting: config.Setting, current: Any) -> None:
    """`setting.flag` on `parser`, defaulting to `current` (the setting's value); the value lands in
    options[setting.name]."""

    flag = setting.flag
    assert flag is not None, f"{setting.name} has no flag"

    def parse(raw: str) -> Any:
        try:
            return setting.parse(flag, raw)
        except ImproperlyConfigured as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    variables = " or ".join(setting.variables)
    shown = setting.type.show(current) or "empty"
    # argparse formats help with %: a literal one must be doubled.
    about = f"{setting.description} Default {shown}, from {variables}.".replace("%", "%%")
    parser.add_argument(flag, dest=setting.name, type=parse, default=current, help=about)


def add_setting_flags(parser, settings: Any, groups: Iterable[str]) -> None:
    """One argument group per settings group, with a flag for each of its flagged settings."""
    for group in groups:
        arguments = parser.add_argument_group(group)
        for setting in flagged([group]):
            add_setting_flag(arguments, setting, getattr(settings, setting.name))


def chosen(options: dict, groups: Iterable[str]) -> config.Values:
    """The flagged settings of `groups` as the command runs with them: the settings, overridden by flags."""
    return config.Values({setting.name: options[setting.name] for setting in flagged(groups)})


def refuse_contradictions(values: config.Values, groups: Iterable[str]) -> None:
    """CommandError naming the flags of the first rule between settings (project/config.py) they break.
    Warnings are the system checks' to give (they may name settings that are no flags)."""

    def as_flag(name: str) -> str:
        return f"{config.BY_NAME[name].flag} {values[name]}"

    for rule in config.broken_rules(values, groups, warnings=False):
        raise CommandError(f"inconsistent settings: {rule.describe(as_flag)} {rule.hint}")
