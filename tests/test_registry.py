"""One source of truth per model family: the registry's defaults are what every face uses (the pipeline,
the command line, the ComfyUI node, the shipped workflows), and the module graph has no import circles.
"""
import ast
import glob
import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import gen, quiet
from PIL import Image
from zipar import ZipARPipeline
from zipar.cli import main
from zipar.nodes import comfy_glue as glue
from zipar.nodes.sampler import ZipARSampler
from zipar.zipar_core.models import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = ("mode", "window", "guidance_scale", "temperature", "top_k", "top_p", "draft_length", "draft_init",
            "draft_coupling", "draft_visibility")
# the tiny random model of each family, and a call that fits it
TINY = {
    "llamagen": ({}, {"class_labels": [3]}),
    "janus": ({}, {"prompt": "a cat"}),
    "emu3": ({}, {"prompt": "a cat", "height": 32, "width": 40}),
    "lumina": ({}, {"prompt": "a cat", "height": 64, "width": 64}),
    "lumina2": ({}, {"prompt": "a cat", "height": 32, "width": 32}),
}


def expected(adapter, cols: int) -> dict:
    d = registry.defaults_for(adapter).as_dict()
    return {**d, "window": min(d["window"], cols)}


@pytest.fixture(scope="module", params=sorted(TINY))
def family(request):
    options, call = TINY[request.param]
    adapter = registry.build_tiny(request.param, **options)
    return request.param, adapter, call


def test_every_family_has_a_complete_entry():
    assert set(registry.FAMILIES) == {"llamagen", "janus", "emu3", "lumina", "lumina2"}
    for fam in registry.FAMILIES.values():
        assert registry.adapter_class(fam.name).family == fam.name
        assert fam.title and fam.sizes and fam.files and fam.sources and fam.conditioning
        assert fam.model_types or fam.module_classes
        adapter = registry.build_tiny(fam.name)
        assert adapter.family == fam.name and registry.defaults_for(adapter) == fam.defaults
    # variants: the defaults follow the checkpoint (LlamaGen t2i / XL and larger / the embedded demo model)
    from zipar.zipar_core.models.llamagen import LlamaGenAdapter, LlamaGenConfig, LlamaGenTransformer

    with torch.device("meta"):
        xl = LlamaGenAdapter(LlamaGenTransformer(LlamaGenConfig.from_preset("GPT-XL", "c2i", 576)))
        t2i = LlamaGenAdapter(LlamaGenTransformer(LlamaGenConfig.from_preset("GPT-XL", "t2i", 256)))
    assert registry.defaults_for(xl).guidance_scale == 1.75
    assert (registry.defaults_for(t2i).guidance_scale, registry.defaults_for(t2i).top_k) == (7.5, 1000)
    from zipar.demo_model import load_demo_model

    assert registry.defaults_for(load_demo_model()) == registry.get("llamagen").variants["demo"]


def test_family_lookup_errors_name_what_is_supported():
    with pytest.raises(ValueError, match="unknown model family 'dalle'.*llamagen, janus, emu3, lumina, lumina2"):
        registry.get("dalle")
    with pytest.raises(ValueError, match="unsupported model type 'gpt2'.*janus.*chameleon"):
        registry.family_for_model_type("gpt2")
    with pytest.raises(ValueError, match="transformer component is a Linear"):
        registry.family_of_module(torch.nn.Linear(1, 1))


def test_pipeline_defaults_are_the_registry_s(family):
    name, adapter, call = family
    pipe = quiet(ZipARPipeline.from_adapter(adapter))
    out = pipe(**call, generator=gen(), output_type="codes")
    assert {k: out.settings[k] for k in SETTINGS} == expected(adapter, out.settings["cols"])
    # the pipeline config and the call still win, in that order
    pipe = quiet(ZipARPipeline.from_adapter(adapter, window=2, top_k=7))
    out = pipe(**call, top_k=5, generator=gen(), output_type="codes")
    assert (out.settings["window"], out.settings["top_k"]) == (2, 5)


def test_node_defaults_are_the_registry_s(family):
    name, adapter, call = family
    spec = ZipARSampler.INPUT_TYPES()["required"]
    widgets = {k: v[1]["default"] for k, v in spec.items() if isinstance(v[1], dict) and "default" in v[1]}
    prompt = str(call["class_labels"][0]) if "class_labels" in call else call["prompt"]
    codes, stats = ZipARSampler().sample(glue.wrap_model(adapter, name), prompt=prompt, negative_prompt="", seed=0,
                                         guidance_scale=widgets["guidance_scale"], temperature=widgets["temperature"],
                                         top_k=widgets["top_k"], top_p=widgets["top_p"], mode=widgets["mode"],
                                         window=widgets["window"], width=call.get("width", 0),
                                         height=call.get("height", 0), batch_size=1)
    cols = codes.codes.shape[-1]
    assert {k: codes.settings[k] for k in SETTINGS} == expected(adapter, cols)
    want = expected(adapter, cols)
    assert f"window {want['window']}, guidance_scale {want['guidance_scale']:g}" in stats
    assert f"top_k {want['top_k']}" in stats  # the stats output says which values were used


def test_cli_defaults_are_the_registry_s(family, tmp_path):
    name, adapter, call = family
    ZipARPipeline.from_adapter(adapter).save_pretrained(tmp_path / "model")
    cond = ["--class-label", str(call["class_labels"][0])] if "class_labels" in call else ["--prompt", call["prompt"]]
    size = [f"--{k}={call[k]}" for k in ("height", "width") if k in call]
    assert main(["generate", "--model", str(tmp_path / "model"), *cond, *size, "--device", "cpu", "-o",
                 str(tmp_path / "x.png")]) == 0
    meta = json.loads(Image.open(tmp_path / "x.png").text["zipar"])
    assert {k: meta["settings"][k] for k in SETTINGS} == expected(adapter, meta["settings"]["cols"])


def _workflow_sampler_settings(path):
    """The ZipARSampler widget values of a UI workflow, by input name (control_after_generate skipped)."""
    with open(path, encoding="utf-8") as f:
        wf = json.load(f)
    (node,) = [n for n in wf["nodes"] if n["type"] == "ZipARSampler"]
    spec = ZipARSampler.INPUT_TYPES()
    names = []
    for section in ("required", "optional"):
        for key, entry in spec.get(section, {}).items():
            if isinstance(entry[0], list) or entry[0] in ("INT", "FLOAT", "STRING", "BOOLEAN"):
                names.append(key)
                if entry[1].get("control_after_generate"):
                    names.append(None)
    return {k: v for k, v in zip(names, node["widgets_values"]) if k}


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "workflows", "*.json"))),
                         ids=os.path.basename)
def test_workflow_widgets_resolve_to_the_registry_defaults(path):
    """Every shipped workflow leaves guidance, top-k and window to the model (so it follows the registry) and
    keeps the other values at the registry's (the same for every family)."""
    values = _workflow_sampler_settings(path)
    assert (values["guidance_scale"], values["top_k"], values["window"], values["draft_length"]) == (-1, -1, -1, -1)
    for fam in registry.FAMILIES.values():
        for d in (fam.defaults, *fam.variants.values()):
            assert (values["mode"], values["temperature"], values["top_p"]) == (d.mode, d.temperature, d.top_p)


# -- the module graph ------------------------------------------------------------------------------------

PACKAGE_DIRS = ("zipar_core", "pipelines", "nodes", "cli", "demo_model")
SAMPLER_MODULES = ("sampler", "schedule", "cache", "sampling", "step_runner", "config", "layout", "protocol",
                   "errors", "benchmark")


def _module_imports():
    """{module: set of package modules it imports anywhere in its body (top level or inside functions)}."""
    files = [os.path.join(ROOT, "__init__.py")]
    for d in PACKAGE_DIRS:
        files += glob.glob(os.path.join(ROOT, d, "**", "*.py"), recursive=True)
    graph = {}
    for path in files:
        rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        name = "zipar" if rel == "__init__" else "zipar." + rel.removesuffix(".__init__")
        is_pkg = path.endswith("__init__.py")
        base = name if is_pkg else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = base.split(".")
                    target = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.startswith("zipar"):
                    if node.module:  # ``from .x import y``: module x (and y, when y is a submodule)
                        deps.add(target)
                    deps.update(f"{target}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("zipar"))
        graph[name] = deps
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def test_no_module_imports_one_that_imports_it_back():
    graph = _module_imports()
    assert "zipar.zipar_core.models.registry" in graph and len(graph) > 40

    def reaches(start, goal, seen):
        for d in graph[start] - seen:
            seen.add(d)
            if d == goal or reaches(d, goal, seen):
                return True
        return False

    assert [(m, d) for m in graph for d in graph[m] if reaches(d, m, set())] == []


def test_the_sampler_never_imports_a_model_family():
    graph = _module_imports()
    for name in SAMPLER_MODULES:
        deps = graph[f"zipar.zipar_core.{name}"]
        assert not [d for d in deps if d.startswith("zipar.zipar_core.models")], (name, deps)


def test_only_the_command_line_imports_the_command_line():
    """cli/ words things for the command line; the core, the pipeline, the nodes and the demo model sit below it
    (DESIGN: "the pipeline, the nodes, the demo and the families never import cli/")."""
    graph = _module_imports()
    up = [(m, d) for m, deps in graph.items() if not m.startswith("zipar.cli") for d in deps
          if d.startswith("zipar.cli")]
    assert up == []


def test_help_and_steps_import_no_torch():
    for argv in (["--help"], ["steps", "--rows", "4", "--cols", "6"]):
        run = subprocess.run([sys.executable, "-X", "importtime", "-c",
                              f"import sys; from zipar.cli import main; sys.exit(main({argv!r}))"],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr[-2000:]
        imported = {line.split("|")[-1].strip().split(".")[0] for line in run.stderr.splitlines() if "|" in line}
        assert not imported & {"torch", "diffusers", "transformers", "numpy"}, imported & {"torch", "diffusers"}


def test_the_public_api_is_one_import_away():
    run = subprocess.run([sys.executable, "-c", "import sys, zipar; assert 'torch' not in sys.modules; "
                          "from zipar import generate, ZipARConfig, load_model, ZipARPipeline; "
                          "print(generate.__module__, ZipARConfig.__module__, load_model.__module__)"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["zipar.zipar_core.sampler", "zipar.zipar_core.config", "zipar.zipar_core.models"]
