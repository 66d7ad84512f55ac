"""Errors that name the setting at fault, so every face can say it in its own words.

A setting has one name everywhere (``window``, ``guidance_scale``, ``class_labels``, ...). A check raises
:class:`SettingError` with a message template that refers to the setting as ``{name}``; the face the user
is in renders it: the Python API and ComfyUI (its widgets carry the same names) as ``window``, the
command line as ``--window``. The check itself is written once (docs/design.md, "Errors in the face's words").
"""
from __future__ import annotations

from collections.abc import Callable


def python_name(name: str) -> str:
    return name


class SettingError(ValueError):
    """A bad value of the setting ``name``; ``template`` mentions it as ``{name}`` (and may mention other
    settings as ``{other:NAME}``, e.g. ``{other:height}``)."""

    def __init__(self, name: str, template: str):
        self.name, self.template = name, template
        super().__init__(self.render())

    def render(self, spell: Callable[[str], str] = python_name) -> str:
        return _Spelled(spell, self.name).format(self.template)


class _Spelled:
    """str.format with ``{name}`` -> spell(setting) and ``{other:x}`` -> spell(x)."""

    def __init__(self, spell, name):
        self.spell, self.name = spell, name

    def format(self, template: str) -> str:
        import string

        out = []
        for literal, field, spec, _ in string.Formatter().parse(template):
            out.append(literal)
            if field is None:
                continue
            if field == "name":
                out.append(self.spell(self.name))
            elif field == "other":
                out.append(self.spell(spec))
            else:  # not ours: keep it as written
                out.append("{" + field + (":" + spec if spec else "") + "}")
        return "".join(out)


class SettingWarning(UserWarning):
    """A setting that was given but has no effect (``window`` in mode ntp): said once, in the face's words."""

    def __init__(self, name: str, template: str):
        self.name, self.template = name, template
        super().__init__(self.render())

    def render(self, spell: Callable[[str], str] = python_name) -> str:
        return _Spelled(spell, self.name).format(self.template)


def render(error: BaseException, spell: Callable[[str], str]) -> str:
    """The message of any exception or warning, with setting names spelled for a face."""
    return error.render(spell) if isinstance(error, (SettingError, SettingWarning)) else str(error)
