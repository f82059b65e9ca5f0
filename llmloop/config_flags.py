"""Command-line flags made from config dataclass fields, so a default and its help live once.

``add_field_flag(group, EngineConfig, "max_num_seqs")`` adds ``--max-num-seqs`` with the field's
name as ``dest``, its type, its default and its docstring (``config_docs.field_docs``) as help.
"""

import dataclasses
import types
from functools import cache
from typing import Any

from llmloop.config_docs import field_docs

_SCALAR_TYPES = (int, float, str)


def add_field_flags(group: Any, cls: type, *names: str) -> None:
    """``add_field_flag`` for each of ``names``, under its default flag name."""
    for name in names:
        add_field_flag(group, cls, name)


def add_field_flag(group: Any, cls: type, name: str, *flags: str, **kwargs: Any) -> None:
    """Add the flag of field ``name`` of ``cls`` to ``group`` (a parser or argument group).

    ``flags`` default to ``--field-name``; ``kwargs`` go to ``add_argument`` and win (choices,
    metavar, a help text for a ``--no-*`` flag). A bool field off by default is turned on by
    its flag; one on by default is turned off by ``--no-field-name``. A field without a default
    is a required flag.
    """
    field = _fields(cls)[name]
    doc = field_docs(cls).get(name, "").replace("%", "%%")
    has_default = field.default is not dataclasses.MISSING
    options: dict[str, Any] = {"dest": name, "help": doc, "required": not has_default}
    if has_default:
        options["default"] = field.default
    if field.type is bool:
        negated = field.default is True
        flags = flags or ("--" + ("no-" if negated else "") + name.replace("_", "-"),)
        options["action"] = "store_false" if negated else "store_true"
    else:
        flags = flags or ("--" + name.replace("_", "-"),)
        if "choices" not in kwargs:  # argparse's metavar without our dest: --db DB, not DB_URL
            options["metavar"] = flags[0].lstrip("-").replace("-", "_").upper()
        options["type"] = scalar_type(cls, name)
        if has_default and field.default not in (None, ""):
            options["help"] = f"{doc} (default: %(default)s)"
    group.add_argument(*flags, **(options | kwargs))


def scalar_type(cls: type, name: str) -> type:
    """``int`` for a field typed ``int`` or ``int | None`` (and so on for float and str)."""
    annotation = _fields(cls)[name].type
    candidates = (
        [t for t in annotation.__args__ if t is not type(None)]
        if isinstance(annotation, types.UnionType)
        else [annotation]
    )
    if len(candidates) != 1 or candidates[0] not in _SCALAR_TYPES:
        raise TypeError(
            f"{cls.__name__}.{name}: {annotation} has no flag of its own; write that flag by hand"
        )
    return candidates[0]


@cache
def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}
