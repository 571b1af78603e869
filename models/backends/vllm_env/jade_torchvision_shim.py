"""Lets PyPI's torchvision import on a CPU-only machine (installed into .venv-vllm by `make setup-vllm`).

PyPI's torchvision wheel is a CUDA build: on a machine without CUDA its compiled ops (``torchvision._C``)
cannot load, so the ``torchvision::nms`` and ``torchvision::qnms`` operators never get defined, and
``import torchvision`` then fails in ``torchvision/_meta_registrations.py`` (it registers fake kernels for
those two operators without checking they exist): ``RuntimeError: operator torchvision::nms does not exist``.
vLLM's PaliGemma path needs ``torchvision.transforms.v2`` (through transformers' image processors), which is
pure Python. Defining the two schemas (the signatures of torchvision 0.28's ``_meta_registrations.py``) before
torchvision loads is enough: ``transforms.v2`` works; ``torchvision.ops`` (nms itself) does not, and vLLM
does not use it.

A ``.pth`` file in site-packages imports this module at interpreter start. It does not import torch then: it
puts a finder on ``sys.meta_path`` that defines the schemas the first time ``torchvision`` is imported, so
every other program of that environment (pip, python -c ...) starts as fast as before. See docs/vllm.md.
"""

import sys

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # a torch.library.Library drops its definitions when collected: keep it alive


def define_schemas() -> None:
    """Define the schemas unless torchvision's own ops library loads (a CPU build: then it defines them)."""
    global _library
    if _library is not None:
        return
    import glob
    import importlib.util
    import os

    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.origin:
        return
    for so in glob.glob(os.path.join(os.path.dirname(spec.origin), "_C*.so")):
        try:
            torch.ops.load_library(so)
            return  # a working build: its own registrations will do
        except (OSError, RuntimeError):  # a CUDA build on a machine without CUDA
            pass
    _library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS:
        _library.define(schema)


class _BeforeTorchvision:
    """A meta-path finder that only acts: it defines the schemas, then lets the real finders find torchvision."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(_FINDER)
            define_schemas()
        return None


_FINDER = _BeforeTorchvision()
if "torchvision" not in sys.modules:
    sys.meta_path.insert(0, _FINDER)
