"""The shipped workflows: UI format that ComfyUI loads by drag-and-drop (and its templates browser), and
the API-form twin of each, checked against the node definitions without ComfyUI; one folder that ComfyUI
reads, a thumbnail per template, readable names, files equal to what ``python -m zipar.nodes.workflows
--write`` writes, and a layout that fits a 1600x1000 window.

UI ``widgets_values`` are positional: the widget inputs (INT/FLOAT/STRING/BOOLEAN/combo) of required
then optional inputs, in definition order, with the control-after-generate value ("fixed", "randomize",
...) right after an input that has ``control_after_generate``.
"""
import glob
import json
import os
import re

import pytest
from PIL import Image
from zipar.nodes import NODE_CLASS_MAPPINGS, workflows
from zipar.nodes import comfy_glue as glue
from zipar.nodes.loader import BUILTIN_DEMO
from zipar.zipar_core.models import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = os.path.join(ROOT, "workflows")
UI_FILES = sorted(glob.glob(os.path.join(FOLDER, "*.json")))
NAMES = [os.path.splitext(os.path.basename(p))[0] for p in UI_FILES]
# The card titles of ComfyUI's Templates browser are the file names (tests/test_comfyui_integration.py lists
# the same names).
TEMPLATE_NAMES = {"ZipAR Demo (no download)", "ZipAR LlamaGen ImageNet classes", "ZipAR LlamaGen text-to-image",
                  "ZipAR Janus-Pro text-to-image", "ZipAR Emu3-Gen text-to-image", "ZipAR Lumina-mGPT text-to-image",
                  "ZipAR Lumina-mGPT 2.0 text-to-image"}
# The folder names ComfyUI 0.3.64 reads templates from (app/custom_node_manager.py); it lists every one that
# exists, so a second one would show each template twice.
COMFY_TEMPLATE_FOLDERS = ("example_workflows", "example", "examples", "workflow", "workflows")
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")

# The documented layout of ComfyUI/models/zipar (see the Note node of each workflow and the README).
DOCUMENTED_MODELS = {
    "c2i_L_384.pt": "file", "vq_ds16_c2i.pt": "file",
    "LlamaGen-t2i-XL-512/t2i_XL_stage2_512.pt": "file", "LlamaGen-t2i-XL-512/vq_ds16_t2i.pt": "file",
    "LlamaGen-t2i-XL-512/flan-t5-xl": "hf", "Janus-Pro-7B": "hf", "Emu3-Gen": "hf", "Lumina-mGPT-7B-768": "hf",
    "Lumina-mGPT-2.0": "hf", "Lumina-mGPT-2.0/movqgan/270M/movqgan_270M.ckpt": "file",
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
    assert glue.list_model_entries() == ["c2i_L_384.pt", "Emu3-Gen", "Janus-Pro-7B", "LlamaGen-t2i-XL-512",
                                         "Lumina-mGPT-2.0", "Lumina-mGPT-7B-768"]


def test_the_demo_is_the_first_template_and_single_files_declare_their_downloads():
    """ComfyUI lists a pack's templates sorted by file name, upper case first: the demo, the one template that runs
    without downloads, comes first. Its frontend offers to download what a loader's properties.models declares when
    the widget's value is that file (name == value, a .pt/.safetensors name, a huggingface.co URL)."""
    assert sorted(NAMES)[0] == "ZipAR Demo (no download)"
    declared = {}
    for name in NAMES:
        loader = next(n for n in load(os.path.join(FOLDER, name + ".json"))["nodes"] if n["type"] == "ZipARModelLoader")
        for m in loader["properties"].get("models", []):
            assert m["url"].startswith("https://huggingface.co/") and m["url"].endswith("/" + m["name"])
            assert m["name"].endswith((".safetensors", ".pt", ".ckpt")) and m["directory"] == "zipar"
            declared.setdefault(name, []).append(m["name"])
        if loader["widgets_values"][0].endswith(".pt"):  # a file entry: declared, with the VQ beside it
            assert loader["widgets_values"][0] == declared[name][0]
    assert declared == {"ZipAR LlamaGen ImageNet classes": ["c2i_L_384.pt", "vq_ds16_c2i.pt"]}


def test_one_template_folder_read_once():
    present = [f for f in COMFY_TEMPLATE_FOLDERS if os.path.isdir(os.path.join(ROOT, f))]
    assert present == ["workflows"]
    assert set(NAMES) == TEMPLATE_NAMES
    assert sorted(os.listdir(os.path.join(FOLDER, "api"))) == sorted(n + ".json" for n in NAMES)


def test_every_family_has_a_workflow():
    assert {t.family for t in workflows.templates()} == set(registry.FAMILIES)
    assert {t.name for t in workflows.templates()} == TEMPLATE_NAMES


@pytest.mark.parametrize("name", sorted(TEMPLATE_NAMES))
def test_template_names_read_as_titles(name):
    """The frontend shows the file name as the card title (and, with - and _ as spaces, as its description);
    it asks for <name>.json and <name>.jpg: names of words, URL-safe once spaces are encoded."""
    assert re.fullmatch(r"ZipAR [A-Za-z0-9 ()-]+( [0-9]\.[0-9] [A-Za-z-]+)?", name)  # a version: Lumina-mGPT 2.0
    assert "_" not in name and len(name) <= 40
    assert any(f.title in name for f in registry.FAMILIES.values()) or "Demo" in name


@pytest.mark.parametrize("name", sorted(TEMPLATE_NAMES))
def test_every_template_has_a_small_jpeg_thumbnail(name):
    path = os.path.join(FOLDER, name + ".jpg")
    with Image.open(path) as img:
        assert img.format == "JPEG" and img.size == (workflows.THUMB_SIZE, workflows.THUMB_SIZE)
    assert os.path.getsize(path) < 64 * 1024


def test_files_are_what_the_script_writes():
    """JSON (UI and API) and the README byte for byte; regenerate with python -m zipar.nodes.workflows --write."""
    assert workflows.check(FOLDER) == []


def _pixels(img):
    import numpy as np

    return np.asarray(img.convert("RGB"), dtype=float)


def _mean_diff(path, image):
    import io

    with Image.open(path) as shipped:
        return abs(_pixels(shipped) - _pixels(Image.open(io.BytesIO(workflows.jpeg_bytes(image))))).mean()


@pytest.mark.parametrize("template", [t for t in workflows.templates() if t.variant != "demo"], ids=lambda t: t.name)
def test_title_card_names_family_and_files(template):
    assert template.needs and template.needs[0].startswith(template.entry)
    diff = _mean_diff(os.path.join(FOLDER, template.name + ".jpg"), workflows.title_card(template))
    assert diff < 2.0, "title card out of date: python -m zipar.nodes.workflows --write"


def test_demo_thumbnail_is_the_demo_workflows_output():
    """Decoded again here with the demo model, at the workflow's seed and values (CPU, float32)."""
    import torch

    torch.set_num_threads(1)
    demo = next(t for t in workflows.templates() if t.variant == "demo")
    api = load(os.path.join(FOLDER, "api", demo.name + ".json"))
    sampler = next(n["inputs"] for n in api.values() if n["class_type"] == "ZipARSampler")
    assert {k: v for k, v in sampler.items() if k != "model"} == workflows.sampler_values(demo)
    images = workflows.demo_output(demo)
    assert images.shape[0] == sampler["batch_size"]
    diff = _mean_diff(os.path.join(FOLDER, demo.name + ".jpg"), workflows.demo_thumbnail(demo, images))
    assert diff < 3.0, "demo thumbnail out of date (retrained model?): python -m zipar.nodes.workflows --write"


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_names_existing_nodes_with_fitting_widgets(name, documented_model_folder):
    wf = load(os.path.join(FOLDER, name + ".json"))
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
    wf = load(os.path.join(FOLDER, name + ".json"))
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
    api = load(os.path.join(FOLDER, "api", name + ".json"))
    expected = to_api(load(os.path.join(FOLDER, name + ".json")))
    assert {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()} == expected


def test_demo_workflow_runs_out_of_the_box():
    api = load(os.path.join(FOLDER, "api", "ZipAR Demo (no download).json"))
    loader = [n for n in api.values() if n["class_type"] == "ZipARModelLoader"]
    assert loader[0]["inputs"]["model_name"] == BUILTIN_DEMO


# ----------------------------------------------------------------------------------------------------
# Layout in a 1600x1000 window, read from the JSON

# What ComfyUI 0.3.64's frontend shows of the graph in a 1600x1000 window at the workflows' zoom 1 and
# offset 0 (measured in headless Chromium): its side bar takes 64 px and its top bar 78, so graph x 0..1536
# and y 0..922; its minimap covers the bottom-right 250x200 px (screen 1306..1556, 734..934).
VIEW_W, VIEW_H, TITLE_H = 1600 - 64, 1000 - 78, 30
MINIMAP = (1306 - 64, 734 - 78, 1556 - 64, 934 - 78)  # x0, y0, x1, y1 in graph units
# LiteGraph's sizes (frontend 1.27): a slot row 20, a widget 20 + 4, a DOM text widget at least 50 + 4,
# 8 below the widgets and 6 more; the image preview of a Save Image node after a run at least 220; widgets
# need the node 210 wide; a widget's label and value need (chars x ~7 px at 12 px) + 5 within width - 85.
CHAR_W, WIDGET_TEXT_PAD = 7, 85
DISPLAY_WIDGETS = {"PreviewAny": [50], "SaveImage": [220]}  # made by the frontend, not in INPUT_TYPES


def boxes(wf):
    """id -> (x0, y0, x1, y1) of each node, its title bar included."""
    return {n["id"]: (n["pos"][0], n["pos"][1] - TITLE_H, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
            for n in wf["nodes"]}


def min_size(node):
    """The smallest size the frontend gives the node (LGraphNode.computeSize, see the constants above)."""
    if node["type"] in VIRTUAL:
        return 210, 88
    spec = [(n, e) for n, e in inputs_of(node["type"])]
    links = [n for n, (kind, _) in spec if not is_widget(kind)]
    rows = max(len(links), len(NODES[node["type"]].RETURN_TYPES), 1)
    heights = []
    for _, (kind, opts) in spec:
        if is_widget(kind):
            heights.append(50 if kind == "STRING" and opts.get("multiline") else 20)
            if opts.get("control_after_generate"):
                heights.append(20)
    heights += DISPLAY_WIDGETS.get(node["type"], [])
    return (210 if heights else 140), rows * 20 + sum(h + 4 for h in heights) + (8 if heights else 0) + 6


def _overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def layout_problems(wf) -> list[str]:
    problems = []
    if wf["extra"]["ds"] != {"scale": 1.0, "offset": [0, 0]}:
        problems.append(f"opens at zoom/offset {wf['extra']['ds']}, not 1 / [0, 0]")
    box = boxes(wf)
    for node in wf["nodes"]:
        x0, y0, x1, y1 = box[node["id"]]
        where = f"{node['type']} at {node['pos']} size {node['size']}"
        if x0 < 0 or y0 < 0 or x1 > VIEW_W or y1 > VIEW_H:
            problems.append(f"{where}: past the edge of the window")
        if _overlap(box[node["id"]], MINIMAP):
            problems.append(f"{where}: under the minimap")
        w, h = min_size(node)
        if node["size"][0] < w or node["size"][1] < h:
            problems.append(f"{where}: the frontend would grow it to {w}x{h}")
        if node["type"] in VIRTUAL:
            continue
        for inp, value in widget_map(node).items():
            kind, opts = dict(inputs_of(node["type"]))[inp]
            if not (kind == "STRING" and opts.get("multiline")):
                text = len(inp) + len(f"{value:.2f}" if isinstance(value, float) else str(value))
                if text * CHAR_W + 5 > node["size"][0] - WIDGET_TEXT_PAD:
                    problems.append(f"{where}: the {inp} widget's label and value are cut")
    ids = sorted(box)
    problems += [f"nodes {a} and {b} overlap" for i, a in enumerate(ids) for b in ids[i + 1:]
                 if _overlap(box[a], box[b])]
    return problems


@pytest.mark.parametrize("name", NAMES)
def test_layout_fits_a_1600x1000_window_without_overlaps(name):
    assert layout_problems(load(os.path.join(FOLDER, name + ".json"))) == []


def test_layout_check_catches_the_reported_demo_layout():
    """The layout the issue reported (from main before this change: Save Image at x 1140 + 420, past the right
    edge; the loader 360 wide, its label cut by the long demo entry name) fails the check."""
    wf = load(os.path.join(FOLDER, "ZipAR Demo (no download).json"))
    nodes = {n["type"]: n for n in wf["nodes"]}
    nodes["SaveImage"].update(pos=[1140, 120], size=[420, 460])
    nodes["ZipARModelLoader"].update(size=[360, 82], widgets_values=["zipar-demo (built-in, 10 shape classes)", "auto", "none"])
    problems = layout_problems(wf)
    assert any("SaveImage" in p and "past the edge" in p for p in problems)
    assert any("ZipARModelLoader" in p and "model_name widget" in p for p in problems)
