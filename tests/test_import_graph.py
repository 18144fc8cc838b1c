"""The import graph of edge/, export/ and firmware_sim/: no cycle, and the device stays light.

Built with grimp (the graph library behind import-linter) from the source files, so it sees
every import statement: module level, inside functions and under `if TYPE_CHECKING:`. A lazy
import inside a function is still an edge of the graph, so it does not hide a cycle.

- no cycle: two modules that need one piece share it through a third, small module (as
  `edge.bundle_files` holds the file names and `BundleError` for `edge.bundle` and
  `edge.signing`); a package's `__init__` that imports its submodules keeps what they need in
  a submodule of its own (`firmware_sim.devices.base`).
- `edge/` (what the device installs) imports neither the trainer (`export`) nor the simulator
  (`firmware_sim`), nor TensorFlow/Keras or scikit-learn.
"""

from __future__ import annotations

import itertools

import grimp
import pytest

PACKAGES = ("edge", "export", "firmware_sim")
NOT_ON_THE_DEVICE = ("export", "firmware_sim", "tensorflow", "keras", "tf_keras", "sklearn")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, include_external_packages=True, cache_dir=None)


def _internal(module: str) -> bool:
    return module.split(".")[0] in PACKAGES


def _where(graph: grimp.ImportGraph, importer: str, imported: str) -> str:
    lines = graph.get_import_details(importer=importer, imported=imported)
    return "; ".join(f"line {d['line_number']}: {d['line_contents']}" for d in lines)


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """One shortest cycle per set of modules: for each import a -> b, the shortest chain
    b -> ... -> a closes one."""
    seen: set[frozenset[str]] = set()
    cycles: list[list[str]] = []
    for importer in sorted(m for m in graph.modules if _internal(m)):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if not _internal(imported):
                continue
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is None:
                continue
            cycle = [importer, *back]  # importer -> imported -> ... -> importer
            key = frozenset(cycle)
            if key not in seen:
                seen.add(key)
                cycles.append(cycle)
    return cycles


def test_the_graph_sees_imports_inside_functions(graph: grimp.ImportGraph) -> None:
    """The check below is only as good as the graph: `edge.cli` imports `edge.replay` inside
    a function only."""
    assert graph.direct_import_exists(importer="edge.cli", imported="edge.replay")


def test_no_import_cycle(graph: grimp.ImportGraph) -> None:
    cycles = import_cycles(graph)
    report = []
    for cycle in cycles:
        steps = [f"  {a} -> {b} ({_where(graph, a, b)})" for a, b in itertools.pairwise(cycle)]
        report.append(" -> ".join(cycle) + "\n" + "\n".join(steps))
    assert not cycles, (
        "import cycles (move what both modules need into a small module of its own; a lazy "
        "import does not remove the cycle):\n" + "\n".join(report))


def test_edge_imports_neither_trainer_simulator_nor_training_stack(
        graph: grimp.ImportGraph) -> None:
    bad = []
    for importer in sorted(graph.find_descendants("edge") | {"edge"}):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if imported.split(".")[0] in NOT_ON_THE_DEVICE:
                bad.append(f"{importer} -> {imported} ({_where(graph, importer, imported)})")
    assert not bad, "edge/ must run without the trainer's packages:\n" + "\n".join(bad)
