"""Continue a stage from a shallower one: decoder growth by block expansion (LLaMA Pro, Wu et al. 2024).

A later stage of a base recipe may give the decoder more layers than the stage before (`arch: {text_layers:
N}`). The earlier stage's layers keep their weights and order; each new layer is a copy of the layer before
it with its two output projections (`self_attn.o_proj`, `mlp.down_proj`) set to zero, so it adds nothing to
the residual stream at first and the grown model computes exactly what the smaller one did. Training then
moves the new layers away from identity (their output projections get gradients from the first step).

Why: a from-scratch stage 1 of the deeper model would cost the hour the shallow one already spent; growth
keeps everything it learned (docs/base.md has the measurement).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, load_model

_LAYER = re.compile(r"^(.*\.language_model\.(?:model\.)?layers\.)(\d+)\.(.*)$")
_OUTPUTS = ("self_attn.o_proj.weight", "mlp.down_proj.weight")


def layer_sources(old: int, new: int) -> list[tuple[int, bool]]:
    """For each of ``new`` layers: (the old layer it starts as, whether it is an added copy). The ``new - old``
    copies are spread evenly, each right after the layer it copies, the last one after the last layer."""
    if new < old:
        raise ValueError(f"a later stage cannot drop decoder layers ({old} -> {new})")
    extra = new - old
    # the old layers after which a copy goes: evenly spaced, ending with the last
    after = [old - 1 - (i * old) // extra for i in range(extra)] if extra else []
    out = []
    for i in range(old):
        out.append((i, False))
        out += [(i, True)] * after.count(i)
    return out


def grown_state(state: dict[str, torch.Tensor], new_layers: int) -> dict[str, torch.Tensor]:
    """``state`` (a decoder with fewer layers) expanded to ``new_layers`` decoder layers, identity-initialised."""
    layers: dict[int, dict[str, tuple[str, torch.Tensor]]] = {}
    out = {}
    for k, v in state.items():
        m = _LAYER.match(k)
        if m:
            layers.setdefault(int(m.group(2)), {})[m.group(3)] = (m.group(1), v)
        else:
            out[k] = v
    old = len(layers)
    if sorted(layers) != list(range(old)):
        raise ValueError(f"decoder layers are not numbered 0..{old - 1}: {sorted(layers)}")
    for j, (i, added) in enumerate(layer_sources(old, new_layers)):
        for name, (prefix, v) in layers[i].items():
            out[f"{prefix}{j}.{name}"] = torch.zeros_like(v) if added and name in _OUTPUTS else v.clone()
    return out


def load_grown(model: torch.nn.Module, path: str | Path) -> int:
    """Load ``path`` (safetensors) into ``model``, growing the decoder if the model has more layers than the
    file; returns the number of layers the file had. Anything else that does not match is an error."""
    want = model.state_dict()
    with safe_open(str(path), "pt") as f:  # the header only: the layer count decides how to load
        n_file = len({int(m.group(2)) for k in f.keys() if (m := _LAYER.match(k))})
    n_model = len({int(m.group(2)) for k in want if (m := _LAYER.match(k))})
    if n_model == n_file:
        load_model(model, str(path))
        return n_file
    state = load_file(str(path))
    missing, unexpected = model.load_state_dict(grown_state(state, n_model), strict=False)
    # a tied weight (the LM head and the embeddings) is saved once: it is loaded through its twin
    loaded = {want[k].data_ptr() for k in state if k in want}
    missing = [k for k in missing if want[k].data_ptr() not in loaded]
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not fit the model (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    return n_file
