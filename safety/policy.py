"""Safety policy: per direction, per PII type and per harm category, allow | redact | block, and
the deployment's own block list (terms and regexes, ``safety.blocklist``).

A deployment writes a small YAML file (see ``default_policy.yaml``, which is also what ``None``
means); every key is checked when the file is loaded, and a mistake names the key to fix.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import yaml

from llmloop.safety.blocklist import Blocklist, parse_blocklist
from llmloop.safety.errors import PolicyError
from llmloop.safety.harm import CATEGORIES
from llmloop.safety.pii import PII_TYPES
from llmloop.safety.redact import OPERATORS, Operator

Action = Literal["allow", "redact", "block"]
Direction = Literal["input", "output"]
ACTIONS: tuple[str, ...] = get_args(Action)
DIRECTIONS: tuple[str, ...] = get_args(Direction)
HARM_ACTIONS: tuple[str, ...] = ("allow", "block")  # a classification has no span to redact
DEFAULT_POLICY_PATH = Path(__file__).with_name("default_policy.yaml")


@dataclass(frozen=True)
class DirectionPolicy:
    pii: dict[str, Action]
    """Action per PII type (every name in ``llmloop.safety.pii.PII_TYPES``)."""
    harm: dict[str, Action]
    """Action per harm category (every name in ``llmloop.safety.harm.CATEGORIES``): allow or block."""
    blocklist: Blocklist = field(default_factory=Blocklist)
    """Terms and regexes that block the text (``blocked_categories`` says ``blocklist``)."""

    @property
    def needs_classifier(self) -> bool:
        return any(action != "allow" for action in self.harm.values())


@dataclass(frozen=True)
class SafetyPolicy:
    input: DirectionPolicy
    """Applied to requests before they reach the engine (and before they are logged)."""
    output: DirectionPolicy
    """Applied to the model's answers, streamed or not."""
    operator: Operator = "placeholder"
    """How redacted PII reads: ``placeholder`` (<EMAIL_1>), ``mask`` (****) or ``hash``."""

    def direction(self, direction: Direction) -> DirectionPolicy:
        if direction not in DIRECTIONS:
            raise PolicyError(f"direction must be 'input' or 'output', not {direction!r}")
        return self.input if direction == "input" else self.output


def load_policy(path: str | Path | None = None) -> SafetyPolicy:
    """The policy in the YAML file at ``path``; ``None`` gives the safe defaults."""
    path = DEFAULT_POLICY_PATH if path is None else Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise PolicyError(f"cannot read safety policy {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise PolicyError(f"safety policy {path} is not valid YAML: {e}") from e
    return parse_policy(data or {}, source=str(path))


def parse_policy(data: object, source: str = "policy") -> SafetyPolicy:
    """Build a policy from already-parsed YAML/JSON; unknown keys and actions are errors."""
    _expect_mapping(data, source)
    _reject_unknown(data, {"operator", *DIRECTIONS}, source)
    operator = data.get("operator", "placeholder")
    if operator not in OPERATORS:
        raise PolicyError(
            f"{source}: operator must be one of {', '.join(OPERATORS)}, not {operator!r}"
        )
    directions = {d: _direction(data.get(d) or {}, f"{source}: {d}") for d in DIRECTIONS}
    return SafetyPolicy(input=directions["input"], output=directions["output"], operator=operator)


def _direction(data: object, where: str) -> DirectionPolicy:
    _expect_mapping(data, where)
    _reject_unknown(data, {"pii", "harm", "blocklist"}, where)
    pii = _actions(data.get("pii") or {}, PII_TYPES, ACTIONS, "redact", f"{where}.pii")
    harm = _actions(data.get("harm") or {}, CATEGORIES, HARM_ACTIONS, "block", f"{where}.harm")
    blocklist = parse_blocklist(data.get("blocklist") or {}, f"{where}.blocklist")
    return DirectionPolicy(pii=pii, harm=harm, blocklist=blocklist)


def _actions(
    data: object, names: tuple[str, ...], allowed: tuple[str, ...], fallback: str, where: str
) -> dict[str, Action]:
    _expect_mapping(data, where)
    _reject_unknown(data, {"default", *names}, where)
    for key, action in data.items():
        if action not in allowed:
            raise PolicyError(f"{where}.{key}: must be one of {', '.join(allowed)}, not {action!r}")
    default = data.get("default", fallback)
    return {name: data.get(name, default) for name in names}


def _expect_mapping(data: object, where: str) -> None:
    if not isinstance(data, dict):
        raise PolicyError(f"{where}: expected a mapping of keys to values, got {data!r}")


def _reject_unknown(data: dict, known: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise PolicyError(
            f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(known))}"
        )
