"""The shipped workflows: UI format that ComfyUI loads by drag-and-drop (and its templates browser), and
the API-form twin of each, checked against the node definitions without ComfyUI.

UI ``widgets_values`` are positional: the widget inputs (INT/FLOAT/STRING/BOOLEAN/combo) of required
then optional inputs, in definition order, with the control-after-generate value ("fixed", "randomize",
...) right after an input that has ``control_after_generate``.
"""
import glob
import json
import os

import pytest
from zipar.nodes import NODE_CLASS_MAPPINGS
from zipar.nodes import comfy_glue as glue
from zipar.nodes.loader import BUILTIN_DEMO

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UI_FILES = sorted(glob.glob(os.path.join(ROOT, "workflows", "*.json")))
NAMES = [os.path.splitext(os.path.basename(p))[0] for p in UI_FILES]
FAMILIES = {"zipar_demo", "zipar_llamagen_c2i", "zipar_llamagen_t2i", "zipar_janus_pro", "zipar_emu3_gen",
            "zipar_lumina_mgpt"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")

# The documented layout of ComfyUI/models/zipar (see the Note node of each workflow and the README).
DOCUMENTED_MODELS = {
    "LlamaGen-c2i-L-384/c2i_L_384.pt": "file", "LlamaGen-c2i-L-384/vq_ds16_c2i.pt": "file",
    "LlamaGen-t2i-XL-512/t2i_XL_stage2_512.pt": "file", "LlamaGen-t2i-XL-512/vq_ds16_t2i.pt": "file",
    "LlamaGen-t2i-XL-512/flan-t5-xl": "hf", "Janus-Pro-7B": "hf", "Emu3-Gen": "hf", "Lumina-mGPT-7B-768": "hf",
}


class _Core:
    """The ComfyUI core nodes the workflows use, as ComfyUI defines them (checked live by the integration test)."""

    class SaveImage:
        RETURN_TYPES = ()

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"images": ("IMAGE", {}), "filename_prefix": ("STRING", {"default": "ComfyUI"})},
                    "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    class PreviewAny:
        RETURN_TYPES = ()

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"source": ("*", {})}}


NODES = {**NODE_CLASS_MAPPINGS, "SaveImage": _Core.SaveImage, "PreviewAny": _Core.PreviewAny}
VIRTUAL = {"Note", "MarkdownNote"}  # frontend-only nodes: never sent to the server


@pytest.fixture
def documented_model_folder(tmp_path, monkeypatch):
    for name, kind in DOCUMENTED_MODELS.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "hf":
            path.mkdir()
            (path / "config.json").write_text("{}")
        else:
            path.write_bytes(b"")
    monkeypatch.setenv(glue.ENV_MODELS_DIR, str(tmp_path))


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def inputs_of(node_type):
    spec = NODES[node_type].INPUT_TYPES()
    return [(n, e) for sec in ("required", "optional") for n, e in spec.get(sec, {}).items()]


def is_widget(kind):
    return isinstance(kind, list) or kind in WIDGET_TYPES


def widget_map(node):
    """UI node -> {input: value} for its widget values; asserts the count and the control values."""
    values = list(node["widgets_values"])
    linked = {i["name"] for i in node.get("inputs", []) if i.get("link") is not None}
    out = {}
    for name, (kind, opts) in inputs_of(node["type"]):
        if not is_widget(kind):
            continue
        assert values, f"{node['type']}: too few widget values (missing {name})"
        value = values.pop(0)
        if name not in linked:
            out[name] = value
        if opts.get("control_after_generate"):
            assert values and values.pop(0) in CONTROL_VALUES, f"{node['type']}.{name}: control value"
    assert not values, f"{node['type']}: {len(values)} widget values too many: {values}"
    return out


def check_value(node_type, name, kind, opts, value):
    where = f"{node_type}.{name} = {value!r}"
    if isinstance(kind, list):
        assert value in kind, f"{where} is not one of the options"
    elif kind == "INT":
        assert isinstance(value, int) and not isinstance(value, bool), where
    elif kind == "FLOAT":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), where
    elif kind == "STRING":
        assert isinstance(value, str), where
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), where
    if kind in ("INT", "FLOAT"):
        assert opts.get("min", value) <= value <= opts.get("max", value), f"{where} is out of range"


def test_documented_layout_gives_the_workflow_entries(documented_model_folder):
    assert glue.list_model_entries() == ["Emu3-Gen", "Janus-Pro-7B", "LlamaGen-c2i-L-384", "LlamaGen-t2i-XL-512",
                                         "Lumina-mGPT-7B-768"]


def test_every_family_has_a_workflow_and_a_template():
    assert set(NAMES) == FAMILIES
    templates = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "example_workflows", "*.json")))
    assert templates == [n + ".json" for n in sorted(NAMES)]
    for name in NAMES:  # the templates browser copy is the same workflow
        assert load(os.path.join(ROOT, "example_workflows", name + ".json")) == \
            load(os.path.join(ROOT, "workflows", name + ".json"))


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_names_existing_nodes_with_fitting_widgets(name, documented_model_folder):
    wf = load(os.path.join(ROOT, "workflows", name + ".json"))
    assert wf["version"] == 0.4 and wf["last_node_id"] >= max(n["id"] for n in wf["nodes"])
    assert wf["last_link_id"] >= max(link[0] for link in wf["links"])
    for node in wf["nodes"]:
        if node["type"] in VIRTUAL:
            continue
        assert node["type"] in NODES, f"unknown node type {node['type']}"
        values = widget_map(node)
        for inp, (kind, opts) in inputs_of(node["type"]):
            if inp in values:
                check_value(node["type"], inp, kind, opts, values[inp])


@pytest.mark.parametrize("name", NAMES)
def test_ui_links_connect_matching_types(name):
    wf = load(os.path.join(ROOT, "workflows", name + ".json"))
    nodes = {n["id"]: n for n in wf["nodes"]}
    for link_id, src, src_slot, dst, dst_slot, typ in wf["links"]:
        out_type = NODES[nodes[src]["type"]].RETURN_TYPES[src_slot]
        assert out_type == typ, f"link {link_id}"
        assert nodes[src]["outputs"][src_slot]["type"] == typ and link_id in nodes[src]["outputs"][src_slot]["links"]
        target = nodes[dst]["inputs"][dst_slot]
        assert target["link"] == link_id
        in_type = dict(inputs_of(nodes[dst]["type"]))[target["name"]][0]
        assert in_type in (typ, "*"), f"link {link_id}: {typ} into {in_type}"
    for node in wf["nodes"]:  # every required link input is connected
        if node["type"] in VIRTUAL:
            continue
        linked = {i["name"] for i in node.get("inputs", []) if i.get("link") is not None}
        for inp, (kind, _) in NODES[node["type"]].INPUT_TYPES()["required"].items():
            if not is_widget(kind):
                assert inp in linked, f"{node['type']}.{inp} is not connected"


def to_api(wf):
    """UI workflow -> API prompt, as the frontend's graphToPrompt does for these graphs (virtual nodes
    dropped, widget values by name, links as [source id, output slot])."""
    links = {link[0]: link for link in wf["links"]}
    prompt = {}
    for node in wf["nodes"]:
        if node["type"] in VIRTUAL or node.get("mode", 0) != 0:
            continue
        inputs = dict(widget_map(node))
        for inp in node.get("inputs", []):
            if inp.get("link") is not None:
                link = links[inp["link"]]
                inputs[inp["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


@pytest.mark.parametrize("name", NAMES)
def test_api_twin_agrees_with_ui_workflow(name):
    api = load(os.path.join(ROOT, "workflows", "api", name + ".json"))
    expected = to_api(load(os.path.join(ROOT, "workflows", name + ".json")))
    assert {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()} == expected


def test_demo_workflow_runs_out_of_the_box():
    api = load(os.path.join(ROOT, "workflows", "api", "zipar_demo.json"))
    loader = [n for n in api.values() if n["class_type"] == "ZipARModelLoader"]
    assert loader[0]["inputs"]["model_name"] == BUILTIN_DEMO
