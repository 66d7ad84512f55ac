"""The node pack against the schema a ComfyUI frontend validates node definitions with (skipped unless
ZIPAR_COMFYUI_FRONTEND names a comfyui-frontend-package wheel or its installed ``comfyui_frontend_package`` folder).

    pip download --no-deps comfyui-frontend-package==1.58.1 -d /tmp/fe
    ZIPAR_COMFYUI_FRONTEND=/tmp/fe/comfyui_frontend_package-1.58.1-py3-none-any.whl pytest tests/test_comfyui_frontend.py

The frontend's own TypeScript sources ship inside its source maps; this test reads ``nodeDefSchema.ts`` (the zod
schema every node definition from /object_info is parsed with) and the template store, and checks that every
input of every node of the pack has a type the schema takes (a widget type, the legacy combo list, or a custom
socket type), only option keys that schema declares for that type (not merely let through), defaults inside
[min, max], and that the template thumbnails are the ``.jpg`` the template browser asks for. A frontend that
dropped something the pack relies on (the legacy combo syntax, the ``advanced`` flag, ...) fails here.
"""
import glob
import json
import os
import re
import zipfile

import pytest
from zipar.nodes import NODE_CLASS_MAPPINGS

FRONTEND = os.environ.get("ZIPAR_COMFYUI_FRONTEND")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(not FRONTEND, reason="set ZIPAR_COMFYUI_FRONTEND to a comfyui-frontend-package")


def _source_maps():
    if FRONTEND.endswith(".whl"):
        with zipfile.ZipFile(FRONTEND) as z:
            for name in z.namelist():
                if name.endswith(".js.map"):
                    yield z.read(name)
    else:
        for path in glob.glob(os.path.join(FRONTEND, "**", "*.js.map"), recursive=True):
            with open(path, "rb") as f:
                yield f.read()


@pytest.fixture(scope="module")
def sources() -> dict:
    found = {}
    for raw in _source_maps():
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        for path, text in zip(data.get("sources", []), data.get("sourcesContent") or []):
            if text and "node_modules" not in path:
                found.setdefault(path.split("/")[-1], text)
    assert "nodeDefSchema.ts" in found, "no nodeDefSchema.ts in the frontend's source maps"
    return found


def _object_keys(schema: str, const: str) -> tuple[set[str], str | None]:
    """The keys a zod object constant declares, and the constant it extends (None: a base object)."""
    m = re.search(rf"const {const} = (?:(\w+)\.extend\(\{{|z\s*\.object\(\{{)(.*?)\n {{0,2}}\}}\)", schema, re.S)
    assert m, f"{const} not found in the frontend's schema"
    return set(re.findall(r"^\s{2,4}(\w+): ", m.group(2), re.M)), m.group(1)


def _allowed(schema: str, const: str) -> set[str]:
    keys, parent = _object_keys(schema, const)
    return keys | (_allowed(schema, parent) if parent else set())


def test_every_input_is_one_the_frontend_schema_declares(sources):
    schema = sources["nodeDefSchema.ts"]
    options = {"INT": "zIntInputOptions", "FLOAT": "zFloatInputOptions", "BOOLEAN": "zBooleanInputOptions",
               "STRING": "zStringInputOptions", "COMBO": "zComboInputOptions"}
    allowed = {kind: _allowed(schema, const) for kind, const in options.items()}
    custom = _allowed(schema, "zBaseInputOptions")
    assert "zComboInputSpec = zInputSpecTuple(\n  z.array(zComboOption)" in schema  # the legacy combo list
    assert "zCustomInputSpec" in schema and "zInputSpec = z.union" in schema
    checked = 0
    for name, cls in NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        for group in ("required", "optional"):
            for input_name, entry in spec.get(group, {}).items():
                kind, opts = entry[0], (entry[1] if len(entry) > 1 else {})
                kind = "COMBO" if isinstance(kind, list) else kind
                keys = allowed.get(kind, custom)
                assert set(opts) <= keys, f"{name}.{input_name}: {sorted(set(opts) - keys)} not in the schema"
                if kind == "COMBO":
                    assert entry[0] and all(isinstance(v, (str, int, float)) for v in entry[0])
                    assert opts.get("default", entry[0][0]) in entry[0], f"{name}.{input_name}"
                if kind in ("INT", "FLOAT") and "default" in opts:
                    assert opts.get("min", -float("inf")) <= opts["default"] <= opts.get("max", float("inf"))
                checked += 1
    assert checked > 20


def test_template_thumbnails_are_what_the_template_browser_asks_for(sources):
    store = sources["workflowTemplatesStore.ts"]
    subtypes = set(re.findall(r"mediaSubtype: '(\w+)'", store))
    assert subtypes == {"jpg"}, subtypes
    workflows = glob.glob(os.path.join(ROOT, "workflows", "*.json"))
    assert workflows
    for path in workflows:
        assert os.path.exists(path[: -len(".json")] + ".jpg"), path
