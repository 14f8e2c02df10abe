"""The layout shows the architecture: no import cycle among the project's modules (imports
inside functions count too), and the model world never imports the real world."""

from pathlib import Path

from tests.test_layers import _imports, _module_name

ROOT = Path(__file__).resolve().parents[1]


def _graph() -> dict[str, set[str]]:
    files = [*(ROOT / "sim").rglob("*.py"), *(ROOT / "runner").rglob("*.py")]
    mods = {_module_name(f): f for f in files}
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        for target in _imports(f):
            # "from pkg import mod" names the module; "from pkg.mod import x" the module too
            hit = target if target in mods else target.rpartition(".")[0]
            if hit in mods and hit != m:
                graph[m].add(hit)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return [*stack[stack.index(w) :], w]
            if w not in state and (found := visit(w)) is not None:
                return found
        state[v] = 2
        stack.pop()
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)) is not None:
            return found
    return None


def test_no_import_cycle():
    graph = _graph()
    assert len(graph) > 40  # the walk found the modules
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_walk_finds_a_cycle_when_there_is_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_sim_imports_nothing_from_runner():
    bad = [(m, t) for m, ts in _graph().items() if m.startswith("sim") for t in ts]
    assert not [(m, t) for m, t in bad if t.startswith("runner")]
