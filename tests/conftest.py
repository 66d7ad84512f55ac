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
