"""The shipped ComfyUI workflows, made from one description each: ``python -m zipar.nodes.workflows --write``.

One call writes, into the pack's ``workflows/`` folder (the one folder ComfyUI's Templates browser reads:
README, "ComfyUI"):

- ``<name>.json``: the workflow in UI form (drag onto the canvas, or pick it in the Templates browser,
  whose card title is the file name, so names are written for people);
- ``<name>.jpg``: its card thumbnail, which the frontend asks for beside the template: for the demo the
  real output of the demo workflow (decoded with the demo model, on CPU, at the workflow's own seed);
  for the others a title card naming the family and the files it needs (from the registry);
- ``api/<name>.json``: the API-form twin, for ``POST /prompt`` scripts;
- ``README.md``: what each workflow needs in ``ComfyUI/models/zipar/``.

``--check`` says which files differ from what would be written (``tests/test_workflows.py`` does the same).
Widget values are written by name and placed in the order of the nodes' own ``INPUT_TYPES``, so the
positional UI form cannot drift from the node definitions. Decoding settings are left to the model
(-1 = the registry's default), and the notes quote the registry's numbers.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
from dataclasses import dataclass

from .sampler import DRAFT_COMBOS, MODEL_DEFAULT, MODEL_DEFAULT_CHOICE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = os.path.join(ROOT, "workflows")
THUMB_SIZE = 512  # px, square: the cards show 256 css px (sharp on 2x screens)
JPEG_QUALITY = 85
SEED = 0


@dataclass(frozen=True)
class Template:
    """One shipped workflow."""

    name: str  # the file name, and so the card title in the Templates browser
    family: str  # registry family
    variant: str  # registry variant ("" = the family's defaults)
    kind: str  # what it makes, for the title card and the note
    entry: str  # the loader's model entry
    needs: tuple[str, ...]  # what to put in ComfyUI/models/zipar/ (the first line is the entry)
    source: str  # where the files come from
    grid: tuple[int, int]  # tokens (rows, cols) at the model's default size
    prompt: str = ""
    negative: str = ""
    batch_size: int = 1
    prefix: str = "ZipAR"  # SaveImage filename prefix
    remark: str = ""  # one more sentence for the note
    # single files the frontend may offer to download (the loader node's properties.models): (name, url); only
    # where the loader's entry is such a file (ComfyUI's frontend matches a declaration to a COMBO value ending in a
    # model file extension, and downloads from huggingface.co files named .safetensors / .pt / .ckpt / ...)
    downloads: tuple[tuple[str, str], ...] = ()


def _demo_template() -> Template:
    from .loader import BUILTIN_DEMO, demo_facts

    facts = demo_facts()
    side = facts.image_size // facts.pixels_per_token
    shown = min(4, facts.num_classes)
    return Template(
        # "Demo" with a capital: ComfyUI lists a pack's templates by file name, upper case before lower, so the one
        # template that runs without downloads comes first
        name="ZipAR Demo (no download)", family="llamagen", variant="demo", kind="built-in demo model",
        entry=BUILTIN_DEMO, needs=(), source="ships with the pack (zipar.demo_model)", grid=(side, side),
        prompt=", ".join(str(i) for i in range(shown)), batch_size=shown, prefix="ZipAR/demo",
        remark=f"A small class-conditional LlamaGen trained on {facts.num_classes} procedural shape classes, "
               f"{facts.image_size}x{facts.image_size} px. The prompt lists class numbers (one image each); an "
               "empty prompt picks class (seed + i) for image i.")


def templates() -> list[Template]:
    """Every shipped workflow, the demo first."""
    return [
        _demo_template(),
        Template(
            name="ZipAR LlamaGen ImageNet classes", family="llamagen", variant="", kind="class-to-image, 384 px",
            entry="c2i_L_384.pt", needs=("c2i_L_384.pt", "vq_ds16_c2i.pt (beside it)"),
            source="FoundationVision/LlamaGen on Hugging Face", grid=(24, 24), prompt="207",
            prefix="ZipAR/llamagen_c2i",
            remark="The prompt is an ImageNet class number (207 = golden retriever); any c2i size works the same "
                   "way (a GPT checkpoint with its VQ beside it, or both in a folder of their own).",
            downloads=tuple((f, f"https://huggingface.co/FoundationVision/LlamaGen/resolve/main/{f}")
                            for f in ("c2i_L_384.pt", "vq_ds16_c2i.pt"))),
        Template(
            name="ZipAR LlamaGen text-to-image", family="llamagen", variant="t2i", kind="text-to-image, 512 px",
            entry="LlamaGen-t2i-XL-512",
            needs=("LlamaGen-t2i-XL-512/", "t2i_XL_stage2_512.pt", "vq_ds16_t2i.pt", "flan-t5-xl/ (google/flan-t5-xl)"),
            source="FoundationVision/LlamaGen and google/flan-t5-xl on Hugging Face", grid=(32, 32),
            prompt="A photo of a red fox sitting in fresh snow, golden hour", prefix="ZipAR/llamagen_t2i"),
        Template(
            name="ZipAR Janus-Pro text-to-image", family="janus", variant="", kind="text-to-image, 384 px",
            entry="Janus-Pro-7B", needs=("Janus-Pro-7B/ (transformers format)",),
            source="deepseek-community/Janus-Pro-7B (or -1B) on Hugging Face", grid=(24, 24),
            prompt="A cozy reading nook by a rainy window, warm lamp light, watercolor", prefix="ZipAR/janus_pro",
            remark="Janus-Pro makes 384x384 only."),
        Template(
            name="ZipAR Emu3-Gen text-to-image", family="emu3", variant="", kind="text-to-image, 720 px",
            entry="Emu3-Gen", needs=("Emu3-Gen/ (transformers format)",),
            source="BAAI/Emu3-Gen-hf on Hugging Face", grid=(90, 90),
            prompt="a portrait of young girl. masterpiece, film grained, best quality.",
            negative="lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, "
                     "cropped, worst quality, low quality, normal quality, jpeg artifacts, signature, watermark, "
                     "username, blurry",
            prefix="ZipAR/emu3_gen", remark="Slow on small GPUs: try width and height 512."),
        Template(
            name="ZipAR Lumina-mGPT text-to-image", family="lumina", variant="", kind="text-to-image, 768 px",
            entry="Lumina-mGPT-7B-768",
            needs=("Lumina-mGPT-7B-768/ (Chameleon format)", "vqgan.ckpt + vqgan.yaml (Chameleon)"),
            source="Alpha-VLLM/Lumina-mGPT-7B-768 on Hugging Face; the VQGAN from Meta's Chameleon release",
            grid=(48, 48), prompt="A majestic lighthouse on a cliff at sunset, dramatic clouds, highly detailed",
            prefix="ZipAR/lumina_mgpt"),
        Template(
            name="ZipAR Lumina-mGPT 2.0 text-to-image", family="lumina2", variant="", kind="text-to-image, 768 px",
            entry="Lumina-mGPT-2.0",
            needs=("Lumina-mGPT-2.0/ (as downloaded)", "movqgan/270M/movqgan_270M.ckpt (MoVQGAN)"),
            source="Alpha-VLLM/Lumina-mGPT-2.0 and ai-forever/MoVQGAN on Hugging Face", grid=(96, 96),
            prompt="A red fox curled up asleep in fresh snow under pine trees, soft morning light, highly detailed",
            prefix="ZipAR/lumina_mgpt2",
            remark="A prompt that starts with <depth>, <canny>, <hed> or <openpose> makes its dual-panel image (the "
                   "image above, that map below). 768 px is 96x96 tokens: minutes per image even on a large GPU."),
    ]


# ----------------------------------------------------------------------------------------------------
# Facts from the registry and the schedule


def family(t: Template):
    from ..zipar_core.models import registry

    return registry.get(t.family)


def passes(t: Template) -> tuple[int, int, int]:
    """(window, ZipAR passes, NTP passes) at the registry's default window on the template's grid."""
    from ..zipar_core.config import ZipARConfig
    from ..zipar_core.layout import TokenLayout
    from ..zipar_core.modes import count_passes

    fam = family(t)
    rows, cols = t.grid
    window = min(fam.defaults_for(t.variant).window, cols)
    layout = TokenLayout(rows=rows, cols=cols, prefix=1, eol=fam.eol)
    return (window, count_passes(layout, ZipARConfig(mode="fixed", window=window)),
            count_passes(layout, ZipARConfig(mode="ntp")))


def note_text(t: Template) -> str:
    fam = family(t)
    d = fam.defaults_for(t.variant)
    window, zipar, ntp = passes(t)
    title = f"ZipAR + {fam.title}: {t.kind}" if t.variant != "demo" else "ZipAR demo: runs out of the box"
    if t.needs:
        need = (f"Needs in ComfyUI/models/zipar/: {t.needs[0]}" + (" with " + ", ".join(t.needs[1:]) if t.needs[1:]
                else "") + f" ({t.source}).")
    else:
        need = "Needs nothing: the demo model " + t.source + "."
    rows, cols = t.grid
    return "\n\n".join(filter(None, [
        title, need, t.remark,
        (f"{rows}x{cols} tokens: NTP takes {ntp} passes, ZipAR (window {window}) {zipar}. guidance_scale, top_k and "
         f"window at -1 use the model's defaults (here {d.guidance_scale:g}, {d.top_k}, {window}); the stats output "
         "lists the values used. Set mode ntp to compare with raster order.")]))


# ----------------------------------------------------------------------------------------------------
# The workflow in UI form and in API form

# Node boxes (x, y, width, height) in graph units, the title bar (30) above y. At zoom 1 and offset 0 (the
# workflow's "ds"), ComfyUI 0.3.64's frontend in a 1600x1000 window shows the graph from x 0 to 1536 and
# y 0 to 922 (its side bar takes 64 px, its top bar 78): every box stays 20 inside that.
# Its minimap covers the bottom-right corner (from x 1240, y 655): nothing goes there.
LOADER, SAMPLER, DECODE = (20, 50, 380, 106), (430, 50, 400, 600), (860, 50, 200, 46)
SAVE, STATS, NOTE = (1090, 50, 420, 400), (1090, 510, 420, 130), (20, 190, 380, 400)


def _node(id_, type_, box, order, inputs=(), outputs=(), widgets=(), **extra):
    x, y, w, h = box
    models = extra.pop("models", None)
    node = {"id": id_, "type": type_, "pos": [x, y], "size": [w, h], "flags": {}, "order": order, "mode": 0,
            "inputs": [dict(i) for i in inputs], "outputs": [dict(o) for o in outputs],
            "properties": {"Node name for S&R": type_} if type_ != "Note" else {"text": ""},
            "widgets_values": list(widgets)}
    if models:
        node["properties"]["models"] = models
    node.update(extra)
    return node


def widget_values(node_class, values: dict) -> list:
    """Values by input name -> the UI's positional widgets_values (required then optional inputs, in the
    node's order; the control-after-generate value right after its widget)."""
    spec = node_class.INPUT_TYPES()
    out = []
    for section in ("required", "optional"):
        for name, (kind, opts) in spec.get(section, {}).items():
            if not (isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN")):
                continue
            out.append(values[name])
            if opts.get("control_after_generate"):
                out.append("fixed")  # the seed stays, so the template reproduces its thumbnail
    return out


def loader_values(t: Template) -> dict:
    return {"model_name": t.entry, "dtype": "auto", "quantization": "none"}


def sampler_values(t: Template) -> dict:
    return {"prompt": t.prompt, "negative_prompt": t.negative, "seed": SEED, "guidance_scale": MODEL_DEFAULT,
            "temperature": 1.0, "top_k": MODEL_DEFAULT, "top_p": 1.0, "mode": "fixed", "window": MODEL_DEFAULT,
            "draft_length": MODEL_DEFAULT, "width": 0, "height": 0, "batch_size": t.batch_size, "paper_first_row": False,
            **{name: MODEL_DEFAULT_CHOICE for name in DRAFT_COMBOS}}


def ui_workflow(t: Template) -> dict:
    from .loader import ZipARModelLoader
    from .sampler import ZipARSampler

    def out(name, type_, links):
        return {"name": name, "type": type_, "links": links, "slot_index": 0}

    nodes = [
        _node(1, "ZipARModelLoader", LOADER, 0, outputs=[out("model", "ZIPAR_MODEL", [1])],
              widgets=widget_values(ZipARModelLoader, loader_values(t)),
              models=[{"name": n, "url": u, "directory": "zipar"} for n, u in t.downloads]),
        _node(2, "ZipARSampler", SAMPLER, 1, inputs=[{"name": "model", "type": "ZIPAR_MODEL", "link": 1}],
              outputs=[out("codes", "ZIPAR_CODES", [2]), dict(out("stats", "STRING", [3]), slot_index=1)],
              widgets=widget_values(ZipARSampler, sampler_values(t))),
        _node(3, "ZipARVQDecode", DECODE, 2, inputs=[{"name": "codes", "type": "ZIPAR_CODES", "link": 2}],
              outputs=[out("image", "IMAGE", [4])]),
        _node(4, "SaveImage", SAVE, 3, inputs=[{"name": "images", "type": "IMAGE", "link": 4}], widgets=[t.prefix]),
        _node(5, "PreviewAny", STATS, 4, inputs=[{"name": "source", "type": "*", "link": 3}]),
        _node(6, "Note", NOTE, 5, widgets=[note_text(t)], color="#432", bgcolor="#653"),
    ]
    links = [[1, 1, 0, 2, 0, "ZIPAR_MODEL"], [2, 2, 0, 3, 0, "ZIPAR_CODES"], [3, 2, 1, 5, 0, "STRING"],
             [4, 3, 0, 4, 0, "IMAGE"]]
    return {"last_node_id": 6, "last_link_id": 4, "nodes": nodes, "links": links, "groups": [], "config": {},
            "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}}, "version": 0.4}


def api_workflow(t: Template) -> dict:
    """The API form of :func:`ui_workflow` (what the frontend's graphToPrompt sends; the Note is not a node
    of the server)."""
    return {
        "1": {"class_type": "ZipARModelLoader", "inputs": loader_values(t),
              "_meta": {"title": "ZipAR Model Loader"}},
        "2": {"class_type": "ZipARSampler", "inputs": {**sampler_values(t), "model": ["1", 0]},
              "_meta": {"title": "ZipAR Sampler"}},
        "3": {"class_type": "ZipARVQDecode", "inputs": {"codes": ["2", 0]}, "_meta": {"title": "ZipAR VQ Decode"}},
        "4": {"class_type": "SaveImage", "inputs": {"filename_prefix": t.prefix, "images": ["3", 0]},
              "_meta": {"title": "Save Image"}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["2", 1]}, "_meta": {"title": "Preview Any"}},
    }


# ----------------------------------------------------------------------------------------------------
# Thumbnails

BG, FG, ACCENT, MUTED, PANEL = (24, 28, 38), (236, 239, 244), (255, 176, 59), (150, 160, 178), (36, 42, 56)


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)  # Pillow's bundled font: the same on every machine


def _wrap(draw, text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + ([line] if line else [])


def title_card(t: Template):
    """A clean card: ZipAR, the family and what it makes, the files it needs, the pass counts."""
    from PIL import Image, ImageDraw

    s, m = THUMB_SIZE, 36
    img = Image.new("RGB", (s, s), BG)
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, s, 10], fill=ACCENT)
    d.text((m, 34), "ZipAR", font=_font(30), fill=ACCENT)
    size = 60  # the family's name, smaller where it is long (Lumina-mGPT 2.0)
    while size > 36 and d.textlength(family(t).title, font=_font(size)) > s - 2 * m:
        size -= 2
    d.text((m, 74 + (60 - size) // 2), family(t).title, font=_font(size), fill=FG)
    d.text((m, 148), t.kind, font=_font(28), fill=MUTED)
    y = 206
    d.rounded_rectangle([m - 12, y - 12, s - m + 12, s - 78], radius=14, fill=PANEL)
    d.text((m, y), "put in ComfyUI/models/zipar/", font=_font(22), fill=MUTED)
    y += 38
    for i, need in enumerate(t.needs):  # the entry, then the files inside it (indented)
        indent = 0 if i == 0 else 24
        for j, line in enumerate(_wrap(d, need, _font(24), s - 2 * m - indent - 24)):
            d.text((m + indent + (24 if j else 0), y), line, font=_font(24), fill=FG)
            y += 32
    rows, cols = t.grid
    window, zipar, ntp = passes(t)
    facts = f"{rows}x{cols} tokens, window {window}: {ntp} passes -> {zipar}"
    size = 22
    while size > 12 and d.textlength(facts, font=_font(size)) > s - 2 * m:
        size -= 1
    d.text((m, s - 58), facts, font=_font(size), fill=MUTED)
    return img


def demo_output(t: Template):
    """The demo workflow's images, made by the pack's own nodes with the workflow's values: (B, H, W, 3) in
    [0, 1]. Runs on CPU in float32 so that it is the same everywhere."""
    import torch

    from .decode import ZipARVQDecode
    from .loader import ZipARModelLoader
    from .sampler import ZipARSampler

    torch.set_num_threads(min(torch.get_num_threads(), 2))
    (handle,) = ZipARModelLoader().load(t.entry, "fp32")
    codes, _ = ZipARSampler().sample(handle, **sampler_values(t))
    (images,) = ZipARVQDecode().decode(codes)
    return images


def demo_thumbnail(t: Template, images=None):
    """The demo's real output on a card: its images side by side (2 x 2 for 4), enlarged pixel for pixel,
    each captioned with its class."""
    import math

    from PIL import Image, ImageDraw

    from .loader import demo_facts
    from .sampler import class_labels_from_prompt

    images = demo_output(t) if images is None else images
    names = demo_facts().class_names
    labels = class_labels_from_prompt(t.prompt, len(names), len(images), SEED, names)
    n = len(images)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    s, gap, caption = THUMB_SIZE, 16, 26
    cell = (s - gap * (cols + 1)) // cols
    side = images.shape[1]
    scale = max(1, min(cell // side, (s - gap * (rows + 1) - caption * rows) // rows // side))
    shown = side * scale
    card = Image.new("RGB", (s, s), BG)
    d = ImageDraw.Draw(card)
    top = (s - rows * (shown + caption) - (rows - 1) * gap) // 2
    left = (s - cols * shown - (cols - 1) * gap) // 2
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        x, y = left + c * (shown + gap), top + r * (shown + caption + gap)
        pixels = (image.clamp(0, 1) * 255).round().byte().numpy()
        card.paste(Image.fromarray(pixels).resize((shown, shown), Image.NEAREST), (x, y))
        d.text((x, y + shown + 4), f"{labels[i]} {names[labels[i]]}", font=_font(18), fill=FG)
    return card


def thumbnail(t: Template):
    return demo_thumbnail(t) if t.variant == "demo" else title_card(t)


def jpeg_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------------
# README of the folder


def readme() -> str:
    rows = []
    for t in templates():
        need = ("nothing: runs out of the box (" + t.source + ")" if not t.needs else
                f"`{t.needs[0]}`" + (" with " + ", ".join(f"`{x}`" for x in t.needs[1:]) if t.needs[1:] else "")
                + f" ({t.source})")
        rows.append(f"| {t.name} | `{t.entry}` | {need} |")
    return "\n".join([
        "# ZipAR workflows for ComfyUI",
        "",
        "ComfyUI's Templates browser lists every `.json` of this folder under the pack's name, titled by the",
        "file name, with the `.jpg` of the same name as its thumbnail; or drag a `.json` onto the canvas.",
        "`api/` holds the API-form twin of each workflow, for `POST /prompt` scripts.",
        "",
        "Everything here is written by `python -m zipar.nodes.workflows --write` (from the family registry and",
        "the demo model; the demo's thumbnail is its real output); `tests/test_workflows.py` checks that the",
        "files equal what it writes, and that every workflow fits a 1600x1000 window.",
        "",
        "| workflow | model entry in the loader | put in `ComfyUI/models/zipar/` |",
        "|---|---|---|",
        *rows,
        "",
        "How the loader lists `models/zipar` (and any `zipar:` folder of `extra_model_paths.yaml`): a folder with a",
        "`config.json` is one entry (transformers model); a folder with exactly one GPT checkpoint and one VQ",
        "checkpoint (name containing `vq`) is one entry (LlamaGen; a `*t5*` subfolder is its text encoder); other",
        "weight files are listed one by one, and a LlamaGen GPT file finds the VQ checkpoint beside it. Other",
        "names can be used: pick them in the loader after placing the files (press `r` to refresh the lists).",
        "",
        "Class-conditional models (LlamaGen c2i, the demo) take class numbers as the prompt (`207`, or `1, 2, 3`",
        "for one image per class; the demo also takes its class names); an empty prompt gives image i the class",
        "(seed + i) mod the number of classes. `guidance_scale`, `top_k` and `window` at -1 use the model's",
        "defaults; the sampler's `stats` output (shown by the Preview Any node) lists the values used, the",
        "forward passes and the time; set `mode` to `ntp` to see the baseline.",
        "",
    ])


# ----------------------------------------------------------------------------------------------------
# Writing and checking


def _json(data) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def expected_files(with_thumbnails: bool = True) -> dict[str, bytes]:
    """Relative path -> content of every file the folder should hold."""
    files = {"README.md": readme().encode("utf-8")}
    for t in templates():
        files[f"{t.name}.json"] = _json(ui_workflow(t))
        files[os.path.join("api", f"{t.name}.json")] = _json(api_workflow(t))
        if with_thumbnails:
            files[f"{t.name}.jpg"] = jpeg_bytes(thumbnail(t))
    return files


def write(folder: str = FOLDER) -> list[str]:
    """Write the folder; remove the workflows and thumbnails it no longer makes. -> paths written."""
    files = expected_files()
    for old in _generated_on_disk(folder):
        if old not in files:
            os.remove(os.path.join(folder, old))
    for rel, data in files.items():
        path = os.path.join(folder, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return sorted(files)


def _generated_on_disk(folder: str) -> list[str]:
    out = []
    for sub in ("", "api"):
        where = os.path.join(folder, sub)
        if os.path.isdir(where):
            out += [os.path.join(sub, f) if sub else f for f in os.listdir(where) if f.endswith((".json", ".jpg"))]
    return out


def check(folder: str = FOLDER) -> list[str]:
    """Files that differ from what ``write`` would write (JSON and README exactly; thumbnails exist)."""
    files = expected_files(with_thumbnails=False)
    thumbs = {f"{t.name}.jpg" for t in templates()}
    problems = [f"extra file {p}" for p in _generated_on_disk(folder) if p not in files and p not in thumbs]
    for rel, data in files.items():
        path = os.path.join(folder, rel)
        if not os.path.isfile(path):
            problems.append(f"missing {rel}")
        else:
            with open(path, "rb") as f:
                if f.read() != data:
                    problems.append(f"differs: {rel}")
    problems += [f"missing {p}" for p in sorted(thumbs) if not os.path.isfile(os.path.join(folder, p))]
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zipar.nodes.workflows", description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="write the workflows, thumbnails and README")
    parser.add_argument("--check", action="store_true", help="list the files that differ from what --write writes")
    parser.add_argument("--folder", default=FOLDER, help=f"target folder (default {FOLDER})")
    args = parser.parse_args(argv)
    if args.write:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the demo thumbnail is decoded on CPU, in float32
        for path in write(args.folder):
            print(os.path.join(args.folder, path))
        return 0
    if args.check:
        problems = check(args.folder)
        print("\n".join(problems) or "up to date")
        return 1 if problems else 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
