"""The vllm backend's request mapping, against a recording stand-in for the `vllm` module (vLLM cannot be
installed on these CPU machines; the subject here is the mapping, not the engine). On a GPU machine with
vLLM installed, the `gpu` test compares its greedy answers with the hf backend's."""

import math
import sys
import types
from dataclasses import dataclass, field

import pytest
from PIL import Image

from jade.models.backends.base import Request


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


@dataclass
class _Params:
    n: int = 1
    temperature: float = 1.0
    top_k: int = -1
    seed: int | None = None
    max_tokens: int = 16
    logprobs: int | None = None
    ignore_eos: bool = False


@dataclass
class _LLM:
    calls: list = field(default_factory=list)

    def __init__(self, **kwargs):
        self.kwargs, self.calls = kwargs, []

    def get_tokenizer(self):
        return types.SimpleNamespace(eos_token_id=1, pad_token_id=0)

    def generate(self, prompts, params, use_tqdm=True):
        self.calls.append((prompts, params))
        return [
            _ReqOut([_Out(f" {p['prompt'].strip()}#{k} ", [5, 6, 1], [{5: _Logprob(-0.1)}, {6: _Logprob(-0.3)},
                                                                       {1: _Logprob(-2.0)}])
                     for k in range(sp.n)])
            for p, sp in zip(prompts, params, strict=True)
        ]  # fmt: skip


@pytest.fixture
def backend(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=_LLM, SamplingParams=_Params))
    from jade.models.backends import make_backend

    return make_backend("vllm", "/models/generator", batch_size=64)


def test_engine_is_built_with_prefix_caching_and_no_remote_code(backend):
    kw = backend.llm.kwargs
    assert kw["model"] == "/models/generator"
    assert kw["enable_prefix_caching"] is True
    assert kw["trust_remote_code"] is False
    assert kw["limit_mm_per_prompt"] == {"image": 1}
    assert kw["max_num_seqs"] == 64


def test_requests_map_to_n_samples_and_greedy(backend):
    images = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    reqs = [Request(1, "question yes/no", 20, n=3, greedy=False, top_k=20, temperature=0.7, seed=42),
            Request(0, "answer en is it red?", 8)]  # fmt: skip
    out = backend.generate(backend.prepare(images), reqs)
    prompts, params = backend.llm.calls[0]
    assert [p["prompt"] for p in prompts] == ["question yes/no\n", "answer en is it red?\n"]
    assert prompts[0]["multi_modal_data"]["image"] is images[1]
    assert (params[0].n, params[0].top_k, params[0].temperature, params[0].seed, params[0].max_tokens) == (
        3,
        20,
        0.7,
        42,
        20,
    )
    assert (params[1].n, params[1].temperature, params[1].max_tokens) == (1, 0.0, 8)
    assert [len(o) for o in out] == [3, 1]
    assert out[0][2].text == "question yes/no#2"
    assert out[1][0].score == pytest.approx(math.exp(-0.2))  # EOS excluded from the mean


def test_missing_vllm_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import fails
    from jade.models.backends import make_backend

    with pytest.raises(RuntimeError, match="pip install"):
        make_backend("vllm", "/models/generator")


@pytest.mark.gpu
def test_vllm_greedy_agrees_with_hf(
    tmp_path, monkeypatch
):  # runs only where vLLM and a GPU exist (make test-gpu)
    vllm = pytest.importorskip("vllm")
    del vllm
    from jade.models import factory
    from jade.models.backends.hf import HFBackend
    from jade.models.backends.vllm import VLLMBackend
    from tests.models.test_backend_hf import ARCH, IMAGES, TEXTS

    processor = factory.build_processor(TEXTS, ARCH)
    factory.save(factory.build_model(ARCH, processor, seed=0), processor, tmp_path, {"role": "test"})
    reqs = [Request(i % 3, f"answer en question {i}?", 5) for i in range(6)]
    hf = HFBackend(*factory.load(str(tmp_path)))
    monkeypatch.setenv("VLLM_ATTENTION_BACKEND", "FLEX_ATTENTION")  # PaliGemma's prefix-LM mask
    vl = VLLMBackend(str(tmp_path))
    assert [c[0].text for c in vl.generate(IMAGES, reqs)] == [c[0].text for c in hf.generate(IMAGES, reqs)]
