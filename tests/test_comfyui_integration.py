"""End to end in a real ComfyUI server (skipped unless ZIPAR_COMFYUI_PATH names a ComfyUI checkout).

    ZIPAR_COMFYUI_PATH=/path/to/ComfyUI [ZIPAR_COMFYUI_PYTHON=/path/to/its/venv/bin/python] \\
        pytest -s tests/test_comfyui_integration.py

The server runs with --cpu in a temporary base directory: this pack linked into its custom_nodes/ under
a different folder name (relative imports only), a tiny random LlamaGen in the official checkpoint format
(GPT + VQ-16) in its models/zipar/, and its own output folder. Every workflow of workflows/api/ is posted:
as shipped when its model is present (the built-in demo always is), otherwise with the tiny model put in
its place (graph, links and widget values stay those of the workflow). Checked: node_errors == {}, images
saved, progress events and previews received over the websocket, an interrupt mid-sampling stops the run
and the next run still works, and the bad-input errors reach the client with a message saying what to change.
Only the standard library is used on the client side (a minimal websocket reader included).
"""
import base64
import glob
import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMFY = os.environ.get("ZIPAR_COMFYUI_PATH")
PACK_DIR_NAME = "ComfyUI-ZipAR"  # not "zipar": the pack must not depend on its folder name
TINY = "tiny/c2i_B_128.pt"  # 8x8 tokens of 16 px
MYSTERY = "tiny/mystery.pt"  # no known family, a VQ tokenizer beside it
DEMO = "zipar demo (built-in)"
HF_NO_WEIGHTS = "tiny-janus-no-weights"  # a transformers folder with a config.json and no weights
DEMO_WORKFLOW = "ZipAR Demo (no download)"
# The Templates browser's card titles are the file names (tests/test_workflows.py lists the same names).
TEMPLATE_NAMES = {"ZipAR Demo (no download)", "ZipAR LlamaGen ImageNet classes", "ZipAR LlamaGen text-to-image",
                  "ZipAR Janus-Pro text-to-image", "ZipAR Emu3-Gen text-to-image", "ZipAR Lumina-mGPT text-to-image",
                  "ZipAR Lumina-mGPT 2.0 text-to-image"}

pytestmark = pytest.mark.skipif(not COMFY or not os.path.isfile(os.path.join(COMFY or "", "main.py")),
                                reason="set ZIPAR_COMFYUI_PATH to a ComfyUI checkout to run the integration test")


# ----------------------------------------------------------------------------------------------------
# A tiny model in the official LlamaGen format


def make_tiny_llamagen(folder: str) -> None:
    """A random LlamaGen in the official format, small where the loader allows: the GPT has the GPT-B
    shape (12 layers, width 768: the loader reads the head count off the preset table, so the smallest
    preset it is) but a 256-code vocabulary, 10 classes and an 8x8 grid (128 px, from the file name);
    the VQ-16 tokenizer beside it is narrow. Saved as torch.save({"model": state_dict}) (bf16 GPT to keep
    the file small). Next to them, a file of no known family."""
    import torch
    from zipar.zipar_core.models.llamagen import LlamaGenConfig, LlamaGenTransformer, VQConfig, VQModel

    torch.manual_seed(0)
    with torch.device("cpu"):
        gpt = LlamaGenTransformer(LlamaGenConfig.from_preset("GPT-B", "c2i", 64, vocab_size=256, num_classes=10))
        vq = VQModel(VQConfig(codebook_size=256, codebook_embed_dim=8, z_channels=32, ch=32,
                              ch_mult=(1, 1, 2, 2, 4), num_res_blocks=1))
    os.makedirs(os.path.join(folder, "tiny"), exist_ok=True)
    torch.save({"model": {k: v.to(torch.bfloat16) for k, v in gpt.state_dict().items()}}, os.path.join(folder, TINY))
    torch.save({"model": vq.state_dict()}, os.path.join(folder, "tiny", "vq_ds16_c2i.pt"))
    torch.save({"model": {"encoder.weight": torch.zeros(2, 2)}}, os.path.join(folder, MYSTERY))
    os.makedirs(os.path.join(folder, HF_NO_WEIGHTS))
    with open(os.path.join(folder, HF_NO_WEIGHTS, "config.json"), "w") as f:
        json.dump({"model_type": "janus"}, f)


# ----------------------------------------------------------------------------------------------------
# Client: HTTP with urllib, websocket by hand


def fetch(base, path):
    """-> (status, content type, body bytes) of a GET."""
    try:
        with urllib.request.urlopen(base + path, timeout=30) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def http(base, path, data=None):
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(base + path, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


class WebSocket:
    """Just enough RFC 6455 to read ComfyUI's messages: text frames (JSON) and binary frames (previews)."""

    def __init__(self, host, port, path):
        self.sock = socket.create_connection((host, port), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert b" 101 " in head.split(b"\r\n")[0], head

    def _read(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("websocket closed")
            buf += chunk
        return buf

    def recv(self):
        """-> ('text', dict) | ('binary', bytes)."""
        data, opcode = b"", None
        while True:
            b0, b1 = self._read(2)
            op, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
            if op in (0x9, 0xA):  # ping / pong
                continue
            opcode = opcode if op == 0 else op
            data += payload
            if b0 & 0x80:
                break
        return ("text", json.loads(data)) if opcode == 1 else ("binary", data)

    def close(self):
        self.sock.close()


class Server:
    def __init__(self, base_dir):
        self.base_dir = base_dir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client_id = uuid.uuid4().hex
        python = os.environ.get("ZIPAR_COMFYUI_PYTHON", sys.executable)
        self.log_path = os.path.join(base_dir, "server.log")
        self.log = open(self.log_path, "w")  # noqa: SIM115 -- the server's stdout for its lifetime
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port), "--base-directory",
             base_dir, "--disable-all-custom-nodes", "--whitelist-custom-nodes", PACK_DIR_NAME,
             "--preview-method", "auto", "--preview-size", "256", "--database-url", "sqlite:///:memory:"],
            cwd=COMFY, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited:\n{self.read_log()}")
            try:
                if http(self.url, "/object_info/SaveImage")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError(f"ComfyUI did not start:\n{self.read_log()}")
        self.ws = WebSocket("127.0.0.1", self.port, f"/ws?clientId={self.client_id}")

    def read_log(self):
        with open(self.log_path) as f:
            return f.read()

    def queue(self, prompt):
        status, answer = http(self.url, "/prompt", {"prompt": prompt, "client_id": self.client_id})
        return status, answer

    def run(self, prompt, on_progress=None, timeout=300):
        """Queue and follow one prompt: -> (outcome, messages of that prompt, preview frames)."""
        status, answer = self.queue(prompt)
        assert status == 200 and answer.get("node_errors") == {}, answer
        pid = answer["prompt_id"]
        messages, previews, deadline = [], [], time.time() + timeout
        current = None
        while time.time() < deadline:
            kind, msg = self.ws.recv()
            if kind == "binary":
                if current == pid:
                    previews.append(msg)
                continue
            data = msg.get("data", {})
            if data.get("prompt_id") not in (pid, None):
                continue
            if msg["type"] == "executing":
                current = pid if data.get("node") is not None else current
            if data.get("prompt_id") != pid:
                continue
            messages.append(msg)
            if msg["type"] == "progress" and on_progress:
                on_progress(data)
            if msg["type"] in ("execution_success", "execution_error", "execution_interrupted"):
                return msg["type"], messages, previews, pid
            if msg["type"] == "executing" and data.get("node") is None:
                return "execution_success", messages, previews, pid
        raise TimeoutError(f"prompt {pid} did not finish")

    def history(self, pid, timeout=30):
        """The history entry of a prompt (written just after its execution_success message)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            entry = http(self.url, f"/history/{pid}")[1].get(pid)
            if entry:
                return entry
            time.sleep(0.2)
        raise TimeoutError(f"no history for prompt {pid}")

    def stop(self):
        try:
            self.ws.close()
        except OSError:
            pass  # already closed
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("comfy_base"))
    os.makedirs(os.path.join(base, "custom_nodes"))
    os.symlink(ROOT, os.path.join(base, "custom_nodes", PACK_DIR_NAME))
    make_tiny_llamagen(os.path.join(base, "models", "zipar"))
    srv = Server(base)
    yield srv
    srv.stop()
    print("\n---- ComfyUI log (ZipAR lines) ----")
    print("\n".join(line for line in srv.read_log().splitlines()
                    if "zipar" in line.lower() or "IMPORT FAILED" in line or "Prompt executed" in line))


def api_workflows():
    return {os.path.splitext(os.path.basename(p))[0]: json.load(open(p))
            for p in sorted(glob.glob(os.path.join(ROOT, "workflows", "api", "*.json")))}


def with_tiny_model(prompt, available):
    """The workflow as shipped when its model is installed; else the tiny model in its place (class 3,
    the model's own size, guidance kept) so that the same graph still runs end to end."""
    prompt = json.loads(json.dumps(prompt))
    substituted = False
    for node in prompt.values():
        if node["class_type"] == "ZipARModelLoader" and node["inputs"]["model_name"] not in available:
            node["inputs"]["model_name"], substituted = TINY, True
    if substituted:
        for node in prompt.values():
            if node["class_type"] == "ZipARSampler":
                node["inputs"].update(prompt="3", negative_prompt="", width=0, height=0, window=4, top_k=0)
    return prompt, substituted


# ----------------------------------------------------------------------------------------------------
# Tests


def test_pack_loads_and_nodes_are_registered(server):
    failed = [line for line in server.read_log().splitlines() if "IMPORT FAILED" in line]
    assert not [line for line in failed if PACK_DIR_NAME in line], failed  # (audio nodes fail without torchaudio)
    status, info = http(server.url, "/object_info")
    assert status == 200
    for name in ("ZipARModelLoader", "ZipARSampler", "ZipARVQDecode"):
        assert info[name]["category"].startswith("ZipAR/")
    options = info["ZipARModelLoader"]["input"]["required"]["model_name"][0]
    assert DEMO in options and TINY in options and MYSTERY in options
    assert "tiny/vq_ds16_c2i.pt" not in options  # the tokenizer goes with its GPT file


def test_templates_are_listed_once_with_their_thumbnails(server):
    """What the frontend (1.27) does for a custom node's templates: GET /api/workflow_templates, then per name
    /api/workflow_templates/<pack>/<name>.jpg for the card and <name>.json when it is opened."""
    status, templates = http(server.url, "/api/workflow_templates")
    assert status == 200
    names = templates[PACK_DIR_NAME]
    print(f"\nGET /api/workflow_templates -> {PACK_DIR_NAME}: {sorted(names)}")
    assert sorted(names) == sorted(TEMPLATE_NAMES)  # each once
    for name in sorted(names):
        for suffix, kind in ((".jpg", "image/jpeg"), (".json", "application/json")):
            path = f"/api/workflow_templates/{PACK_DIR_NAME}/{urllib.parse.quote(name)}{suffix}"
            status, ctype, body = fetch(server.url, path)
            print(f"  {status} {ctype:16} {len(body):6} B  {path}")
            assert status == 200 and ctype.startswith(kind), path
            with open(os.path.join(ROOT, "workflows", name + suffix), "rb") as f:
                assert body == f.read()


@pytest.mark.parametrize("name", sorted(api_workflows()))
def test_every_workflow_runs(server, name):
    available = http(server.url, "/object_info/ZipARModelLoader")[1]["ZipARModelLoader"]["input"]["required"][
        "model_name"][0]
    prompt, substituted = with_tiny_model(api_workflows()[name], available)
    for node in prompt.values():  # a fresh seed: ComfyUI would otherwise serve a cached result
        if node["class_type"] == "ZipARSampler":
            node["inputs"]["seed"] = int(time.time() * 1000) % 100000
    outcome, messages, previews, pid = server.run(prompt)
    assert outcome == "execution_success", messages[-1]
    progress = [m["data"] for m in messages if m["type"] == "progress"]
    assert progress and progress[-1]["value"] == progress[-1]["max"]
    totals = sorted({p["max"] for p in progress})
    assert totals == [progress[-1]["max"]], totals  # fixed mode: the total is known up front, one total
    assert [p["value"] for p in progress] == sorted(p["value"] for p in progress)
    assert len(previews) >= 1
    history = server.history(pid)
    saved = [img for out in history["outputs"].values() for img in out.get("images", [])]
    assert saved and all(os.path.isfile(os.path.join(server.base_dir, "output", i.get("subfolder", ""), i["filename"]))
                         for i in saved)
    stats = [out for out in history["outputs"].values() if "text" in out]
    text = stats[0]["text"][0] if stats else ""
    print(f"\n{name}{' (tiny model in place of the real one)' if substituted else ''}: {len(progress)} progress "
          f"events, totals {totals}, last {progress[-1]['value']}/{progress[-1]['max']}, {len(previews)} previews, "
          f"saved {[i['filename'] for i in saved]}\n  {text.replace(chr(10), ' | ')}")
    assert "forward passes" in text


def test_interrupt_stops_sampling_and_next_run_works(server):
    prompt = json.loads(json.dumps(api_workflows()[DEMO_WORKFLOW]))
    sampler = next(n for n in prompt.values() if n["class_type"] == "ZipARSampler")
    sampler["inputs"].update(mode="ntp", batch_size=4, seed=12345)  # 256 passes: long enough to interrupt
    sent = []

    def on_progress(data):
        if data["value"] >= 5 and not sent:
            sent.append(data["value"])
            assert http(server.url, "/interrupt", {})[0] == 200

    outcome, messages, _, _ = server.run(prompt, on_progress)
    assert outcome == "execution_interrupted", messages[-1]
    last = [m["data"] for m in messages if m["type"] == "progress"][-1]
    print(f"\ninterrupt sent at pass {sent[0]}, last progress event {last['value']}/{last['max']}")
    assert sent and last["value"] < last["max"]
    sampler["inputs"].update(mode="fixed", batch_size=1, seed=54321)
    outcome, messages, _, _ = server.run(prompt)
    assert outcome == "execution_success", messages[-1]


def _error_of(server, prompt):
    outcome, messages, _, _ = server.run(prompt)
    assert outcome == "execution_error"
    return messages[-1]["data"]["exception_message"]


def test_bad_inputs_say_what_to_change(server):
    base = api_workflows()[DEMO_WORKFLOW]

    def variant(model=None, **sampler):
        p = json.loads(json.dumps(base))
        for node in p.values():
            if node["class_type"] == "ZipARModelLoader" and model:
                node["inputs"]["model_name"] = model
            if node["class_type"] == "ZipARSampler":
                node["inputs"].update(seed=int(time.time() * 1000) % 100000, **sampler)
        return p

    messages = {
        "window larger than the grid": _error_of(server, variant(window=64)),
        "unsupported width": _error_of(server, variant(width=33)),
        "unknown family": _error_of(server, variant(model=MYSTERY)),
        "config without weights": _error_of(server, variant(model=HF_NO_WEIGHTS)),
    }
    _, answer = server.queue(variant(model="../../../etc/passwd"))
    messages["path outside the model folder"] = json.dumps(answer["node_errors"])
    for what, text in messages.items():
        print(f"\n{what}: {text.strip()}")
    assert "set window to 1..16" in messages["window larger than the grid"]
    assert "width 33 is not a positive multiple of 2" in messages["unsupported width"]  # demo: 2 px per token
    assert f"could not load '{MYSTERY}'" in messages["unknown family"]
    assert "not a LlamaGen GPT checkpoint" in messages["unknown family"]
    assert "value_not_in_list" in messages["path outside the model folder"]
    assert f"could not load '{HF_NO_WEIGHTS}'" in messages["config without weights"]
    assert "has no weight files" in messages["config without weights"]
    assert "Fix:" in messages["config without weights"] and "download" in messages["config without weights"]
    outcome, _, _, pid = server.run(variant(prompt="", batch_size=2))  # a class model with an empty prompt
    assert outcome == "execution_success"
    stats = [out["text"][0] for out in server.history(pid)["outputs"].values() if "text" in out]
    print(f"\nempty prompt on the demo: {stats[0].splitlines()[-1]}")
    assert "classes: " in stats[0]
