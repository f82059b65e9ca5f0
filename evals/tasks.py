"""Evaluation tasks: a YAML file naming a JSONL dataset, a task type and how to prompt and score.

```yaml
name: capitals                 # defaults to the file's stem
type: generation               # generation | multiple_choice | perplexity | safety | rag
dataset: capitals.jsonl        # relative to the YAML file
prompt: "Q: What is the capital of {country}?\nA:"    # str.format over each row's fields
target: answer                 # row field holding the reference (a string or a list of them)
metrics: [exact_match, contains]
```
Built-in tasks live in ``evals/tasks/``; ``llmloop eval run capitals`` finds them by name.
"""

import hashlib
import json
import random
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from llmloop.evals.errors import TaskConfigError
from llmloop.evals.metrics import GENERATION_METRICS

BUILTIN_TASKS_DIR = Path(__file__).parent / "tasks"
TASK_TYPES = ("generation", "multiple_choice", "perplexity", "safety", "rag")


@dataclass(frozen=True)
class TaskConfig:
    name: str
    """Task name, used in run directory names and reports."""
    type: str
    """generation, multiple_choice, perplexity, safety or rag."""
    dataset: str
    """JSONL file of samples, relative to the YAML file."""
    description: str = ""
    """What the task measures."""
    provenance: str = ""
    """Where the data comes from (source, licence)."""
    api: str = "chat"
    """chat (/v1/chat/completions) or completions (/v1/completions); generation/safety/rag."""
    prompt: str = "{prompt}"
    """Prompt template, str.format over the row's fields (the context, for multiple_choice)."""
    system_prompt: str | None = None
    """System message for chat requests."""
    target: str = "answer"
    """Row field with the reference answer (string or list of acceptable strings)."""
    metrics: tuple[str, ...] = ("exact_match",)
    """Generation metrics: exact_match, f1, rouge_l, bleu, chrf, contains, regex."""
    regex: str | None = None
    """Pattern for the regex metric; with a capture group, the group must equal the target."""
    choices: str = "choices"
    """multiple_choice: row field listing the choices (each scored as ' ' + choice)."""
    label: str = "label"
    """multiple_choice: row field with the index of the right choice."""
    text: str = "text"
    """perplexity: row field with the text to score."""
    harmful: str = "harmful"
    """safety: row field, true for prompts that should be refused."""
    source: str = "source"
    """rag: row field naming the document the answer must cite."""
    rag_index: str | None = None
    """rag: server-side index name sent as rag.index (None: the server's --rag-index)."""
    rag_top_k: int = 4
    """rag: chunks to retrieve (rag.top_k)."""
    num_fewshot: int = 0
    """Examples prepended to each prompt, drawn with --seed from fewshot_dataset or the task."""
    fewshot_dataset: str | None = None
    """JSONL of examples for few-shot prompts (default: other rows of the dataset)."""
    max_tokens: int = 32
    """Output tokens per generated answer."""
    temperature: float = 0.0
    """Sampling temperature (0: greedy, reproducible)."""
    stop: tuple[str, ...] = ()
    """Stop strings for generation."""
    limit: int | None = None
    """Use only the first N rows (also --limit)."""
    path: Path | None = None
    """Where the YAML was read from (set by load_task)."""

    def __post_init__(self) -> None:
        where = f"task {self.path or self.name}"
        if self.type not in TASK_TYPES:
            raise TaskConfigError(f"{where}: type must be one of {', '.join(TASK_TYPES)}")
        if self.api not in ("chat", "completions"):
            raise TaskConfigError(f"{where}: api must be chat or completions, not {self.api!r}")
        allowed = {*GENERATION_METRICS, "regex"}
        if unknown := set(self.metrics) - allowed:
            raise TaskConfigError(
                f"{where}: unknown metrics {sorted(unknown)}; choose from {sorted(allowed)}"
            )
        if "regex" in self.metrics and not self.regex:
            raise TaskConfigError(f"{where}: the regex metric needs a `regex:` pattern")
        if self.num_fewshot < 0 or self.max_tokens < 1:
            raise TaskConfigError(f"{where}: num_fewshot must be >= 0 and max_tokens >= 1")

    def dataset_path(self) -> Path:
        return _relative_to_task(self, self.dataset)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["path"] = str(self.path) if self.path else None
        return data


@dataclass(frozen=True)
class Sample:
    index: int
    row: dict = field(hash=False)


def load_task(name_or_path: str | Path, limit: int | None = None) -> TaskConfig:
    """Read a task YAML (a path, or the name of a built-in task)."""
    path = resolve_task_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise TaskConfigError(f"{path}: not valid YAML ({e})") from None
    known = {f.name for f in fields(TaskConfig)} - {"path"}
    if unknown := set(raw) - known:
        raise TaskConfigError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    for key in ("type", "dataset"):
        if key not in raw:
            raise TaskConfigError(f"{path}: missing `{key}:`")
    raw.setdefault("name", path.stem)
    for key in ("metrics", "stop"):
        if isinstance(raw.get(key), str):
            raw[key] = [raw[key]]
        if key in raw:
            raw[key] = tuple(raw[key])
    if limit is not None:
        raw["limit"] = limit
    return TaskConfig(**raw, path=path)


def resolve_task_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path.resolve()
    builtin = BUILTIN_TASKS_DIR / f"{name_or_path}.yaml"
    if builtin.is_file():
        return builtin
    raise TaskConfigError(
        f"no task file {str(name_or_path)!r} and no built-in task of that name "
        f"(built-in: {', '.join(builtin_task_names())})"
    )


def builtin_task_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_TASKS_DIR.glob("*.yaml"))


def load_samples(task: TaskConfig) -> list[Sample]:
    rows = read_jsonl(task.dataset_path())
    if task.limit is not None:
        rows = rows[: task.limit]
    return [Sample(i, row) for i, row in enumerate(rows)]


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise TaskConfigError(f"dataset {path} does not exist; fix `dataset:` in the task YAML")
    rows = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskConfigError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise TaskConfigError(f"{path}:{line_no}: each line must be a JSON object")
        rows.append(row)
    return rows


def dataset_sha256(task: TaskConfig) -> str:
    digest = hashlib.sha256(task.dataset_path().read_bytes())
    if task.fewshot_dataset:
        digest.update(_relative_to_task(task, task.fewshot_dataset).read_bytes())
    return digest.hexdigest()


def render_prompt(task: TaskConfig, row: dict) -> str:
    try:
        return task.prompt.format(**row)
    except (KeyError, IndexError) as e:
        raise TaskConfigError(
            f"task {task.name}: prompt template needs field {e} that a dataset row lacks "
            f"(row fields: {sorted(row)})"
        ) from None


def references(task: TaskConfig, row: dict) -> list[str]:
    if task.target not in row:
        raise TaskConfigError(f"task {task.name}: a row lacks the target field {task.target!r}")
    value = row[task.target]
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def fewshot_examples(task: TaskConfig, sample: Sample, pool: list[dict], seed: int) -> list[dict]:
    """``num_fewshot`` rows other than the sample itself, the same ones on every run and resume."""
    if task.num_fewshot == 0:
        return []
    candidates = [row for row in pool if row != sample.row]
    rng = random.Random(f"{seed}:{sample.index}")
    return rng.sample(candidates, min(task.num_fewshot, len(candidates)))


def fewshot_pool(task: TaskConfig) -> list[dict]:
    if task.fewshot_dataset:
        return read_jsonl(_relative_to_task(task, task.fewshot_dataset))
    return read_jsonl(task.dataset_path())


def example_answer(task: TaskConfig, row: dict) -> str:
    """The text that completes a few-shot example's prompt."""
    if task.type == "multiple_choice":
        return " " + str(row[task.choices][int(row[task.label])])
    return " " + references(task, row)[0]


def _relative_to_task(task: TaskConfig, name: str) -> Path:
    base = task.path.parent if task.path else Path.cwd()
    return (base / name).resolve()
