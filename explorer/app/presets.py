"""Demo presets: a text, a set of experts to switch off and one line of why (the page's "Start here" row).

They live in one data file (assets/presets.json for the embedded model; `--presets` / MONET_PRESETS for a
published one), so a Space owner edits data, not code. Each preset also names a control text that the same
switched-off set should leave alone: the effect on the preset's own text against the control is what a
newcomer should see in one click. When the app starts, every preset is checked against the loaded model
and index (its ablation must resolve: known domains, ids inside the model); a preset that does not is
left out and the page says why (load_presets).
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path


class PresetError(ValueError):
    """A presets file that cannot be read; the message names the file and what to fix."""


@dataclass(frozen=True)
class Preset:
    title: str  # a few words, shown on the button
    why: str  # one line: what switching these experts off shows
    prompt: str  # a text in the preset's domain: the generation prompt and the text whose perplexity is measured
    ablate: str  # the experts switched off, as the page's ablation box accepts them
    control: str  # a text of another domain that the same set should leave alone


def read_presets(path: str | Path) -> list[Preset]:
    """The presets of a JSON file {"presets": [{title, why, prompt, ablate, control}, ...]}."""
    path = Path(path)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["presets"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PresetError(f'Cannot read the presets file {path}: {error}. It holds {{"presets": [...]}}.') from None
    names = [f.name for f in fields(Preset)]
    presets = []
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or sorted(entry) != sorted(names):
            raise PresetError(f"Preset {number} in {path} must have exactly the fields {', '.join(names)}.")
        if not all(isinstance(entry[name], str) and entry[name].strip() for name in names):
            raise PresetError(f"Preset {number} in {path}: every field is a non-empty text.")
        presets.append(Preset(**entry))
    return presets


def usable_presets(presets: list[Preset], resolve: Callable[[str], object]) -> tuple[list[Preset], list[str]]:
    """The presets whose ablation `resolve` accepts, and a sentence for each one left out."""
    usable, problems = [], []
    for preset in presets:
        try:
            resolve(preset.ablate)
        except ValueError as error:  # RequestRejected and the naming errors are ValueErrors
            problems.append(f"The preset {preset.title!r} is left out: {error}")
        else:
            usable.append(preset)
    return usable, problems


@dataclass(frozen=True)
class LoadedPresets:
    """The presets the page offers, and a sentence for each problem met loading them (shown like load problems)."""

    presets: tuple[Preset, ...] = ()
    problems: tuple[str, ...] = ()


def load_presets(path: str | Path | None, resolve: Callable[[str], object]) -> LoadedPresets:
    """The usable presets of a file (none when path is None); a file that cannot be read is a problem, not a crash."""
    if not path:
        return LoadedPresets()
    try:
        presets = read_presets(path)
    except PresetError as error:
        return LoadedPresets((), (str(error),))
    usable, problems = usable_presets(presets, resolve)
    return LoadedPresets(tuple(usable), tuple(problems))
