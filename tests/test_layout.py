"""The house rules that keep the tree walkable: imports point down, no cycles, a short CLI."""
import ast
import glob
import os

from helpers import ROOT

# Lower layers never import higher ones; a module may import its own layer or below.
LAYERS = [
    {"core"},
    {"fileio"},
    {"models", "losses"},
    {"dataio"},
    {"datasets"},
    {"config"},
    {"runtime"},
    {"evaluation"},
    {"engine"},
    {"serving"},
    {"train", "compare_embeddings", "explore", "score"},
]


def product_modules() -> dict[str, str]:
    """Dotted module name -> path, for the product's code (not tests, benchmarks, notebooks)."""
    out = {}
    for path in glob.glob(os.path.join(ROOT, "*.py")) + glob.glob(os.path.join(ROOT, "*", "*.py")):
        rel = os.path.relpath(path, ROOT)
        if rel.split(os.sep)[0] in ("tests", "benchmarks", "notebooks", "docs"):
            continue
        name = rel[:-3].replace(os.sep, ".").removesuffix(".__init__")
        out[name] = path
    return out


def imports_of(path: str, modules: dict[str, str]) -> set[str]:
    """The product modules a file imports (at any depth of the file)."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found |= {n for n in names if n in modules}
    return found


def layer(module: str) -> int:
    top = module.split(".")[0]
    return next(i for i, names in enumerate(LAYERS) if top in names)


def test_imports_point_down_and_have_no_cycles():
    modules = product_modules()
    graph = {m: imports_of(p, modules) - {m} for m, p in modules.items()}
    upward = [(m, d) for m, deps in graph.items() for d in deps if layer(d) > layer(m)]
    assert not upward, f"upward imports: {upward}"

    def visit(m, stack):
        assert m not in stack, f"import cycle: {' -> '.join(stack + [m])}"
        for d in graph[m]:
            if not d.startswith(m + "."):  # a package importing its own modules is not a cycle
                visit(d, stack + [m])

    for m in graph:
        visit(m, [])


def test_models_import_nothing_but_torch_and_each_other():
    modules = product_modules()
    for m, path in modules.items():
        if m.startswith("models"):  # and the decoder's output layout, which lives with the likelihood, and
            # the floor below them all (core: a family's settings are bounded by core/limits.py)
            below = {d.split(".")[0] for d in imports_of(path, modules) - {"losses.pixel_layout"}}
            assert below <= {"models", "core"}, m


def test_the_top_level_keeps_the_products_shape():
    top = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "*.py")))
    clis = {"train.py", "compare_embeddings.py", "explore.py", "score.py"}
    assert set(top) - clis - {"datasets.py"} == {"engine.py"}, top
    assert sum(1 for _ in open(os.path.join(ROOT, "train.py"))) <= 300
    assert sum(1 for _ in open(os.path.join(ROOT, "explore.py"))) <= 80  # only the CLI: the page is serving/


MAX_FUNCTION_LINES = 60  # a function longer than a screen is split into named steps


def test_no_product_function_is_longer_than_a_screen():
    long = []
    for path in sorted(product_modules().values()):
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_training_loop_imports_nothing_from_evaluation():
    # the loop knows the objective's interface and the declared metrics (runtime/), never a report of evaluation/,
    # through any module it imports
    modules = product_modules()
    seen, todo = set(), ["engine"]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += sorted(imports_of(modules[m], modules))
    assert "evaluation" in {m.split(".")[0] for m in modules}  # the check below can fail
    reached = sorted(m for m in seen if m.split(".")[0] == "evaluation")
    assert not reached, f"engine.py imports (directly or through other modules) {reached}"
