"""The fine-tuning loop's memory options (models.tuning) change how a step is computed, not what it computes:
micro-batches give the whole batch's gradient, checkpointing the same gradients, frozen weights stay put, LoRA
trains only its adapters and its merged checkpoint answers as the adapted model does. Real tiny PaliGemmas."""

import copy

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from jade.app.manifest import BASES_DIR, GeneratorSpec, load_manifest
from jade.models import factory, tuning
from jade.models.backends.base import Request
from jade.models.backends.hf import HFBackend
from jade.models.greedy import greedy
from jade.models.specs import Architecture, LoRA, Training, is_default_training
from jade.models.train import TrainJob, example_batch, lm_loss, train_loop
from jade.pipeline.rundir import fingerprint, plain
from jade.typed import ConfigError

ARCH = Architecture(
    image_size=32,
    patch_size=8,
    vision_hidden=32,
    vision_layers=2,
    text_hidden=64,
    text_layers=2,
    head_dim=16,
    vocab_size=300,
)
PREFIXES = ["answer en what color is it?", "caption en"] * 4
SUFFIXES = [
    "red",
    "a big green circle on the left",
    "blue",
    "a red square",
    "green",
    "blue circle",
    "red",
    "no",
]
# micro-batches and checkpointing: the same gradients up to float rounding (relative to each tensor's largest)
RTOL = 1e-4


@pytest.fixture(scope="module")
def proc():
    return factory.build_processor([*PREFIXES, *SUFFIXES] * 20, ARCH)


@pytest.fixture(scope="module")
def batch(proc):
    imgs = [Image.new("RGB", (32, 32), (i * 40 % 256, 255 - i * 30, i * 70 % 256)) for i in range(7)]
    return example_batch(proc, imgs, PREFIXES[:7], SUFFIXES[:7], "cpu", "image")


def _grads(model, step) -> dict:
    model.zero_grad(set_to_none=True)
    step(model)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    scale = max(g.abs().max() for g in a.values())  # gradients that are 0 in exact arithmetic: noise only
    for n in a:
        assert torch.allclose(a[n], b[n], rtol=RTOL, atol=RTOL * 1e-3 * scale), n


def test_micro_batches_give_the_whole_batch_gradient(proc, batch):
    model = factory.build_model(ARCH, proc, seed=0).train()
    whole = _grads(model, lambda m: lm_loss(m, batch).backward())
    parts = tuning.split(batch, 3)  # 3 + 3 + 1 examples, with different numbers of target tokens
    assert len({tuning.target_tokens(p) for p in parts}) > 1
    micro = _grads(model, lambda m: tuning.accumulate(m, parts, lm_loss, "fp32", "cpu"))
    _close(whole, micro)


def test_checkpointing_gives_the_same_gradients(proc, batch):
    model = factory.build_model(ARCH, proc, seed=0).train()
    plain = _grads(model, lambda m: lm_loss(m, batch).backward())
    ckpt = tuning.apply_options(copy.deepcopy(model), Training(gradient_checkpointing=True), 0)
    assert ckpt.is_activation_checkpointing
    _close(plain, _grads(ckpt, lambda m: lm_loss(m, batch).backward()))


def test_bf16_autocasts_and_keeps_fp32_master_weights(proc, batch):
    model = tuning.apply_options(
        factory.build_model(ARCH, proc, seed=0).train(),
        Training(precision="bf16", freeze=["vision_tower"]),
        0,
    )
    dtypes = {p.dtype for p in model.parameters() if p.requires_grad}
    assert dtypes == {torch.float32}  # trainable: fp32 master weights
    assert {p.dtype for p in model.model.vision_tower.parameters()} == {torch.bfloat16}  # frozen: bf16
    with tuning.autocast("bf16", "cpu"):
        loss = lm_loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and all(
        p.grad.dtype == torch.float32 for p in model.parameters() if p.requires_grad
    )


# -------------------------------------------------------------------------------------- the loop, end to end
@pytest.fixture(scope="module")
def data(tmp_path_factory, proc):
    d = tmp_path_factory.mktemp("ex")
    rows = {"image_path": [], "prefix": [], "suffix": []}
    for i in range(8):
        path = d / f"{i}.png"
        Image.new("RGB", (32, 32), (i * 40 % 256, 255 - i * 30, i * 70 % 256)).save(path)
        rows["image_path"].append(str(path))
        rows["prefix"].append(PREFIXES[i])
        rows["suffix"].append(SUFFIXES[i])
    pq.write_table(pa.table(rows), d / "ex.parquet")
    proc.save_pretrained(d / "proc")
    return d


def _job(data, out, train: Training) -> TrainJob:
    return TrainJob(
        examples=str(data / "ex.parquet"),
        out_dir=str(out),
        arch=ARCH,
        train=train,
        processor_dir=str(data / "proc"),
        threads=1,
        meta={"role": "t"},
    )


def _weights(path) -> dict:
    return factory.load(str(path))[0].state_dict()


def _initial(proc) -> dict:
    return factory.build_model(ARCH, proc, seed=0).state_dict()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_frozen_parameters_are_unchanged_after_training(tmp_path, data, proc, precision):
    train = Training(steps=3, batch_size=4, lr=1e-2, warmup_steps=1, precision=precision, micro_batch=2,
                     freeze=["vision_tower", "multi_modal_projector"], gradient_checkpointing=True)  # fmt: skip
    train_loop(_job(data, tmp_path / "out", train))
    before, after = _initial(proc), _weights(tmp_path / "out")
    frozen = [k for k in before if "vision_tower" in k or "multi_modal_projector" in k]
    assert frozen
    for k in frozen:
        want = (
            before[k] if precision == "fp32" else before[k].bfloat16().float()
        )  # bf16 storage: rounded once
        assert after[k].dtype == torch.float32 and torch.equal(after[k], want), k
    assert not torch.equal(after["model.language_model.layers.0.mlp.up_proj.weight"],
                           before["model.language_model.layers.0.mlp.up_proj.weight"])  # fmt: skip
    record = factory.read_meta(tmp_path / "out")["training"]
    assert record == {"precision": precision, "micro_batch": 2, "batch_size": 4, "gradient_checkpointing": True,
                      "freeze": ["vision_tower", "multi_modal_projector"], "lora": None, "strategy": "ddp",
                      "workers": 1}  # fmt: skip
    assert not is_default_training(record)


def test_default_options_are_the_old_loop(tmp_path, data):
    """Micro-batches of the whole batch, fp32, nothing else: the loop computes exactly what it computed before
    the options existed (the same weights as an explicit micro_batch = batch_size), and records the defaults."""
    a = Training(steps=2, batch_size=4, warmup_steps=1)
    b = Training(steps=2, batch_size=4, warmup_steps=1, micro_batch=4)
    train_loop(_job(data, tmp_path / "a", a))
    train_loop(_job(data, tmp_path / "b", b))
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert is_default_training(factory.read_meta(tmp_path / "a")["training"])


def test_lora_trains_only_adapters_and_merges_into_a_plain_checkpoint(tmp_path, data, proc):
    train = Training(
        steps=3,
        batch_size=4,
        lr=5e-2,
        warmup_steps=1,
        lora=LoRA(r=4, alpha=8, targets=["q_proj", "v_proj", "up_proj"]),
    )
    model = tuning.apply_options(factory.build_model(ARCH, proc, seed=0).train(), train, 0)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    train_loop(_job(data, tmp_path / "out", train))
    saved = _weights(tmp_path / "out")
    assert saved.keys() == _initial(proc).keys()  # plain: no adapter weights, no peft names
    changed = [k for k in saved if not torch.equal(saved[k], _initial(proc)[k])]
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight", "up_proj.weight")) for k in changed)


# -------------------------------------------------------- LoRA: the merged checkpoint answers as the adapted model
IMAGES = [
    Image.new("RGB", (48, 48), c) for c in ((220, 30, 30), (30, 30, 220), (30, 180, 30), (240, 240, 40))
]
QUESTIONS = ["answer en what color is the circle?", "answer en how many squares are there?", "caption en"]


def test_merged_lora_checkpoint_answers_as_the_unmerged_model(tmp_path):
    """On the shipped sample-world base (its answers depend on the image): adapters with trained-size weights,
    greedy answers of the peft model vs the merged checkpoint loaded back through the hf engine."""
    base, processor = factory.load(str(BASES_DIR / "sampleworld-tiny"))
    train = Training(lora=LoRA(r=8, alpha=16))
    peft_model = tuning.apply_options(base, train, seed=0)
    torch.manual_seed(1)
    with torch.no_grad():  # adapters as training leaves them: B no longer zero
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    peft_model.eval()
    images = [im for im in IMAGES for _ in QUESTIONS]
    prompts = QUESTIONS * len(IMAGES)
    unmerged = greedy(peft_model, processor, images, prompts, "prefix", 8)
    assert len(set(unmerged[0 :: len(QUESTIONS)])) > 1  # the answers depend on the image
    with peft_model.disable_adapter():
        assert greedy(peft_model, processor, images, prompts, "prefix", 8) != unmerged  # the adapters matter
    factory.save(tuning.plain_model(peft_model, train).eval(), processor, tmp_path, {"attention": "prefix"})
    model, proc2 = factory.load(str(tmp_path))
    engine = HFBackend(model, proc2, batch_size=4, attention="prefix")
    reqs = [Request(i // len(QUESTIONS), p, 8) for i, p in enumerate(prompts)]
    merged = [c[0].text for c in engine.generate(IMAGES, reqs)]
    assert merged == unmerged


# ------------------------------------------------------------------------------------------ settings
def test_every_new_setting_is_range_checked_with_its_key(monkeypatch):
    monkeypatch.setenv("SAMPLE_WORLD", "/nowhere")
    bad = {
        "models.generator.train.precision=fp16": "models.generator.train.precision",
        "models.generator.train.micro_batch=64": "models.generator.train.micro_batch",
        "models.generator.train.micro_batch=0": "models.generator.train.micro_batch",
        "models.filter.train.freeze=['']": "models.filter.train.freeze[0]",
        "models.filter.train.lora={r: 0}": "models.filter.train.lora.r",
        "models.filter.train.lora={dropout: 1.5}": "models.filter.train.lora.dropout",
        "models.filter.train.lora={alpha: -1}": "models.filter.train.lora.alpha",
        "models.filter.train.lora={targets: []}": "models.filter.train.lora.targets",
        "resources.train.strategy=zero3": "resources.train.strategy",
        "resources.train.workers=0": "resources.train.workers",
    }
    for setting, key in bad.items():
        with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
            load_manifest("sample", [setting])


def test_unknown_module_names_are_errors_naming_the_key(proc):
    model = factory.build_model(ARCH, proc, seed=0)
    with pytest.raises(
        ConfigError, match=r"models.generator.train.freeze\[1\]: no module named 'vision_towr'"
    ):
        tuning.apply_options(
            model, Training(freeze=["multi_modal_projector", "vision_towr"]), 0, "models.generator.train"
        )
    with pytest.raises(ConfigError, match="models.generator.train.lora.targets"):
        tuning.apply_options(
            model, Training(lora=LoRA(targets=["nothing_proj"])), 0, "models.generator.train"
        )


def test_options_at_their_defaults_leave_the_fingerprint_record_as_before():
    """The finetune stages' fingerprints hash the role's spec through `pipeline.rundir.plain`: the options are
    fields added `since` the runs made without them, left out while at their defaults."""
    old_keys = {"steps", "batch_size", "lr", "weight_decay", "warmup_steps", "max_examples"}
    assert set(plain(GeneratorSpec())["train"]) == old_keys
    spec = GeneratorSpec(train=Training(precision="bf16", freeze=["vision_tower"]))
    assert plain(spec)["train"]["precision"] == "bf16" and plain(spec)["train"]["freeze"] == ["vision_tower"]
    assert "micro_batch" not in plain(spec)["train"]
    assert fingerprint(spec) != fingerprint(GeneratorSpec())
    lora = GeneratorSpec(train=Training(lora=LoRA(r=4)))
    assert plain(lora)["train"]["lora"]["r"] == 4 and fingerprint(lora) != fingerprint(GeneratorSpec())
