"""The package's structure: no import cycles, reference tables shipped and identical to the
repository's editable copy, a non-editable install that finds them from anywhere."""

import ast
import filecmp
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bench"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path, name: str) -> set[str]:
    """bench.* modules imported at module level (imports inside functions are lazy)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("bench")}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            if module.startswith("bench"):
                found.add(module)
                found |= {f"{module}.{a.name}" for a in node.names}
    return found


def test_every_module_imports_and_no_import_cycles():
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    for name in modules:
        if name != "bench.__main__":  # runs the CLI
            importlib.import_module(name)
    graph = {name: {m for m in _top_level_imports(path, name) if m in modules and m != name}
             for name, path in modules.items()}

    def visit(node, stack, done):
        if node in stack:
            cycle = stack[stack.index(node):] + [node]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if node in done:
            return
        for nxt in sorted(graph[node]):
            visit(nxt, stack + [node], done)
        done.add(node)

    done: set[str] = set()
    for name in sorted(graph):
        visit(name, [], done)
    assert "bench.runner" not in graph["bench.executors"]
    assert "bench.runner" not in graph["bench.jobs"]


def test_packaged_reference_tables_equal_the_repository_copy():
    packaged = sorted(p.name for p in (PACKAGE / "reference").glob("*.csv"))
    editable = sorted(p.name for p in (ROOT / "results" / "reference").glob("*.csv"))
    assert packaged == editable and packaged
    for name in packaged:
        assert filecmp.cmp(PACKAGE / "reference" / name, ROOT / "results" / "reference" / name,
                           shallow=False), name


@pytest.mark.slow
def test_non_editable_install_compares_from_another_directory(tmp_path):
    """`pip install .` (a wheel, not a link to the source tree), then `bench compare` run from
    elsewhere: the reference tables come with the package."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(ROOT)], check=True, capture_output=True)
    assert (target / "bench" / "reference" / "one-class_fashion-mnist.csv").exists()
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "BENCH_DATA": str(tmp_path / "nodata")}
    code = ("import bench, sys; assert bench.__file__.startswith(sys.argv[1]), bench.__file__; "
            "from bench.cli import main; main(sys.argv[2:])")
    made = subprocess.run([sys.executable, "-c", code, str(target), "run", "--methods", "knn",
                           "--datasets", "digits", "--classes", "0", "--out", "runs"],
                          cwd=run_dir, env=env, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    done = subprocess.run([sys.executable, "-c", code, str(target), "compare", "--runs", "runs"],
                          cwd=run_dir, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    listed = subprocess.run([sys.executable, "-c", code, str(target), "compare", "--runs", "runs",
                             "--reference-dir", str(tmp_path / "none")],
                            cwd=run_dir, env=env, capture_output=True, text=True)
    assert listed.returncode == 2 and "not a folder" in listed.stderr


def test_committed_leaderboards_regenerate_byte_for_byte_from_committed_rows(tmp_path):
    """results/leaderboard is what `bench leaderboard --rows results/rows` writes, byte for byte."""
    from bench.cli import main

    rows, board = ROOT / "results" / "rows", ROOT / "results" / "leaderboard"
    assert sorted(rows.glob("*.csv")), "results/rows holds no rows files"
    with pytest.raises(SystemExit) as info:
        main(["leaderboard", "--rows", str(rows), "--out", str(tmp_path), "--force"])
    assert info.value.code == 0
    made_from = ".made-from.json"  # each folder's own record of its sources
    committed = sorted(p.name for p in board.iterdir() if p.name != made_from)
    assert committed == sorted(p.name for p in tmp_path.iterdir() if p.name != made_from)
    for name in committed:
        assert (tmp_path / name).read_bytes() == (board / name).read_bytes(), name


def test_committed_rows_are_sorted_and_in_todays_schema():
    import pandas as pd

    from bench.store import ROW_COLUMNS, read_rows, sort_rows

    paths = sorted((ROOT / "results" / "rows").rglob("*.csv"))
    assert paths
    for path in paths:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
        assert list(raw.columns) == ROW_COLUMNS, path.name
        rows = read_rows(path)
        assert rows.equals(sort_rows(rows)), f"{path.name} is not sorted"
        protocol, dataset, preset = path.stem.split("_")
        assert set(rows["protocol"]) == {protocol} and set(rows["dataset"]) == {dataset}
        assert set(rows["preset"]) == {preset}


def test_committed_comparison_with_published_numbers_regenerates(capsys):
    """results/compare/published_side_by_side.md is what `bench compare --rows results/rows
    --ours all --side-by-side` prints."""
    from bench.cli import main

    committed = ROOT / "results" / "compare" / "published_side_by_side.md"
    assert committed.exists()
    with pytest.raises(SystemExit) as info:
        main(["compare", "--rows", str(ROOT / "results" / "rows"), "--ours", "all",
              "--side-by-side"])
    assert info.value.code == 0
    assert capsys.readouterr().out == committed.read_text()


def _pdf_objects_but_font_programs(pdf: bytes) -> dict[int, bytes]:
    """A PDF's objects by number, less the embedded font programs (the streams with /Length1):
    fontTools subsets those, and its releases change their bytes, not what the page draws."""
    import re

    objects = {int(m.group(1)): m.group(2)
               for m in re.finditer(rb"(?s)(\d+) 0 obj\n(.*?)endobj", pdf)}
    assert objects, "no PDF objects found"
    return {n: body for n, body in objects.items() if not body.startswith(b"<< /Length1 ")}


def test_committed_significance_and_report_regenerate_from_committed_rows(tmp_path):
    """The CD diagrams' p-values and notes, and results/report/index.html, are what `bench
    figures --figure cd` and `bench report` write from results/rows, byte for byte."""
    from bench.cli import main

    rows, figs = ROOT / "results" / "rows", ROOT / "results" / "figures"
    with pytest.raises(SystemExit) as info:
        main(["figures", "--rows", str(rows), "--figure", "cd", "--out", str(tmp_path / "f")])
    assert info.value.code == 0
    for path in sorted(figs.glob("critical_difference_*")):
        made, committed = (tmp_path / "f" / path.name).read_bytes(), path.read_bytes()
        if path.suffix == ".pdf":
            made, committed = _pdf_objects_but_font_programs(made), _pdf_objects_but_font_programs(committed)
        assert made == committed, path.name
    with pytest.raises(SystemExit) as info:
        main(["report", "--rows", str(rows), "--rows", str(rows / "ablation"),
              "--out", str(tmp_path / "r")])
    assert info.value.code == 0
    committed = ROOT / "results" / "report" / "index.html"
    assert (tmp_path / "r" / "index.html").read_bytes() == committed.read_bytes()


def _documented_imports() -> dict[str, set[str]]:
    """The imports column of docs/architecture.md: {module or package/: {bench modules}}."""
    table = {}
    for line in (ROOT / "docs" / "architecture.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and cells[0] != "`module`":
            name = cells[0].strip("`")
            table[name] = set() if cells[2] in ("-", "") else {c.strip() for c in cells[2].split(",")}
    return table


def test_every_committed_result_file_was_written_by_bench_from_named_sources():
    """Each file of a committed results folder is in its .made-from.json: made by a writer
    that recorded its rows and runs, not left over from a run no experiment declares (the
    per-job figures of earlier code's jobs were)."""
    import json

    manifests = sorted((ROOT / "results").rglob(".made-from.json"))
    assert manifests
    for manifest in manifests:
        made = json.loads(manifest.read_text())
        files = {p.name for p in manifest.parent.iterdir()
                 if p.is_file() and not p.name.startswith(".") and p.name != "README.md"}
        assert files <= set(made), (manifest.parent, sorted(files - set(made)))
        assert set(made) <= files | {"README.md"}, (manifest.parent, sorted(set(made) - files))

def test_the_architecture_doc_names_each_modules_imports():
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    documented = _documented_imports()
    checked = 0
    for entry, claimed in documented.items():
        if entry in ("presets/", "reference/"):
            continue
        if entry.endswith("/"):
            package = "bench." + entry.rstrip("/")
            members = [m for m in modules if m == package or m.startswith(package + ".")]
        else:
            package = "bench." + entry.removesuffix(".py")
            members = [package]
        found = set()
        for m in members:
            for imported in _top_level_imports(modules[m], m):
                if imported in modules and imported != "bench" and not (imported == package
                                                or imported.startswith(package + ".")):
                    found.add(imported.split(".")[1])
        assert found == claimed, (entry, sorted(found), sorted(claimed))
        checked += 1
    assert checked >= 15


def test_the_version_has_one_source():
    """pyproject reads bench.__version__; `bench --version` prints it; CITATION.cff names it."""
    import re
    import subprocess
    import sys

    import bench

    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and 'attr = "bench.__version__"' in pyproject
    project = pyproject.split("[project]")[1].split("\n[")[0]
    assert not re.search(r"^version\s*=", project, re.M)
    out = subprocess.run([sys.executable, "-m", "bench", "--version"], capture_output=True,
                         text=True, cwd=ROOT).stdout
    assert bench.__version__ in out
    assert f'version: "{bench.__version__}"' in (ROOT / "CITATION.cff").read_text()
    assert "MIT License" in (ROOT / "LICENSE").read_text()
