import os
import sys

# The repository root is the `zipar` package; make `import zipar` work when it is not installed.
_here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if "zipar" not in sys.modules:
    try:
        import zipar  # noqa: F401
    except ImportError:
        import importlib.util

        spec = importlib.util.spec_from_file_location("zipar", os.path.join(_here, "__init__.py"),
                                                      submodule_search_locations=[_here])
        module = importlib.util.module_from_spec(spec)
        sys.modules["zipar"] = module
        spec.loader.exec_module(module)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


import pytest  # noqa: E402


@pytest.fixture
def emulated_cuda_graphs(monkeypatch):
    """The CUDA-graph path of zipar_core.step_runner with capture and replay emulated on CPU: "capture" runs
    the step once into a static output, "replay" reruns it from the static inputs and refills that output.
    Yields the list of captured output shapes (one per graph)."""
    from zipar.zipar_core import step_runner

    captured = []

    def emulated_record(step, pool=None):
        assert pool == "one pool"  # every graph of a run shares one memory pool
        output = step().clone()
        captured.append(tuple(output.shape))
        return (lambda: output.copy_(step())), output

    monkeypatch.setattr(step_runner, "graphs_available", lambda device: True)
    monkeypatch.setattr(step_runner.torch.cuda, "graph_pool_handle", lambda: "one pool")
    monkeypatch.setattr(step_runner, "record_cuda_graph", emulated_record)
    return captured
