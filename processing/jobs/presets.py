"""Presets: named recipes, so that a client sends a name (`preset=web`), not parameters.

They are declared in the PRESETS setting and made in the admin (processing.models.Preset); a preset
made in the admin replaces one of the same name in PRESETS. A job made with one stores its recipe's
canonical chain like any other (so result reuse and the Idempotency-Key compare the chain, not the
name), and the preset's name beside it (Job.preset).
"""

import logging
import re
from dataclasses import dataclass
from typing import Any, Literal

from django.conf import settings

from processing.errors import DomainError, UnknownPreset
from processing.imaging import recipes
from processing.imaging.recipes import PRESET_NAME, Recipe
from processing.models import Preset

logger = logging.getLogger(__name__)

Source = Literal["settings", "admin"]


@dataclass(frozen=True)
class Definition:
    """A preset as declared: its steps and output options as written, where it was declared."""

    name: str
    description: str
    steps: Any
    output: dict[str, Any]
    source: Source

    def recipe(self) -> Recipe:
        """Its recipe, parsed as a client's `steps` are: a refusal names the step."""
        return recipes.from_steps(self.steps, self.output, settings.MAX_STEPS)

    @classmethod
    def of_setting(cls, name: str, declared: dict[str, Any]) -> "Definition":
        # Everything but these is an output option: a misspelt one is refused with the recipe, not dropped.
        output = {key: value for key, value in declared.items() if key not in ("description", "steps")}
        return cls(name, str(declared.get("description", "")), declared["steps"], output, "settings")

    @classmethod
    def of_model(cls, preset: Preset) -> "Definition":
        return cls(preset.name, preset.description, preset.steps, dict(preset.output or {}), "admin")


def declared() -> dict[str, Definition]:
    """Every preset by name, in name order: PRESETS's, those made in the admin replacing their namesakes."""
    found = {name: Definition.of_setting(name, entry) for name, entry in settings.PRESETS.items()}
    found.update((preset.name, Definition.of_model(preset)) for preset in Preset.objects.all())
    return dict(sorted(found.items()))


def named(name: str) -> Definition:
    """The preset called `name`; UnknownPreset, naming those there are, if there is none."""
    made = Preset.objects.filter(name=name).first()
    if made is not None:
        return Definition.of_model(made)
    if name in settings.PRESETS:
        return Definition.of_setting(name, settings.PRESETS[name])
    raise UnknownPreset(name, list(declared()))


def recipe_named(name: str) -> Recipe:
    return named(name).recipe()


def usable() -> list[tuple[Definition, Recipe]]:
    """Each preset with its recipe, in name order; one that no longer parses (an operation's parameters
    changed since it was written) is left out, and logged."""
    found = []
    for definition in declared().values():
        try:
            found.append((definition, definition.recipe()))
        except (DomainError, ValueError) as exc:
            logger.warning("preset %r is left out: %s", definition.name, exc)
    return found


def problems_of_setting(presets: dict[str, Any]) -> list[str]:
    """What is wrong with the presets PRESETS declares (darkroom.E007): a name a client can't send, a
    recipe the operations don't take."""
    found = []
    for name, declared_preset in presets.items():
        if not re.fullmatch(PRESET_NAME, name):
            found.append(f"{name!r} is no preset name (1 to 64 letters, digits, - and _)")
            continue
        try:
            Definition.of_setting(name, declared_preset).recipe()
        except (DomainError, ValueError) as exc:
            found.append(f"{name}: {exc}")
    return found
