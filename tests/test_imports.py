"""The package's import arrows point one way: no cycles (deferred imports inside functions count too),
and the training layers import only downwards (fold <- stacked <- schedule <- train; inference never imports them)."""
import ast
import subprocess
import sys
from pathlib import Path

import aus_lib

PACKAGE = Path(aus_lib.__file__).parent


def import_graph() -> dict[str, set[str]]:
    """module -> the aus_lib modules it imports anywhere in its source (``aus_lib.x`` written as ``x``)."""
    graph = {}
    for path in PACKAGE.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "aus_lib":
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aus_lib."):
                imported.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                imported |= {a.name.split(".")[1] for a in node.names if a.name.startswith("aus_lib.")}
        graph[path.stem] = imported - {path.stem}
    return graph


def cycle_in(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return trail[trail.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, trail + [nxt])):
                return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_cycle_finder_finds_a_cycle():
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle_in({"a": {"b"}, "b": set()}) is None


def test_the_package_has_no_import_cycle():
    assert cycle_in(import_graph()) is None


def test_training_layers_import_only_downwards():
    graph = import_graph()
    assert not {"stacked", "schedule", "train"} & reachable(graph, "fold")
    assert not {"schedule", "train"} & reachable(graph, "stacked")
    assert "train" not in reachable(graph, "schedule")
    assert not {"fold", "stacked", "schedule", "train"} & reachable(graph, "inference")
    assert not {"fold", "stacked", "schedule", "train"} & reachable(graph, "checkpoints")


TRAIN_AND_WATCH = """
import sys
from aus_lib import dataset, train
from aus_lib.config import load_config
aus_dir, params, out = sys.argv[1:4]
manifest = dataset.build_manifest(aus_dir, progress=False)
seen = []
def watch(k, epoch, row):
    seen.append([m for m in ('matplotlib', 'seaborn', 'sklearn') if m in sys.modules])
train.train_cv(load_config(params, {'epochs': 2, 'kfolds': 2, 'num_threads': 2}), manifest, out, progress=False,
               on_epoch_end=watch)
assert seen and not any(seen), seen
assert 'matplotlib' in sys.modules  # the figures, drawn after training
"""


def test_training_runs_without_plotting_or_scikit_learn_loaded(tiny_synthetic, tiny_params, tmp_path):
    """Memory a training process would hold while its folds train: matplotlib (~30 MB, the fold figures are
    drawn after training) and scikit-learn (~70 MB, validation metrics are computed in numpy). Checked after
    every epoch of a real CV in a fresh process, so a deferred import during training counts too."""
    subprocess.run([sys.executable, "-c", TRAIN_AND_WATCH, str(tiny_synthetic), str(tiny_params), str(tmp_path / "run")],
                   check=True, cwd=Path(__file__).resolve().parents[1])
