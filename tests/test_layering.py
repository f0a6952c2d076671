"""One-way layering of the ``bevlm`` package: no module imports a layer above its own.

Layers, lowest first (a module may import its own layer and any lower one)::

    0  structures, utils, registry, the package root
    1  datasets, models, world        (world: the mini-world generator, uses structures)
    2  evaluation, inference
    3  engine, visualization          (runners: checkpoints, datasets, evaluators, figures)
    4  testing                        (test fixtures; imported by nothing else in the package)

Every import is checked: module level and inside functions, ``import a.b`` and
``from . import x`` (relative forms resolved against the importing module's package).
``bevlm.registry`` names implementation modules in ``locations`` strings (mmengine imports them
on first build); that is the plugin mechanism by which a lower layer builds registered
components by type name (e.g. the self-speculative frame decoder of ``test_cfg``), not an
import, and is not checked here.
"""
from __future__ import annotations

import ast
import os

import pytest

from tests.conftest import REPO

PACKAGE_ROOT = os.path.join(REPO, "projects", "bevlm")

#: Layer of each top-level sub-package / module of ``bevlm``.
LAYERS: dict[str, int] = {
    "": 0, "structures": 0, "utils": 0, "registry": 0,
    "datasets": 1, "models": 1, "world": 1,
    "evaluation": 2, "inference": 2,
    "engine": 3, "visualization": 3,
    "testing": 4,
}

#: Modules whose layer is not their folder's. ``evaluation.drivelm_testset`` (the official
#: test-format question selection, standard library only) is data definition used by the dataset
#: (``BEVDriveDataset`` builds test-format frames with it) as well as by the metric, so it sits at
#: the datasets layer; this test holds it there (it may import only layers 0-1).
MODULE_LAYERS: dict[str, int] = {"bevlm.evaluation.drivelm_testset": 1}


def layer_of(module: str) -> int:
    """The layer of a ``bevlm`` module name (``bevlm.models.llm`` -> 1)."""
    for name, layer in MODULE_LAYERS.items():
        if module == name or module.startswith(name + "."):
            return layer
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    if top not in LAYERS:
        raise KeyError(f"bevlm.{top} has no layer: add it to LAYERS in tests/test_layering.py")
    return LAYERS[top]


def module_name(path: str) -> tuple[str, bool]:
    """``(dotted module name, is a package __init__)`` of a file under ``projects/bevlm``."""
    rel = os.path.relpath(path, os.path.dirname(PACKAGE_ROOT))[:-3].replace(os.sep, ".")
    if rel.endswith(".__init__"):
        return rel[: -len(".__init__")], True
    return rel, False


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[str, int]]:
    """Every ``bevlm`` module that ``source`` imports, anywhere in the file.

    Args:
        source: Python source text.
        module: the dotted name of the module the source belongs to (resolves relative imports).
        is_package: the source is a package ``__init__`` (``from . import x`` then means ``module.x``).

    Returns:
        ``(imported module, line)`` pairs; ``from a import b`` yields ``a.b`` (b may be a
        sub-module) and ``a`` both reduce to the layer of ``a``'s top package.
    """
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level - 1 > len(base) - 1:
                    raise ValueError(f"{module}: relative import beyond the top package (line {node.lineno})")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None:  # from . import x, y: the sub-modules themselves
                out += [(f"{target}.{alias.name}", node.lineno) for alias in node.names]
            else:
                out.append((target, node.lineno))
    return [(name, line) for name, line in out if name == "bevlm" or name.startswith("bevlm.")]


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """Upward imports of one module, and imports of ``bevlm.testing`` from outside it."""
    own = layer_of(module)
    found = []
    for target, line in imported_modules(source, module, is_package):
        is_testing = target == "bevlm.testing" or target.startswith("bevlm.testing.")
        if is_testing and not (module == "bevlm.testing" or module.startswith("bevlm.testing.")):
            found.append(f"{module}:{line} imports {target} (test fixtures; the package never imports them)")
        elif layer_of(target) > own:
            found.append(f"{module}:{line} (layer {own}) imports {target} (layer {layer_of(target)})")
    return found


def package_files() -> list[str]:
    """Every ``.py`` file of the package."""
    return sorted(os.path.join(d, f) for d, _, files in os.walk(PACKAGE_ROOT) for f in files if f.endswith(".py"))


def test_no_upward_imports():
    found = []
    for path in package_files():
        module, is_package = module_name(path)
        with open(path, encoding="utf-8") as f:
            found += violations(f.read(), module, is_package)
    assert not found, "imports against the layering (see tests/test_layering.py):\n" + "\n".join(found)


def test_every_sub_package_has_a_layer():
    tops = {module_name(p)[0].split(".")[1] for p in package_files() if module_name(p)[0] != "bevlm"}
    assert tops <= set(LAYERS), f"sub-packages without a layer: {sorted(tops - set(LAYERS))}"


@pytest.mark.parametrize("source, module, is_package, expected", [
    # an upward import at module level, inside a function, absolute and relative
    ("from bevlm.inference.variants import apply_variant\n", "bevlm.models.detectors.bev_vlm", False,
     "imports bevlm.inference.variants"),
    ("def f():\n    import bevlm.engine.benchmark\n", "bevlm.models.qa.policy", False, "imports bevlm.engine.benchmark"),
    ("def f():\n    from ...inference import speculative\n", "bevlm.models.qa.policy", False,
     "imports bevlm.inference (layer 2)"),
    ("from .. import engine\n", "bevlm.inference", True, "imports bevlm.engine"),
    # fixtures from production code
    ("from bevlm.testing import tiny_tokenizer\n", "bevlm.models.llm.loading", False, "imports bevlm.testing"),
])
def test_checker_reports_injected_upward_imports(source, module, is_package, expected):
    """The contract test fails on an upward import: the same checker flags synthetic sources."""
    found = violations(source, module, is_package)
    assert len(found) == 1 and expected in found[0], found


def test_checker_accepts_same_and_lower_layers():
    source = ("from bevlm.structures import QAItem\nfrom ..llm import HFCausalLM\n"
              "def f():\n    from bevlm.registry import MODELS\n")
    assert violations(source, "bevlm.models.qa.policy") == []
    assert violations("from bevlm.models import BEVVLM\n", "bevlm.testing.tiny_llm") == []
