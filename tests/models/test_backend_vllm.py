"""The vllm backend without vLLM (the default tier): the request mapping against a recording stand-in for the
`vllm` module, the worker protocol through a real worker process (the stand-in on its path), the refusals and
the checkpoint export. Real vLLM against hf: tests/models/test_vllm_engine.py (make test-vllm)."""

import json
import math
import sys
import types
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from jade.models import attention
from jade.models.backends import vllm as vllm_backend
from jade.models.backends import vllm_export
from jade.models.backends.base import Request

FAKE_VLLM = """
import types
from dataclasses import dataclass, field

__version__ = "0.0-fake"


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_k: int = 0
    seed: int | None = None
    max_tokens: int = 16
    logprobs: int | None = None
    ignore_eos: bool = False
    stop_token_ids: list = field(default_factory=list)


@dataclass
class _Logprob:
    logprob: float


@dataclass
class _Out:
    text: str
    token_ids: list
    logprobs: list


@dataclass
class _ReqOut:
    outputs: list


class LLM:
    def __init__(self, **kwargs):
        self.kwargs, self.calls = kwargs, []

    def get_tokenizer(self):
        return types.SimpleNamespace(eos_token_id=1, pad_token_id=0)

    def generate(self, prompts, params, use_tqdm=True):
        self.calls.append((prompts, params))
        out = []
        for p, sp in zip(prompts, params, strict=True):
            image = p["multi_modal_data"]["image"]
            if p["prompt"].startswith("fail"):
                raise ValueError("asked to fail")
            seen = f"{image.size[0]}x{image.size[1]}:{image.getpixel((0, 0))}"  # what arrived
            out.append(_ReqOut([_Out(f" {p['prompt'].strip()}#{k}@{seen} ", [5, 6, 1],
                                     [{5: _Logprob(-0.1)}, {6: _Logprob(-0.3)}, {1: _Logprob(-2.0)}])
                                for k in range(sp.n)]))
        return out
"""


def _fake_vllm(device: str = "cpu") -> dict:
    ns: dict = {}
    exec(FAKE_VLLM, ns)
    mod = types.ModuleType("vllm")
    mod.__dict__.update({k: v for k, v in ns.items() if not k.startswith("__")})
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = types.SimpleNamespace(device_type=device)
    mod.platforms = platforms
    return {"vllm": mod, "vllm.platforms": platforms}


def _checkpoint(path: Path, rule: str | None = "causal", head_dim: int = 32) -> Path:
    """A checkpoint as far as the backend reads it before the engine: config, rule, safetensors weights."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(
        json.dumps({"model_type": "paligemma", "text_config": {"head_dim": head_dim}})
    )
    if rule is not None:
        (path / "jade_model.json").write_text(json.dumps({"role": "test", "attention": rule}))
    weights = {
        "vision_tower.embeddings.patch_embedding.weight": torch.arange(6.0).reshape(2, 3),
        "vision_tower.encoder.layers.0.mlp.fc1.bias": torch.ones(5, dtype=torch.bfloat16),
        "language_model.model.embed_tokens.weight": torch.zeros(3, 2),
    }
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


@pytest.fixture(autouse=True)
def export_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JADE_VLLM_CACHE", str(tmp_path / "export"))
    monkeypatch.setattr(vllm_backend, "_DEVICES", {})
    monkeypatch.setattr(vllm_backend, "_SPARE", {})


@pytest.fixture
def backend(tmp_path, monkeypatch):
    for name, mod in _fake_vllm().items():
        monkeypatch.setitem(sys.modules, name, mod)
    from jade.models.backends import EngineOptions, make_backend

    return make_backend("vllm", str(_checkpoint(tmp_path / "generator")), EngineOptions(decode_rows=64))


def test_engine_is_built_with_prefix_caching_fp32_and_no_remote_code(backend, tmp_path):
    kw = backend._engine.llm.kwargs
    assert Path(kw["model"]).parent == tmp_path / "export"  # the exported copy, not the checkpoint
    assert kw["enable_prefix_caching"] is True
    assert kw["trust_remote_code"] is False
    assert kw["limit_mm_per_prompt"] == {"image": 1}
    assert kw["max_num_seqs"] == 64
    assert (kw["dtype"], kw["attention_backend"]) == ("float32", "CPU_ATTN")  # CPU: exact, an engine argument
    assert backend.rule == "causal" and backend.device == "cpu"


def test_requests_map_to_n_samples_and_greedy(backend):
    images = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    reqs = [
        Request(1, "question yes/no", 20, n=3, greedy=False, top_k=20, temperature=0.7, seed=42),
        Request(0, "answer en is it red?", 8),
    ]
    out = backend.generate(backend.prepare(images), reqs)
    prompts, params = backend._engine.llm.calls[0]
    assert [p["prompt"] for p in prompts] == ["question yes/no\n", "answer en is it red?\n"]
    assert prompts[0]["multi_modal_data"]["image"] is images[1]
    p = params[0]
    assert (p.n, p.top_k, p.temperature, p.seed, p.max_tokens) == (3, 20, 0.7, 42, 20)
    assert (params[1].n, params[1].temperature, params[1].max_tokens) == (1, 0.0, 8)
    assert params[1].stop_token_ids == [0, 1]  # EOS and pad, as hf stops
    assert [len(o) for o in out] == [3, 1]
    assert out[0][2].text == "question yes/no#2@8x8:(0, 0, 255)"
    assert out[1][0].score == pytest.approx(math.exp(-0.2))  # EOS excluded from the mean


def test_top_k_0_means_the_whole_vocabulary(backend):
    params = backend._engine.sampling_params(
        {"greedy": False, "n": 2, "temperature": 1.0, "top_k": 0, "seed": 1, "max_new_tokens": 4}
    )
    assert params.top_k == 0  # 0: the whole vocabulary


@pytest.mark.parametrize("rule", ["prefix", "image", None])
def test_rules_vllm_on_cpu_does_not_compute_are_refused(tmp_path, monkeypatch, rule):
    for name, mod in _fake_vllm("cpu").items():
        monkeypatch.setitem(sys.modules, name, mod)
    ckpt = _checkpoint(tmp_path / "m", rule)
    with pytest.raises(attention.AttentionRuleError) as err:
        vllm_backend.VLLMBackend(str(ckpt))
    assert f"'{rule or 'prefix'}'" in str(err.value) and "'causal'" in str(err.value)


def test_on_gpu_the_image_rule_is_run_and_causal_refused(tmp_path, monkeypatch):
    for name, mod in _fake_vllm("cuda").items():
        monkeypatch.setitem(sys.modules, name, mod)
    b = vllm_backend.VLLMBackend(
        str(_checkpoint(tmp_path / "img", "image", head_dim=16))
    )  # no CPU head limit
    assert b.rule == "image" and "attention_backend" not in b.args and "dtype" not in b.args
    with pytest.raises(attention.AttentionRuleError, match="'causal'.*'image'"):
        vllm_backend.VLLMBackend(str(_checkpoint(tmp_path / "causal", "causal")))


def test_head_dim_vllm_cpu_cannot_run_is_refused(tmp_path, monkeypatch):
    for name, mod in _fake_vllm("cpu").items():
        monkeypatch.setitem(sys.modules, name, mod)
    with pytest.raises(vllm_export.UnsupportedCheckpoint, match=r"head_dim is 16; .*32, 64, 80, 96, .* 512"):
        vllm_backend.VLLMBackend(str(_checkpoint(tmp_path / "m", head_dim=16)))


def test_missing_vllm_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import fails: the worker's environment is needed
    monkeypatch.setenv("JADE_VLLM_PYTHON", str(tmp_path / "nowhere" / "python"))
    from jade.models.backends import make_backend

    with pytest.raises(RuntimeError, match="make setup-vllm"):
        make_backend("vllm", str(_checkpoint(tmp_path / "m")))


# -- the worker process, with the stand-in vllm on its path --------------------------------------------------


@pytest.fixture
def worker_python(tmp_path, monkeypatch):
    pkg = tmp_path / "fakesite" / "vllm"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(FAKE_VLLM)
    (pkg / "platforms.py").write_text(
        "import types\ncurrent_platform = types.SimpleNamespace(device_type='cpu')\n"
    )
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={pkg.parent} exec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setitem(sys.modules, "vllm", None)  # not importable here: the worker is used
    monkeypatch.setenv("JADE_VLLM_PYTHON", str(wrapper))
    return str(wrapper)


def test_the_worker_answers_over_pipes(worker_python, tmp_path):
    ckpt = _checkpoint(tmp_path / "m")
    with vllm_backend.VLLMBackend(str(ckpt), batch_size=8) as b:
        assert b._worker is not None and b.device == "cpu" and b.eos == {0, 1}
        images = [Image.new("RGB", (9, 7), (10, 20, 30)), Image.new("RGB", (5, 5), (200, 100, 0))]
        reqs = [Request(1, "caption", 5, n=2, greedy=False, top_k=3, seed=1), Request(0, "answer", 4)]
        out = b.generate_samples(b.prepare(images), reqs)
        assert [[s.text for s in row] for row in out] == [
            ["caption#0@5x5:(200, 100, 0)", "caption#1@5x5:(200, 100, 0)"],
            ["answer#0@9x7:(10, 20, 30)"],
        ]
        assert out[1][0].token_ids == (5, 6, 1)
        assert out[1][0].score == pytest.approx(math.exp(-0.2))
        assert b.generate(images, reqs[1:])[0][0].text == "answer#0@9x7:(10, 20, 30)"  # plain PIL images too
        with pytest.raises(RuntimeError, match="asked to fail"):
            b.generate(images, [Request(0, "fail now", 3)])
        assert b.generate(images, reqs[1:])[0][0].text.startswith("answer")  # still serving after an error
        proc = b._worker.proc
    assert proc.wait(timeout=10) == 0  # closed by the context manager


def test_a_refused_checkpoint_starts_no_engine(worker_python, tmp_path):
    assert vllm_backend.engine_device() == "cpu"  # learnt from a worker, which is kept for the next backend
    with pytest.raises(attention.AttentionRuleError, match="'image'.*'causal'"):
        vllm_backend.VLLMBackend(str(_checkpoint(tmp_path / "m", "image")))
    assert worker_python in vllm_backend._SPARE  # refused before the worker was taken


# -- the export --------------------------------------------------------------------------------------------


def test_export_renames_the_vision_tower_and_keeps_the_bytes(tmp_path):
    from safetensors import safe_open

    ckpt = _checkpoint(tmp_path / "m")
    out = vllm_export.export(ckpt, tmp_path / "cache")
    with (
        safe_open(str(ckpt / "model.safetensors"), "pt") as a,
        safe_open(str(out / "model.safetensors"), "pt") as b,
    ):
        assert sorted(b.keys()) == sorted(vllm_export.vllm_key(k) for k in a.keys())
        assert "vision_tower.vision_model.embeddings.patch_embedding.weight" in b.keys()
        assert "language_model.model.embed_tokens.weight" in b.keys()
        for k in a.keys():
            x, y = a.get_tensor(k), b.get_tensor(vllm_export.vllm_key(k))
            assert x.dtype == y.dtype and torch.equal(x, y)
        assert b.metadata() == {"format": "pt"}
    assert json.loads((out / "jade_model.json").read_text())["attention"] == "causal"
    assert vllm_export.export(ckpt, tmp_path / "cache") == out  # fingerprinted: reused
    (ckpt / "jade_model.json").write_text(json.dumps({"attention": "causal", "changed": 1}))
    assert vllm_export.export(ckpt, tmp_path / "cache") != out  # a changed checkpoint: a new copy
    assert {
        vllm_export.transformers_key(vllm_export.vllm_key(k))
        for k in ("vision_tower.head.probe", "model.vision_tower.encoder.x", "language_model.lm_head.weight")
    } == {
        "vision_tower.head.probe",
        "model.vision_tower.encoder.x",
        "language_model.lm_head.weight",
    }
    assert vllm_export.vllm_key("vision_tower.vision_model.x") == "vision_tower.vision_model.x"


def test_export_of_a_real_checkpoint_loads_back_in_transformers(tmp_path):
    from types import SimpleNamespace

    from jade.models import factory

    arch = SimpleNamespace(
        image_size=16,
        patch_size=8,
        vision_hidden=32,
        vision_layers=1,
        text_hidden=32,
        text_layers=1,
        head_dim=32,
        kv_heads=1,
        vocab_size=300,
    )
    processor = factory.build_processor(["caption en", "a red square"] * 20, arch)
    factory.save(factory.build_model(arch, processor), processor, tmp_path / "m", {"attention": "causal"})
    out = vllm_export.export(tmp_path / "m", tmp_path / "cache")
    a, b = factory.load(str(tmp_path / "m"))[0].state_dict(), factory.load(str(out))[0].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_images_reach_vllm_with_the_pixels_hf_computes(tmp_path):
    """Resized beforehand as hf's PIL image processor resizes them, vLLM's (torchvision) processor has nothing
    left to resize: both see the same pixels."""
    from types import SimpleNamespace

    from jade.models import factory

    arch = SimpleNamespace(image_size=16, patch_size=8, vocab_size=300)
    processor = factory.build_processor(["caption en", "a red square"] * 20, arch)
    processor.save_pretrained(tmp_path / "m")
    size = vllm_backend.pixel_size(str(tmp_path / "m"))
    assert size == (16, 16, 3)  # bicubic
    img = Image.effect_mandelbrot((37, 23), (-2, -1.5, 1, 1.5), 60).convert("RGBA")
    img.putalpha(Image.linear_gradient("L").resize(img.size))  # partly transparent
    small = vllm_backend.resized(img, size)
    assert small.size == (16, 16) and small.mode == "RGB"
    pixels = processor.image_processor(images=[img, small], return_tensors="pt")["pixel_values"]
    assert torch.equal(pixels[0], pixels[1])
    assert vllm_backend.resized(small, size) is small
