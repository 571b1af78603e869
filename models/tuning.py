"""The fine-tuning loop's memory options (`models.specs.Training`): frozen modules, gradient checkpointing, LoRA
adapters (peft), bf16 autocast with fp32 master weights, micro-batches, and FSDP sharding (torch's
``fully_shard``). Each is a small function over a transformers model; `models.train` calls them, and with every
option at its default it calls none of them (the loop is then the one it was before they existed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch

from jade.models.specs import LoRA, Training
from jade.typed import ConfigError

__all__ = [
    "accumulate",
    "add_lora",
    "apply_options",
    "autocast",
    "canonical",
    "find_modules",
    "freeze",
    "frozen_names",
    "full_state",
    "is_lora",
    "is_sharded",
    "layer_classes",
    "load_optimizer",
    "lora_targets",
    "plain_model",
    "shard",
    "split",
    "target_tokens",
]


def find_modules(model: torch.nn.Module, name: str, at: str) -> list[str]:
    """Qualified names of the modules called ``name``: the module of that dotted name, or every module whose
    dotted name ends with ``.name`` (``vision_tower`` is ``model.vision_tower``; ``mlp`` is every layer's MLP).
    An unknown name is an error naming the key and the top-level modules."""
    name = name.strip(".")
    hits = [q for q, _ in model.named_modules() if q and (q == name or q.endswith("." + name))]
    if not hits:
        inner = model.get_submodule("model") if hasattr(model, "model") else model
        tops = sorted(q for q, _ in inner.named_children())
        raise ConfigError(f"{at}: no module named {name!r} in this model (for example: {', '.join(tops)})")
    # the outermost matches only (a match inside another match is already covered)
    return [q for q in hits if not any(q.startswith(o + ".") for o in hits if o != q)]


def frozen_names(model: torch.nn.Module, names: Iterable[str], at: str) -> list[str]:
    """Qualified names of every module that ``freeze`` names (each name checked; errors name the item)."""
    out: list[str] = []
    for i, n in enumerate(names):
        out += [q for q in find_modules(model, n, f"{at}[{i}]") if q not in out]
    return out


def freeze(model: torch.nn.Module, names: Iterable[str], at: str = "train.freeze") -> list[str]:
    """Stop the named modules' parameters from training (a tied parameter is frozen wherever it is used)."""
    qualified = frozen_names(model, names, at)
    for q in qualified:
        model.get_submodule(q).requires_grad_(False)
    return qualified


def lora_targets(model: torch.nn.Module, lora: LoRA, frozen: list[str], at: str) -> list[str]:
    """The linear layers that get adapters: every ``torch.nn.Linear`` named by a target, outside the frozen
    modules (adapters on a frozen vision tower would train it after all)."""
    hits = []
    for q, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear) or any(q == f or q.startswith(f + ".") for f in frozen):
            continue
        if any(q == t or q.endswith("." + t) for t in lora.targets):
            hits.append(q)
    if not hits:
        raise ConfigError(f"{at}.targets: {lora.targets} name no linear layer outside the frozen modules")
    return hits


def add_lora(model: torch.nn.Module, lora: LoRA, frozen: list[str], seed: int, at: str = "train.lora"):
    """Wrap ``model`` with peft LoRA adapters (seeded: the adapters' initial weights come from ``seed``);
    only the adapters train."""
    from peft import LoraConfig, get_peft_model

    targets = lora_targets(model, lora, frozen, at)
    cfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets)
    torch.manual_seed(seed)
    return get_peft_model(model, cfg)


def is_lora(model: torch.nn.Module) -> bool:
    return type(model).__module__.startswith("peft.")


def apply_options(model: torch.nn.Module, tcfg: Training, seed: int, at: str = "train") -> torch.nn.Module:
    """Freeze, checkpoint, add adapters and (bf16) store the frozen weights in bf16, in that order. With every
    option at its default the model is returned untouched."""
    frozen = freeze(model, tcfg.freeze, f"{at}.freeze") if tcfg.freeze else []
    if tcfg.gradient_checkpointing:
        # non-reentrant: correct with frozen inputs (the embeddings) and with adapters
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if tcfg.lora is not None:
        model = add_lora(model, tcfg.lora, frozen, seed, f"{at}.lora")
    if tcfg.precision == "bf16":
        for p in model.parameters():
            if not p.requires_grad:  # never updated: no master copy needed
                p.data = p.data.to(torch.bfloat16)
    return model


def autocast(precision: str, device: str):
    """The forward pass's precision: bf16 autocast, or nothing at all (fp32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def split(batch, micro: int) -> list[dict]:
    """A padded batch in micro-batches of ``micro`` examples (the last may be smaller). Each example keeps the
    padding of the whole batch, so it is computed exactly as in the whole batch (the tokenizer pads on the left,
    and positions count from the first column)."""
    n = len(batch["input_ids"])
    return [{k: v[s : s + micro] for k, v in batch.items()} for s in range(0, n, micro)]


def target_tokens(batch) -> int:
    """Tokens a batch's loss averages over (`models.train.lm_loss`: position t predicts label t + 1)."""
    return int((batch["labels"][:, 1:] != -100).sum())


def accumulate(model, batches: list, loss_fn, precision: str, device: str) -> torch.Tensor:
    """Backward over micro-batches, each loss weighted by its share of the batch's target tokens, so the
    accumulated gradient is the whole batch's mean-loss gradient. Under DDP only the last micro-batch
    all-reduces. Returns the batch's loss (detached)."""
    total = sum(target_tokens(b) for b in batches)
    loss_sum = torch.zeros(())
    for i, b in enumerate(batches):
        last = i == len(batches) - 1
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast(precision, device):
                loss = loss_fn(model, b) * (target_tokens(b) / max(1, total))
            loss.backward()
        loss_sum += loss.detach().float().cpu()
    return loss_sum


# ------------------------------------------------------------------------------------------------ FSDP
def layer_classes(model: torch.nn.Module) -> set[type]:
    """The transformer-layer classes of a transformers model (its ``_no_split_modules`` that are layers)."""
    names = set()
    for m in model.modules():
        names |= set(getattr(m, "_no_split_modules", None) or [])
    return {
        type(m) for m in model.modules() if type(m).__name__ in names and type(m).__name__.endswith("Layer")
    }


def shard(model: torch.nn.Module) -> torch.nn.Module:
    """FSDP (torch's ``fully_shard``) per transformer layer, then the rest as the root: each worker keeps
    1/world of every parameter, gradient and optimizer moment; a layer's weights are gathered for its compute.
    Works on CPU (gloo) and GPU (nccl) alike."""
    from torch.distributed.fsdp import fully_shard

    classes = tuple(layer_classes(model))
    for m in list(model.modules()):
        if classes and isinstance(m, classes):
            fully_shard(m)
    fully_shard(model)
    return model


def is_sharded(model: torch.nn.Module) -> bool:
    return any(type(p).__name__ == "DTensor" for p in model.parameters())


def full_state(model: torch.nn.Module, opt: torch.optim.Optimizer | None = None):
    """Every worker takes part; returns the full (unsharded, CPU) model state dict, keyed by the model's own
    parameter names, and the full optimizer state (or None), on every worker."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    sd = get_model_state_dict(model, options=opts)
    osd = get_optimizer_state_dict(model, opt, options=opts) if opt is not None else None
    return sd, osd


def load_optimizer(model, opt: torch.optim.Optimizer, state: dict) -> None:
    """A full optimizer state (`full_state`) into a sharded model's optimizer (every worker)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    # strict=False: a parameter that never had a gradient (an unused head) has no state, saved or fresh
    set_optimizer_state_dict(model, opt, state, options=StateDictOptions(full_state_dict=True, strict=False))


def canonical(model: torch.nn.Module, sd: dict) -> dict:
    """A state dict without the aliases of tied parameters (one name each, as ``named_parameters`` gives)."""
    keep = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    return {k: v.contiguous() for k, v in sd.items() if k in keep}


# ------------------------------------------------------------------------------------------------ saving
def plain_model(model: torch.nn.Module, tcfg: Training, config=None, state: dict | None = None):
    """The model to save as a plain checkpoint: DDP unwrapped, LoRA adapters merged into the weights (in fp32),
    bf16-stored frozen weights back in fp32. A sharded (FSDP) model is rebuilt from ``config`` and its full
    ``state`` (`full_state`) first."""
    if state is not None:
        from transformers import AutoModelForImageTextToText

        rebuilt = AutoModelForImageTextToText.from_config(config)
        rebuilt = apply_options(rebuilt, tcfg, 0)
        missing, unexpected = rebuilt.load_state_dict(state, strict=False)
        aliases = {n for n, _ in rebuilt.named_parameters(remove_duplicate=False)} - dict(
            rebuilt.named_parameters()
        ).keys()  # a tied parameter's second name
        if unexpected or set(missing) - aliases:
            raise RuntimeError(
                f"FSDP state does not fit the model: missing {missing}, unexpected {unexpected}"
            )
        model = rebuilt
    inner = model.module if hasattr(model, "module") else model
    if is_lora(inner):
        inner = inner.float().merge_and_unload()
    elif tcfg.precision == "bf16" or state is not None:
        inner = inner.float()
    return inner
