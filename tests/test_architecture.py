"""The package's structure stays true: one-way layers, public names an editor can follow, a cheap ``import siglip``,
and loading that resolves a checkpoint once. ``docs/ARCHITECTURE.md`` describes the same stack as ``LAYERS``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "siglip"

# Bottom to top: a module may import (at module level or inside a function) only modules listed before it.
# ``siglip/__init__.py`` is the facade over all of them and is imported by none.
LAYERS = [
    # files and small helpers that know nothing of models
    "version",
    "files",
    "batch_feature",
    "progress",
    "activations",
    "loss",
    # configs, weights, models
    "config",
    "weights",
    "quantization",
    "modeling_utils",
    "modeling_siglip",
    "modeling_siglip2",
    "optimization",
    # preprocessing
    "image_io",
    "image_utils",
    "tokenization_utils",
    "tokenization",
    "image_processing",
    # which class a checkpoint wants, then what is built from several parts
    "auto",
    "processing",
    "onnx_backend",
    "pipelines",
    # batch jobs and commands
    "data",
    "store",
    "index",
    "dedup",
    "jobs",
    "export",
    "evaluation",
    "distributed",
    "cli_utils",
    "train.config",
    "train.data",
    "train.trainer",
    "train.hf_trainer",
    "train.cli",
    "train",
    "train.__main__",
    "serve",
    "cli",
    "__main__",
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path, modules: set[str]) -> set[str]:
    """Every siglip module ``name`` imports, wherever the import statement is (module level or in a function)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("siglip"):
                target = node.module.removeprefix("siglip").lstrip(".")
            else:
                continue
            candidates = [f"{target}.{alias.name}".strip(".") for alias in node.names]
            found |= {c for c in candidates if c in modules} or {target}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("siglip."):
                    found.add(alias.name.removeprefix("siglip."))
                elif alias.name == "siglip":
                    found.add("")
    return {m for m in found if m != name}


def test_every_module_has_a_layer():
    modules = set(_modules())
    assert modules - {""} == set(LAYERS), "add new modules to LAYERS (and docs/ARCHITECTURE.md)"


def test_imports_point_down_and_nothing_imports_the_package():
    modules = _modules()
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = []
    for name, path in modules.items():
        if name == "":
            continue
        for target in _imports(name, path, set(modules)):
            if target == "" or target not in rank:
                upward.append(f"{name} imports the package facade ({target or 'siglip'})")
            elif rank[target] >= rank[name]:
                upward.append(f"{name} -> {target}")
    assert not upward, "imports that point up (or sideways) in LAYERS: " + ", ".join(sorted(upward))


def test_public_names_are_static_and_lazy_lists_agree():
    """The TYPE_CHECKING imports (what editors follow) and the lazy table name the same objects."""
    import siglip

    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    static: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom)
                for alias in imp.names:
                    static[alias.name] = imp.module
    assert static == siglip._EXPORTS
    assert set(siglip.__all__) == set(static) | {"__version__"}
    for name, module in static.items():
        assert getattr(siglip, name) is getattr(__import__(f"siglip.{module}", fromlist=[name]), name)


def test_import_siglip_stays_cheap():
    code = (
        "import sys, time; t = time.perf_counter(); import siglip; dt = time.perf_counter() - t; "
        "heavy = {'torch', 'numpy', 'PIL', 'transformers'} & set(sys.modules); print(dt, sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1:] == ["[]"], f"import siglip pulled in {out[1:]}"
    assert float(out[0]) < 0.5


def test_a_pipeline_resolves_once_and_parses_each_file_once(monkeypatch, tmp_path):
    """`siglip.pipeline(model=name)` goes to the hub (or the disk) once, and reads each JSON file once."""
    import siglip
    from siglip import files

    from builders import write_checkpoint

    folder = write_checkpoint(tmp_path / "ck", "siglip2", seed=1)
    resolves, reads = [], []
    resolve, read = files.resolve_folder, files.read_json_object

    def counting_resolve(*args, **kwargs):
        resolves.append(args[0])
        return resolve(*args, **kwargs)

    def counting_read(path, *args, **kwargs):
        reads.append(Path(path).name)
        return read(path, *args, **kwargs)

    monkeypatch.setattr(files, "resolve_folder", counting_resolve)
    monkeypatch.setattr(files, "read_json_object", counting_read)
    pipe = siglip.pipeline("zero-shot-image-classification", model=str(folder))
    assert resolves == [str(folder)]
    assert sorted(reads) == sorted(set(reads)) and {"config.json", "tokenizer_config.json"} <= set(reads)
    assert pipe.model.name_or_path == str(folder)


def test_lint_and_format_are_clean():
    """``ruff check`` and ``ruff format --check`` at line length 120 (pyproject.toml), over the whole tree."""
    root = PACKAGE.parents[1]
    for command in (["check"], ["format", "--check"]):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", *command, "src", "tests", "benchmarks", "scripts"],
            cwd=root,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]
