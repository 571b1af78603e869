"""The `vllm` backend's worker (`models/backends/vllm_worker.py`) with counters, for `bench.generate`.

Run by path with vLLM's Python (``.venv-vllm/bin/python``) in place of the backend's own worker
(`bench.generate.counting_vllm_worker` points `models.backends.vllm.WORKER` here), so the factory's stage
workers drive vLLM exactly as a run does while the benchmark reads what vLLM computed. The engine is the
backend's own (`vllm_worker.Engine`, loaded by path: this file imports nothing from jade), built with vLLM's
stats on (``disable_log_stats=False``) and with a forward hook that counts the rows through the vision tower.
Two messages more than the backend's protocol:

    parent -> {"op": "reset"}       empty the prefix, multimodal and encoder caches (a round on fresh images)
    worker -> {"ok": true}
    parent -> {"op": "stats"}
    worker -> {"ok": {"prompt_tokens_computed", "prompt_tokens_cached", "prompt_tokens", "generation_tokens",
                      "requests", "vision_rows", "block_size"}}                  cumulative since the start
"""

from __future__ import annotations

import importlib.util
import os
import sys
import traceback

_ROWS = [0]  # rows through the vision tower, counted by the hook (the model runs in this process)


def _load_backend_worker():
    path = os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "models", "backends", "vllm_worker.py"
    )
    spec = importlib.util.spec_from_file_location("jade_backend_vllm_worker", os.path.abspath(path))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _hook(module, args, output) -> None:
    if args and hasattr(args[0], "shape"):
        _ROWS[0] += int(args[0].shape[0])


def _count_vision(model) -> bool:
    tower = getattr(model, "vision_tower", None)
    if tower is None:
        return False
    tower.register_forward_hook(_hook)
    return True


def _metric(metrics, name: str, **labels) -> float:
    total = 0.0
    for m in metrics:
        if m.name == name and all(m.labels.get(k) == v for k, v in labels.items()):
            total += float(getattr(m, "value", 0) or 0)
    return total


def stats(engine) -> dict:
    ms = engine.llm.get_metrics()
    return {
        "prompt_tokens_computed": _metric(ms, "vllm:prompt_tokens_by_source", source="local_compute"),
        "prompt_tokens_cached": _metric(ms, "vllm:prompt_tokens_by_source", source="local_cache_hit"),
        "prompt_tokens": _metric(ms, "vllm:prompt_tokens"),
        "generation_tokens": _metric(ms, "vllm:generation_tokens"),
        "requests": _metric(ms, "vllm:request_success"),
        "vision_rows": _ROWS[0],
        "block_size": engine.llm.llm_engine.vllm_config.cache_config.block_size,
    }


def reset_caches(llm) -> None:
    llm.reset_prefix_cache()
    llm.reset_mm_cache()
    reset_encoder = getattr(llm.llm_engine, "reset_encoder_cache", None)
    if reset_encoder is not None:
        reset_encoder()


def main() -> int:
    vw = _load_backend_worker()
    vw._exit_with_parent()
    channel_in = sys.stdin.buffer
    channel_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # vLLM's prints go to stderr; stdout carries the protocol only
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine core and model in this process
    try:
        device = vw.device_type()
        import vllm

        vw.send(channel_out, {"device": device, "vllm": vllm.__version__})
        msg = vw.recv(channel_in)
        if msg.get("op") != "start":
            return 0
        os.environ.update(msg.get("env") or {})
        vw._quiet_thread_warning()
        engine = vw.Engine(vllm, {**msg["args"], "disable_log_stats": False})
        counted = engine.llm.apply_model(_count_vision)
        engine.vision_hooked = bool(counted and all(counted))
        vw.send(channel_out, {"ok": {"eos": engine.eos}})
    except EOFError:
        return 0
    except BaseException:
        vw.send(channel_out, {"error": traceback.format_exc()})
        return 1
    while True:
        try:
            msg = vw.recv(channel_in)
        except EOFError:
            return 0
        op = msg.get("op")
        try:
            if op == "generate":
                images = vw._decode_images(msg["images"])
                vw.send(
                    channel_out,
                    {"ok": engine.generate(images, msg["requests"], msg.get("ignore_eos", False))},
                )
            elif (
                op == "reset"
            ):  # cold caches (prefix, multimodal, encoder) for the next round; kernels stay warm
                reset_caches(engine.llm)
                vw.send(channel_out, {"ok": True})
            elif op == "stats":
                vw.send(channel_out, {"ok": {**stats(engine), "vision_hooked": engine.vision_hooked}})
            else:
                return 0
        except BrokenPipeError:
            return 0
        except Exception:
            vw.send(channel_out, {"error": traceback.format_exc()})


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.exit(main())
