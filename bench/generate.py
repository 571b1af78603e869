"""Generate + filter benchmark: the factory's stage workers against a per-question `transformers.generate` loop,
and vLLM beside them, on the same checkpoints and images, under each attention rule (`models.attention`).

Three paths run side by side in this one process:

- factory: the shard workers of the two model stages, generate (the generator) and answer (the filter
  model), built by `app.runner.build_stages` from the sample manifest, with the hf engine, exactly as a run
  uses them (their tables written with `pipeline.shardmap.commit`);
- naive: for each image, one `model.generate` call per sampled prompt (the caption prompt and one per
  question type, ``num_return_sequences=n``), then one greedy call per question with the generator and one
  with the filter model, and one per presupposition check the filter stage asks (`models.presupposition`),
  batch size 1, inputs built by `models.train.example_batch` under the checkpoint's rule (so the naive loop
  computes the same attention as the engine);
- vllm: the same stage workers with ``generate.backend: vllm`` (the `vllm` backend, vLLM in `.venv-vllm`),
  on the checkpoint whose rule vLLM computes on this device (``causal`` on a CPU); checkpoints under the other
  rules are offered to it too and its refusal is recorded. The backend's worker is swapped for
  `bench/vllm_worker.py`, the same engine with counters (computed and cached prompt tokens, vision rows).

The naive loop answers the questions the factory sampled, so the greedy answers of both models (and the
filter's check answers) can be compared one for one (`outputs_identical`); vLLM answers the same questions
(greedy agreement with hf). Wall and CPU seconds are both reported: the best of interleaved rounds.
Vision-encoder passes are counted with a forward hook on each model's vision tower, prefill tokens and image
prefills (rows of image tokens prefilled) by the engines' counters. Peak memory of the generate stage is
measured in fresh subprocesses at 1x and 4x the images.

The checkpoints: trained sample-world models if given (``--models DIR`` with generator/ and filter/),
otherwise two models of the sample manifest's size (head_dim 32, which vLLM's CPU attention needs) with
random weights drawn at std 0.3 on every 2-D weight, so that their answers depend on the image and the prompt
(at the usual std 0.02 every request gets the same empty answer and agreement proves nothing), and the EOS
embedding set so that outputs end after a few tokens (`EOS_SCALE`). The same weights are saved once per rule;
only the recorded ``attention`` differs. Results and their reading: docs/bench.md.

    python -m bench.generate --out runs/bench [--images 24] [--rounds 2] [--rules image] [--models DIR]
                             [--threads N] [--no-vllm]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

from jade.app.manifest import load_manifest
from jade.app.runner import build_stages, manifest_env, run_manifest
from jade.formats.run_tables import load_images
from jade.formats.samples import ShardRef
from jade.models import attention, factory, presupposition, tasks
from jade.models.backends.hf import vision_tower
from jade.models.specs import Architecture
from jade.models.train import example_batch
from jade.pipeline.executor import LocalExecutor
from jade.pipeline.rundir import RunDir, fingerprint
from jade.pipeline.shardmap import commit
from jade.pipeline.stage import Runtime
from jade.sampleworld import WORLD_FOLDER
from jade.stages.answers import CHECK_TOKENS, Answers
from jade.stages.dedupe import Dedupe
from jade.stages.finetune import Finetune
from jade.stages.generate import Generate

log = logging.getLogger("jade")
RULES = attention.RULES
HEADLINE = "image"  # the rule whose figures are the report's top-level keys
SMALL_WORLD = [
    "sample_world.vg_images=20",
    "sample_world.gqa_images=20",
    "sample_world.vqa_train_images=20",
    "sample_world.vqa_val_images=5",
    # the benchmark brings its own checkpoints: the manifest's fine-tuning bases are not needed
    "models.generator.base=null",
    "models.filter.base=null",
]
# The sample manifest's model size, with head_dim 32 (vLLM's CPU attention has no head_dim 16).
ARCH = Architecture(
    image_size=48,
    patch_size=16,
    vision_hidden=128,
    vision_layers=2,
    text_hidden=192,
    text_layers=2,
    head_dim=32,
    kv_heads=1,
    vocab_size=1000,
)
WEIGHT_STD = 0.3
# The EOS row of the (tied) embeddings: EOS_SCALE times a random unit vector. EOS then wins where the final
# hidden state points its way, so outputs end after a few tokens, depending on the input, as a trained model's
# do (captions and questions about 12 tokens, answers about 5); at 0 every row decodes its whole token limit.
EOS_SCALE = 10.0
MODELS_VERSION = 2  # bump when the way the random models are made changes


def world_overrides(images: int) -> list[str]:
    return [*SMALL_WORLD, f"sample_world.cc3m_images={images}", "sample_world.cc3m_shards=2"]


# ------------------------------------------------------------------------------------------ run directories
def make_base(out: Path, name: str, images: int) -> Path:
    """A run directory with the sample world's images ingested and deduplicated (nothing generated yet)."""
    root = out / name
    run_manifest("sample", str(root), world_overrides(images), ["ingest", "dedupe"], executor=LocalExecutor())
    return root


def rule_run(base: Path, dest: Path, models: Path) -> Path:
    """A copy of `base` (ingested, deduplicated) with the checkpoints of `models` in place (links)."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(
        base, dest, ignore=shutil.ignore_patterns("checkpoints", "_lock*", "*.lock"), symlinks=True
    )
    for role in ("generator", "filter"):
        ckpt = RunDir(dest).path(Finetune.checkpoint(role))
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        ckpt.symlink_to((models / role).resolve(), target_is_directory=True)
    return dest


def shards_of(root: Path) -> list[ShardRef]:
    return [ShardRef(**s) for s in json.loads(RunDir(root).run_json.read_text())["shards"]]


def usable_keys(root: Path, shard_id: str) -> list[str]:
    return RunDir(root).read_table(Dedupe.SAMPLES, shard_id, columns=["key"]).column(0).to_pylist()


def usable(root: Path) -> list[str]:
    return [k for s in shards_of(root) for k in usable_keys(root, s.shard_id)]


def bench_manifest(root: Path, backend: str = "hf"):
    """The sample manifest as a run of `root` reads it (its generate, filter and resources settings)."""
    sets = [*world_overrides(0), f"generate.backend={backend}"]
    return load_manifest("sample", sets, manifest_env(RunDir(root)))


# ------------------------------------------------------------------------------------------------- models
def world_texts(world: Path) -> list[str]:
    """The sample world's region phrases, questions and answers, and the task prompts: a tokenizer corpus."""
    texts = [tasks.CAPTION_PROMPT] + [tasks.question_prompt(t) for t in ("yes/no", "number", "other")]
    for r in json.loads((world / "vg" / "region_descriptions.json").read_text()):
        texts += [reg["phrase"] for reg in r["regions"]]
    for q in json.loads((world / "vg" / "question_answers.json").read_text()):
        texts += [t for qa in q["qas"] for t in (tasks.answer_prompt(qa["question"]), qa["answer"])]
    return texts


def random_models(
    out: Path, world: Path, arch: Architecture = ARCH, std: float = WEIGHT_STD, eos_scale: float = EOS_SCALE
) -> dict[str, Path]:
    """Generator and filter with random weights (normal, `std`, on every 2-D weight: embeddings and projections;
    norms keep their init; the EOS row per `EOS_SCALE`), saved once per rule (rule -> a directory with
    generator/ and filter/)."""
    texts = world_texts(world)
    spec = {
        "arch": dataclasses.asdict(arch),
        "std": std,
        "eos_scale": eos_scale,
        "texts": fingerprint(texts),
        "v": MODELS_VERSION,
    }
    root = out / "models" / f"random-{fingerprint(spec)}"
    dirs = {rule: root / rule for rule in RULES}
    if all(
        (d / role / factory.JADE_META).exists() for d in dirs.values() for role in ("generator", "filter")
    ):
        return dirs
    for seed, role in enumerate(("generator", "filter")):
        processor = factory.build_processor(texts, arch)
        model = factory.build_model(arch, processor, seed=seed)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() >= 2:
                    p.copy_(torch.randn(p.shape, generator=gen) * std)
            if eos_scale:
                direction = torch.randn(arch.text_hidden, generator=gen)
                model.get_input_embeddings().weight[processor.tokenizer.eos_token_id] = (
                    eos_scale * direction / direction.norm()
                )
        for rule, d in dirs.items():
            factory.save(
                model,
                processor,
                d / role,
                {
                    "role": role,
                    "attention": rule,
                    "bench": spec,
                    "weights": f"random normal std {std}, seed {seed}; EOS row {eos_scale} x a unit vector",
                },
            )
    return dirs


def given_models(out: Path, models: Path) -> dict[str, Path]:
    """Copies of trained checkpoints, one per rule (the recorded rule rewritten: a speed and exactness
    benchmark, not a quality one; a checkpoint is only meaningful under the rule it was trained with)."""
    dirs = {}
    for rule in RULES:
        dirs[rule] = d = out / "models" / f"given-{rule}"
        for role in ("generator", "filter"):
            shutil.rmtree(d / role, ignore_errors=True)
            shutil.copytree(models / role, d / role)
            meta = factory.read_meta(d / role)
            meta.update(attention=rule, trained_attention=meta.get("attention", attention.DEFAULT))
            (d / role / factory.JADE_META).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return dirs


# ------------------------------------------------------------------------------------------------ factory
class Factory:
    """The two model stages' shard workers on one run directory, built once (models loaded): ``generate`` (the
    generator) and ``filter`` (the filter model: the answer stage)."""

    STAGES = {"generate": Generate, "filter": Answers}

    def __init__(
        self, root: Path, threads: int, backend: str = "hf", stages: tuple[str, ...] = ("generate", "filter")
    ):
        self.root, self.run = root, RunDir(root)
        built = {type(st): st for st in build_stages(bench_manifest(root, backend))}
        order = tuple(s.shard_id for s in shards_of(root))
        self.stages = {}
        for name in stages:
            st = built[self.STAGES[name]]
            rt = Runtime(batch_size=st.resources.batch_size, threads=threads, shard_order=order)
            self.stages[name] = (st, st.worker(self.run, rt))  # the model loads here, before any clock

    def backend(self, stage: str):
        return self.stages[stage][1].backend

    def clear(self) -> None:
        """Nothing to skip on: no outputs and no records of the model stages."""
        for st, _ in self.stages.values():
            for shard in shards_of(self.root):
                for g in st.owns(shard.shard_id):
                    for p in self.run.root.glob(g):
                        p.unlink()
            shutil.rmtree(self.run.state / st.name, ignore_errors=True)

    def __call__(self) -> dict:
        """One pass of every stage over every shard; seconds and the engines' counters, per stage."""
        self.clear()
        res = {}
        for name, (st, worker) in self.stages.items():
            before = counters(worker.backend)
            t0, c0 = time.perf_counter(), time.process_time()
            images = 0
            for shard in shards_of(self.root):
                images += commit(self.run, st, shard, "bench", worker(shard))["images"]
            after = counters(worker.backend)
            res[name] = {
                "seconds": time.perf_counter() - t0,
                "cpu_seconds": time.process_time() - c0,
                "images": images,
                **after,
                **{k: v - before[k] for k, v in after.items() if k in COUNTED},
            }
        return res


COUNTED = (
    "vision_rows",
    "prefill_tokens",
    "image_prefills",
    "cached_prompt_tokens",
    "prompt_tokens",
    "requests",
    "generated_tokens",
)


def counters(backend) -> dict:
    if hasattr(backend, "bench_stats"):
        return backend.bench_stats()
    return {k: getattr(backend, k) for k in ("vision_rows", "prefill_tokens", "image_prefills")}


def factory_outputs(root: Path) -> dict:
    """(key, question) -> (generator answer, filter answer, ((check question, filter answer), ...)) for every
    question the generator answered (the checks: what the question presupposes, `models.presupposition`)."""
    out = {}
    for f in sorted(Path(root).glob(Answers.OUTPUT.glob())):
        for p in pq.read_table(f).to_pylist():
            if p["status"] == "ok":
                checks = tuple((c["question"], c["answer"]) for c in p.get("checks") or [])
                out[(p["key"], p["question"])] = (p["answer"], p["filter_answer"], checks)
    return out


# -------------------------------------------------------------------------------------------------- naive
class Naive:
    """The plain loop: one `transformers.generate` call per prompt, batch size 1, under the checkpoint's rule."""

    def __init__(self, model_dir: Path):
        self.model, self.proc = factory.load(str(model_dir))
        self.rule = attention.rule_of(model_dir)
        self.tok = self.proc.tokenizer
        self.eos = {self.tok.eos_token_id, self.tok.pad_token_id}
        self.vision_rows = self.prefill_tokens = self.image_prefills = self.decoded_tokens = 0
        vision_tower(self.model).register_forward_hook(self._count)

    def _count(self, module, args, output):
        self.vision_rows += args[0].shape[0]

    @torch.inference_mode()
    def __call__(
        self, image, prompt: str, max_new: int, n: int = 0, top_k: int = 0, temp: float = 1.0
    ) -> list[str]:
        batch = example_batch(self.proc, [image], [prompt], None, "cpu", self.rule)
        kw = {"top_k": top_k or None, "temperature": temp, "num_return_sequences": n} if n else {}
        rows = max(n, 1)  # generate expands the inputs to n rows before the prefill
        self.prefill_tokens += batch["input_ids"].numel() * rows
        self.image_prefills += rows
        seqs = self.model.generate(**batch, max_new_tokens=max_new, do_sample=bool(n), **kw)
        texts = []
        for toks in seqs[:, batch["input_ids"].shape[1] :].tolist():
            stop = next((j for j, t in enumerate(toks) if t in self.eos), len(toks))
            self.decoded_tokens += min(stop + 1, len(toks))  # the EOS too: it was decoded
            texts.append(tasks.clean_text(self.tok.decode(toks[:stop], skip_special_tokens=True).strip()))
        return texts

    def counters(self) -> dict:
        return {
            "vision_rows": self.vision_rows,
            "prefill_tokens": self.prefill_tokens,
            "image_prefills": self.image_prefills,
            "decoded_tokens": self.decoded_tokens,
        }


def run_naive(root: Path, gen: Naive, fil: Naive, wanted: dict) -> dict:
    """Per image: every sampled prompt, then the factory's answered questions (generator, then filter), then
    the filter's presupposition checks of them."""
    s = bench_manifest(root).generate
    by_key: dict[str, list[str]] = {}
    for key, question in wanted:
        by_key.setdefault(key, []).append(question)
    mt, got, images = s.max_new_tokens, {}, 0
    before = {"generator": gen.counters(), "filter": fil.counters()}
    t0, c0 = time.perf_counter(), time.process_time()
    for shard in shards_of(root):
        for key, img, _ in load_images(shard, set(usable_keys(root, shard.shard_id))):
            images += 1
            if s.captions:
                gen(img, tasks.CAPTION_PROMPT, mt.caption, s.captions, s.top_k, s.temperature)
            for qtype, n in s.questions.items():
                if n:
                    gen(img, tasks.question_prompt(qtype), mt.question, n, s.top_k, s.temperature)
            answered = {}
            for q in by_key.get(key, []):
                a = gen(img, tasks.answer_prompt(q), mt.answer)[0]
                answered[q] = (a, fil(img, tasks.answer_prompt(q), mt.answer)[0] if a else None)
            # the filter's presupposition checks, each distinct one once per image, as the filter stage asks
            asked = [q for q, (a, _) in answered.items() if a]
            checked = {
                cq: fil(img, tasks.answer_prompt(cq), CHECK_TOKENS)[0]
                for cq in dict.fromkeys(c for q in asked for c, _ in presupposition.checks(q))
            }
            for q, (a, fa) in answered.items():
                checks = tuple((cq, checked[cq]) for cq, _ in presupposition.checks(q)) if a else ()
                got[(key, q)] = (a, fa, checks)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    by_model = {
        role: {k: v - before[role][k] for k, v in m.counters().items()}
        for role, m in (("generator", gen), ("filter", fil))
    }
    return {"seconds": secs, "cpu_seconds": cpu, "images": images, "outputs": got, "by_model": by_model}


# ---------------------------------------------------------------------------------------------- one rule
def per_image(by_model: dict, n: dict, key: str) -> dict:
    """Per model, per image it was given: the filter encodes only images with an answered question."""
    return {role: c[key] / max(1, n[role]) for role, c in by_model.items()}


def images_by_model(n: int, outputs: dict) -> dict:
    return {"generator": n, "filter": len({key for (key, _), (answer, *_) in outputs.items() if answer})}


def compare(mine: dict, theirs: dict) -> tuple[bool, list[dict]]:
    identical = mine.keys() == theirs.keys() and all(mine[k] == theirs[k] for k in mine)
    diffs = [
        {"key": k[0], "question": k[1], "factory": mine.get(k), "naive": theirs.get(k)}
        for k in sorted(set(mine) | set(theirs))
        if mine.get(k) != theirs.get(k)
    ][:10]
    return identical, diffs


def bench_rule(root: Path, threads: int, rounds: int) -> dict:
    """The factory and the naive loop on one run directory (one rule), interleaved rounds, best of each."""
    rule = attention.rule_of(RunDir(root).path(Finetune.checkpoint("generator")))
    fac = Factory(root, threads)
    gen, fil = (
        Naive(RunDir(root).path(Finetune.checkpoint("generator"))),
        Naive(RunDir(root).path(Finetune.checkpoint("filter"))),
    )
    fast_runs, naive_runs = [], []
    for r in range(rounds):  # interleaved: the machine's other load hits both alike
        fast_runs.append(fac())
        mine = factory_outputs(root)
        naive_runs.append(run_naive(root, gen, fil, mine))
        log.info(
            "bench %s round %d: factory %.2fs, naive %.2fs",
            rule,
            r + 1,
            sum(v["seconds"] for v in fast_runs[-1].values()),
            naive_runs[-1]["seconds"],
        )
    fast = min(fast_runs, key=lambda f: sum(v["seconds"] for v in f.values()))
    naive = min(naive_runs, key=lambda x: x["seconds"])
    n = naive["images"]
    identical, diffs = compare(mine, naive_runs[-1]["outputs"])  # the same round's outputs
    secs = sum(v["seconds"] for v in fast.values())
    cpu = min(sum(v["cpu_seconds"] for v in f.values()) for f in fast_runs)
    naive_cpu = min(x["cpu_seconds"] for x in naive_runs)
    by_model = {"generator": fast["generate"], "filter": fast["filter"]}
    seen = images_by_model(n, mine)
    return {
        "rule": rule,
        "images": n,
        "images_by_model": seen,
        "questions_answered": len(mine),
        "answers_nonempty": sum(1 for a, _, _ in mine.values() if a),
        "filter_answers_nonempty": sum(1 for _, fa, _ in mine.values() if fa),
        "distinct_answers": len({a for a, _, _ in mine.values()}),
        "presupposition_checks": len({(k[0], cq) for k, (_, _, cs) in mine.items() for cq, _ in cs}),
        "images_per_s": n / secs,
        "naive_images_per_s": n / naive["seconds"],
        "speedup_vs_naive": naive["seconds"] / secs,
        # CPU seconds of this process (best round of each path): less sensitive to a shared machine's load
        "images_per_cpu_s": n / cpu,
        "naive_images_per_cpu_s": n / naive_cpu,
        "speedup_vs_naive_cpu": naive_cpu / cpu,
        "vision_encoder_passes_per_image": per_image(by_model, seen, "vision_rows"),
        "prefill_tokens_per_image": per_image(by_model, seen, "prefill_tokens"),
        "image_prefills_per_image": per_image(by_model, seen, "image_prefills"),
        "naive_vision_encoder_passes_per_image": per_image(naive["by_model"], seen, "vision_rows"),
        "naive_prefill_tokens_per_image": per_image(naive["by_model"], seen, "prefill_tokens"),
        "naive_image_prefills_per_image": per_image(naive["by_model"], seen, "image_prefills"),
        "naive_decoded_tokens_per_image": per_image(naive["by_model"], seen, "decoded_tokens"),
        "outputs_identical": identical,
        "output_differences": diffs,
        "seconds": {
            "factory_generate": fast["generate"]["seconds"],
            "factory_filter": fast["filter"]["seconds"],
            "naive": naive["seconds"],
            "factory_all_rounds": [sum(v["seconds"] for v in f.values()) for f in fast_runs],
            "naive_all_rounds": [x["seconds"] for x in naive_runs],
            "factory_cpu_all_rounds": [sum(v["cpu_seconds"] for v in f.values()) for f in fast_runs],
            "naive_cpu_all_rounds": [x["cpu_seconds"] for x in naive_runs],
        },
        "_outputs": mine,
    }


# --------------------------------------------------------------------------------------------------- vLLM
@contextlib.contextmanager
def counting_vllm_worker():
    """The vllm backend with `bench/vllm_worker.py` as its worker (the same engine, with counters)."""
    from jade.models.backends import vllm as vllm_backend

    saved = vllm_backend.WORKER
    vllm_backend.WORKER = Path(__file__).resolve().parent / "vllm_worker.py"
    try:
        yield vllm_backend
    finally:
        vllm_backend.WORKER = saved


def _vllm_stats(backend) -> dict:
    s = backend._worker.call({"op": "stats"})
    return {
        "vision_rows": s["vision_rows"],
        "prefill_tokens": s["prompt_tokens_computed"],
        "cached_prompt_tokens": s["prompt_tokens_cached"],
        "prompt_tokens": s["prompt_tokens"],
        "requests": s["requests"],
        "generated_tokens": s["generation_tokens"],
        "block_size": s["block_size"],
        "vision_hooked": s["vision_hooked"],
    }


def vllm_agreement(root: Path, fac: Factory, hf_outputs: dict) -> dict:
    """vLLM's greedy answers (generator, filter, the filter's presupposition checks) to the questions the hf
    factory answered, against hf's."""
    from jade.models.backends.base import Request

    by_key: dict[str, list[str]] = {}
    for key, q in hf_outputs:
        by_key.setdefault(key, []).append(q)
    mt = bench_manifest(root).generate.max_new_tokens.answer
    gen, fil = fac.backend("generate"), fac.backend("filter")
    same = {"generator": 0, "filter": 0, "checks": 0}
    compared = {"generator": 0, "filter": 0, "checks": 0}
    diffs = []
    for shard in shards_of(root):
        entries = list(load_images(shard, set(by_key)))
        if not entries:
            continue
        owners = [(key, q) for key, _, _ in entries for q in by_key[key]]
        idx = {key: i for i, (key, _, _) in enumerate(entries)}
        reqs = [Request(idx[key], tasks.answer_prompt(q), mt) for key, q in owners]
        checks = list(dict.fromkeys((key, cq) for k in owners for cq, _ in hf_outputs[k][2]))
        check_reqs = [Request(idx[key], tasks.answer_prompt(cq), CHECK_TOKENS) for key, cq in checks]
        images = [img for _, img, _ in entries]
        ga = [tasks.clean_text(c[0].text) for c in gen.generate(gen.prepare(images), reqs)]
        fa = [tasks.clean_text(c[0].text) for c in fil.generate(fil.prepare(images), reqs + check_reqs)]
        vl_checks = dict(zip(checks, fa[len(reqs) :], strict=True))
        for k, g, f in zip(owners, ga, fa, strict=True):
            ref_g, ref_f, ref_checks = hf_outputs[k]
            got_checks = tuple((cq, vl_checks[(k[0], cq)]) for cq, _ in ref_checks)
            compared["generator"] += 1
            same["generator"] += g == ref_g
            if ref_g:  # the hf filter answered (and checked) only questions with an answer
                compared["filter"] += 1
                same["filter"] += f == ref_f
                compared["checks"] += len(ref_checks)
                same["checks"] += sum(a == b for a, b in zip(got_checks, ref_checks, strict=True))
            if (g, f if ref_g else None, got_checks if ref_g else ()) != hf_outputs[k] and len(diffs) < 10:
                diffs.append({"key": k[0], "question": k[1], "hf": hf_outputs[k], "vllm": [g, f, got_checks]})
    return {
        "greedy_answers_compared": compared,
        "greedy_answers_equal": same,
        "greedy_agreement": sum(same.values()) / max(1, sum(compared.values())),
        "differences": diffs,
    }


def bench_vllm(out: Path, base: Path, dirs: dict[str, Path], threads: int, hf: dict, rounds: int = 2) -> dict:
    """The factory's stage workers on the vllm backend, for every rule vLLM computes here; the others refused."""
    from jade.models.backends.vllm import worker_python

    try:
        python = worker_python()
    except RuntimeError as e:
        return {"status": "skipped", "reason": str(e)}
    os.environ.setdefault("JADE_VLLM_KV_CACHE_GB", "1")  # two engines (generator, filter) at once
    os.environ.setdefault("JADE_VLLM_CACHE", str(out / "vllm-export"))
    report: dict = {"status": "ran", "python": python, "by_rule": {}}
    with counting_vllm_worker() as vb:
        t0 = time.perf_counter()
        device = vb.engine_device()  # starts a worker (import vllm); it serves the first engine
        report.update(
            device=device, rule_computed=vb.engine_rule(device), import_seconds=time.perf_counter() - t0
        )
        for rule in RULES:
            try:
                vb.check_rule(str(dirs[rule] / "generator"), device)
            except attention.AttentionRuleError as e:
                report["by_rule"][rule] = {"status": "refused", "error": str(e)}
                continue
            root = rule_run(base, out / f"generate-vllm-{rule}", dirs[rule])
            t0 = time.perf_counter()
            try:
                fac = Factory(root, threads, backend="vllm")
            except Exception as e:  # noqa: BLE001 - recorded, not fatal: the hf figures stand
                report["by_rule"][rule] = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
                continue
            for _, w in fac.stages.values():
                w.backend.bench_stats = lambda b=w.backend: _vllm_stats(b)
            start = time.perf_counter() - t0
            try:
                # The first round also compiles and warms vLLM up for the new batch shapes: the best counts.
                # Before each, vLLM's caches are emptied: the images are new to it every round, as in a run.
                runs = []
                for _ in range(max(2, rounds)):
                    for _, w in fac.stages.values():
                        w.backend._worker.call({"op": "reset"})
                    runs.append(fac())
                res = min(runs, key=lambda x: x["generate"]["seconds"] + x["filter"]["seconds"])
                n = res["generate"]["images"]
                by_model = {"generator": res["generate"], "filter": res["filter"]}
                seen = images_by_model(n, factory_outputs(root))
                secs = res["generate"]["seconds"] + res["filter"]["seconds"]
                entry = {
                    "status": "ran",
                    "images": n,
                    "images_by_model": seen,
                    "engine_start_seconds": start,
                    "images_per_s": n / secs,
                    "seconds": {"generate": res["generate"]["seconds"], "filter": res["filter"]["seconds"]},
                    "seconds_all_rounds": [x["generate"]["seconds"] + x["filter"]["seconds"] for x in runs],
                    "vision_encoder_passes_per_image": per_image(by_model, seen, "vision_rows"),
                    "prefill_tokens_per_image": per_image(by_model, seen, "prefill_tokens"),
                    "cached_prompt_tokens_per_image": per_image(by_model, seen, "cached_prompt_tokens"),
                    "prompt_tokens_per_image": per_image(by_model, seen, "prompt_tokens"),
                    "sequences_per_image": per_image(by_model, seen, "requests"),
                    "block_size": res["generate"]["block_size"],
                }
                # Prefix caching works in whole blocks: with no token cached, every sequence (each of a
                # prompt's n samples too) prefilled the image's tokens itself.
                entry["image_prefills_per_image"] = {
                    role: (c["requests"] / max(1, seen[role]) if c["cached_prompt_tokens"] == 0 else None)
                    for role, c in by_model.items()
                }
                if rule in hf:
                    entry["hf_images_per_s"] = hf[rule]["images_per_s"]
                    entry["vllm_over_hf"] = entry["images_per_s"] / hf[rule]["images_per_s"]
                    entry.update(vllm_agreement(root, fac, hf[rule]["_outputs"]))
                report["by_rule"][rule] = entry
            finally:
                for _, w in fac.stages.values():
                    w.backend.close()
    return report


# ------------------------------------------------------------------------------------------------- memory
def peak_rss_mb(root: Path, threads: int) -> tuple[float, float, float]:
    """Of the generate stage on `root`, in a fresh process, MB: (peak RSS of the whole process, peak RSS
    while the stage ran, RSS once the model was loaded). The second is read after resetting the kernel's
    high-water mark at the third, so their difference is what the images themselves cost."""
    cmd = [sys.executable, "-m", "bench.generate", "--rss-of", str(root), "--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    total, stage, loaded = out.stdout.strip().splitlines()[-1].split()
    return float(total), float(stage), float(loaded)


def _vm_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_of(root: Path, threads: int) -> tuple[float, float, float]:
    torch.set_num_threads(threads)
    fac = Factory(root, threads, stages=("generate",))
    loaded = {"peak": _vm_mb("VmHWM"), "rss": _vm_mb("VmRSS")}
    with contextlib.suppress(OSError):  # Linux: reset the high-water mark, so the next peak is the stage's
        Path("/proc/self/clear_refs").write_text("5")
    fac()
    stage_peak = _vm_mb("VmHWM")
    return max(stage_peak, loaded["peak"]), stage_peak, loaded["rss"]


# ----------------------------------------------------------------------------------------------------- run
def run(
    out: Path,
    images: int = 24,
    models: str | None = None,
    threads: int | None = None,
    rounds: int = 2,
    rules: tuple[str, ...] = RULES,
    vllm: bool = True,
    arch: Architecture = ARCH,
) -> dict:
    """Every rule in `rules` (the factory and the naive loop), then vLLM, then the memory check; the report."""
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    base1 = make_base(out, "base-1x", images)
    base4 = make_base(out, "base-4x", 4 * images)
    if models:
        dirs, weights = given_models(out, Path(models)), f"trained checkpoints from {models}"
    else:
        dirs = random_models(out, base1 / WORLD_FOLDER, arch)
        weights = (
            f"random, normal std {WEIGHT_STD} on every 2-D weight, the EOS embedding {EOS_SCALE} x a random "
            "unit vector (generator seed 0, filter seed 1)"
        )
    meta = factory.read_meta(dirs[RULES[0]] / "generator")
    model, _ = factory.load(str(dirs[RULES[0]] / "generator"))
    model_info = {
        "weights": weights,
        "architecture": meta.get("bench", {}).get("arch"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "image_tokens": (model.config.vision_config.image_size // model.config.vision_config.patch_size) ** 2,
    }
    del model
    by_rule = {}
    for rule in rules:
        by_rule[rule] = bench_rule(rule_run(base1, out / f"generate-1x-{rule}", dirs[rule]), threads, rounds)
    head = by_rule.get(HEADLINE) or next(iter(by_rule.values()))
    vl = (
        bench_vllm(out, base1, dirs, threads, by_rule, rounds)
        if vllm
        else {"status": "skipped", "reason": "--no-vllm"}
    )
    mem_rule = head["rule"]
    rss1 = peak_rss_mb(out / f"generate-1x-{mem_rule}", threads)
    rss4 = peak_rss_mb(rule_run(base4, out / f"generate-4x-{mem_rule}", dirs[mem_rule]), threads)
    report = {
        "rule": head["rule"],
        "images": head["images"],
        "questions_answered": head["questions_answered"],
        "images_per_s": head["images_per_s"],
        "naive_images_per_s": head["naive_images_per_s"],
        "speedup_vs_naive": head["speedup_vs_naive"],
        "speedup_vs_naive_cpu": head["speedup_vs_naive_cpu"],
        "vision_encoder_passes_per_image": max(head["vision_encoder_passes_per_image"].values()),
        "prefill_tokens_per_image": sum(head["prefill_tokens_per_image"].values()),
        "image_prefills_per_image": head["image_prefills_per_image"],
        "outputs_identical": all(r["outputs_identical"] for r in by_rule.values()),
        "peak_rss_mb_1x": rss1[0],
        "peak_rss_mb_4x": rss4[0],
        "peak_rss_ratio_4x_over_1x": rss4[0] / rss1[0],
        "stage_peak_rss_mb_1x": rss1[1],
        "stage_peak_rss_mb_4x": rss4[1],
        "rss_after_model_load_mb_1x": rss1[2],
        "rss_after_model_load_mb_4x": rss4[2],
        "images_1x": head["images"],
        "images_4x": len(usable(base4)),
        "speedup_vs_naive_by_rule": {r: v["speedup_vs_naive"] for r, v in by_rule.items()},
        "speedup_vs_naive_cpu_by_rule": {r: v["speedup_vs_naive_cpu"] for r, v in by_rule.items()},
        "images_per_s_by_rule": {r: v["images_per_s"] for r, v in by_rule.items()},
        "outputs_identical_by_rule": {r: v["outputs_identical"] for r, v in by_rule.items()},
        "by_rule": {r: {k: v for k, v in d.items() if not k.startswith("_")} for r, d in by_rule.items()},
        "vllm": vl,
        "model": model_info,
        "threads": threads,
        "rounds": rounds,
        "date": time.strftime("%Y-%m-%d"),
    }
    (out / "generate.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--images", type=int, default=24, help="images at 1x (the memory check also runs 4x)")
    p.add_argument("--models", help="directory with trained generator/ and filter/ checkpoints")
    p.add_argument("--threads", type=int)
    p.add_argument(
        "--rounds", type=int, default=2, help="interleaved timing rounds; the best of each path counts"
    )
    p.add_argument("--rules", default=",".join(RULES), help="attention rules to run, comma-separated")
    p.add_argument("--no-vllm", action="store_true", help="leave vLLM out")
    p.add_argument("--rss-of", help=argparse.SUPPRESS)  # internal: run generate on a run dir, print peak RSS
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if a.rss_of:
        print(*_rss_of(Path(a.rss_of), a.threads or 1))
        return 0
    rules = tuple(attention.check(r.strip(), "--rules") for r in a.rules.split(",") if r.strip())
    report = run(Path(a.out), a.images, a.models, a.threads, a.rounds, rules, not a.no_vllm)
    print(json.dumps({k: v for k, v in report.items() if k not in ("by_rule", "vllm")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
