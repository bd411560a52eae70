"""Dependencies point one way: tools -> pipeline -> {bottlenecks, tfrecords}; inside pipeline,
demo -> analysis -> training -> offline -> the root modules (config, errors, backbones, ...). No
module uses another module's private names."""

import ast
import os

import pytest

from tests import conftest

PACKAGES = ("tools", "pipeline", "bottlenecks", "tfrecords")
# What each top-level package may import of the project (itself always); the benchmarks measure the
# lower layers directly.
ALLOWED = {
    "tools": {"tools", "pipeline"},
    "pipeline": {"pipeline", "bottlenecks", "tfrecords"},
    "bottlenecks": {"bottlenecks"},
    "tfrecords": {"tfrecords"},
    "tools.benchmarks": {"tools", "pipeline", "bottlenecks", "tfrecords"},
}
# Modules directly under pipeline/ (config, errors, backbones, plots, interrupt) are its root layer,
# 0.
PIPELINE_LAYERS = {"offline": 1, "training": 2, "analysis": 3, "demo": 4}


def project_imports(source: str, module: str) -> list[tuple[int, str]]:
    """(line, imported project module) for every import in source, function bodies included."""
    found = []
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.extend((node.lineno, name) for name in names if name.split(".")[0] in PACKAGES)
    return found


def _pipeline_layer(module: str) -> int:
    parts = module.split(".")
    return PIPELINE_LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def _package(module: str) -> str:
    return "tools.benchmarks" if module.startswith("tools.benchmarks") else module.split(".")[0]


def violations(source: str, module: str) -> list[str]:
    """Every import of `module` (dotted name) that points against the one-way dependencies."""
    problems = []
    top = _package(module)
    for line, imported in project_imports(source, module):
        imported_top = imported.split(".")[0]
        if imported_top not in ALLOWED[top]:
            problems.append(
                f"{module}:{line} imports {imported} ({top} may import only {sorted(ALLOWED[top])})"
            )
        elif top == imported_top == "pipeline" and _pipeline_layer(imported) > _pipeline_layer(
            module
        ):
            problems.append(
                f"{module}:{line} imports {imported}, a higher layer of pipeline "
                f"(demo -> analysis -> training -> offline)"
            )
    return problems


def private_uses(source: str, module: str) -> list[str]:
    """Every use in `module` of another project module's private name: `from x import _name`,
    `alias._name`."""
    tree = ast.parse(source)
    aliases = {}  # name bound in this module -> the project module it is
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if (
                    alias.name.split(".")[0] in PACKAGES
                ):  # `import a.b` binds a, and a.b names the module
                    aliases[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PACKAGES:
            for alias in node.names:
                if _private(alias.name):
                    problems.append(
                        f"{module}:{node.lineno} imports {node.module}.{alias.name}, a private name"
                    )
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and _dotted(node.value) in aliases
            and _private(node.attr)
        ):
            problems.append(
                f"{module}:{node.lineno} uses {aliases[_dotted(node.value)]}.{node.attr}, a "
                "private name"
            )
    return problems


def _dotted(node) -> str | None:
    """a.b.c for the expression a.b.c, None for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


TESTED_PACKAGES = PACKAGES + ("tests",)


def _modules(packages=PACKAGES):
    for package in packages:
        for root, _, files in os.walk(os.path.join(conftest.PROJECT_ROOT, package)):
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(root, name)
                    relative = os.path.relpath(path, conftest.PROJECT_ROOT)[:-3].replace(
                        os.sep, "."
                    )
                    yield path, relative.removesuffix(".__init__")


def test_every_import_points_one_way():
    problems = []
    for path, module in _modules():
        with open(path, encoding="utf-8") as file:
            problems.extend(violations(file.read(), module))
    assert not problems, "\n".join(problems)


def test_no_module_uses_another_modules_private_names():
    problems = []
    for path, module in _modules(TESTED_PACKAGES):
        with open(path, encoding="utf-8") as file:
            problems.extend(private_uses(file.read(), module))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "source",
    [
        "from pipeline.offline import job\njob._manifest(1)\n",
        "from tfrecords.writer import _check_compression\n",
        "import tools.flags\ntools.flags._instantiate\n",
    ],
)
def test_a_private_use_is_caught(source):
    assert len(private_uses(source, "pipeline.analysis.report")) == 1


def test_own_and_public_names_pass():
    source = (
        "from pipeline.offline import job\njob.make_tfrecords(1)\nvalue = '_x'\nclass A:\n   "
        " _b = 1\nA._b\n"
    )
    assert private_uses(source, "pipeline.analysis.report") == []


def test_the_training_export_never_imports_the_stage_loop():
    with open(
        os.path.join(conftest.PROJECT_ROOT, "pipeline", "training", "export.py"), encoding="utf-8"
    ) as file:
        imported = {name for _, name in project_imports(file.read(), "pipeline.training.export")}
    assert "pipeline.training.train" not in imported


@pytest.mark.parametrize(
    "module, source, expected",
    [
        (
            "pipeline.training.topology",
            "def f():\n    from pipeline.analysis import evaluate\n",
            "higher layer",
        ),
        ("pipeline.offline.job", "from pipeline.training import train\n", "higher layer"),
        ("bottlenecks.cut", "import tfrecords.reader\n", "bottlenecks may import only"),
        ("tfrecords.reader", "from pipeline import config\n", "tfrecords may import only"),
        ("tools.make_tfrecords", "from bottlenecks import registry\n", "tools may import only"),
        ("pipeline.config", "from tools import demo\n", "pipeline may import only"),
    ],
)
def test_a_backward_import_is_caught(module, source, expected):
    problems = violations(source, module)
    assert len(problems) == 1 and expected in problems[0]


def test_the_benchmarks_may_measure_the_lower_layers():
    assert (
        violations(
            "from bottlenecks import registry\nfrom tfrecords import reader\n",
            "tools.benchmarks.bench_train",
        )
        == []
    )


def test_forward_imports_pass():
    assert (
        violations(
            "from pipeline.offline import ladder\nfrom tfrecords import reader\n",
            "pipeline.analysis.evaluate",
        )
        == []
    )


MAX_MODULE_LINES = 400
LIBRARY_PACKAGES = ("pipeline", "bottlenecks", "tfrecords")


def test_every_library_module_is_under_400_lines():
    too_long = []
    for path, module in _modules(LIBRARY_PACKAGES):
        with open(path, encoding="utf-8") as file:
            lines = sum(1 for _ in file)
        if lines >= MAX_MODULE_LINES:
            too_long.append(f"{module}: {lines} lines (split it by job)")
    assert not too_long, "\n".join(too_long)


def manifest_reads(source: str) -> list[int]:
    """The lines of every call of `<something>.Manifest.read(...)` or `Manifest.read(...)`."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "read"
        and (_dotted(node.func.value) or "").split(".")[-1] == "Manifest"
    ]


def test_a_manifest_read_is_found():
    source = "from tfrecords import manifest\nm = manifest.Manifest.read(p)\nx = open(p).read()\n"
    assert manifest_reads(source) == [2]


def test_the_manifest_is_read_at_eight_places_at_most():
    """Each job reads its records' manifest once and passes it down."""
    sites = []
    for path, module in _modules(LIBRARY_PACKAGES + ("tools",)):
        if module.startswith("tools.benchmarks"):
            continue
        with open(path, encoding="utf-8") as file:
            sites.extend(f"{module}:{line}" for line in manifest_reads(file.read()))
    assert len(sites) <= 8, "\n".join(sites)
