"""A processor whose image processor remembers each image's pixels.

The pretrainer and its downstream fine-tunes draw the same few thousand in-memory images again and again (2,500
pretraining steps over 2,910 images; VQA, captioning and region fine-tunes over fixed train splits), and
re-running the image processor on every draw was 5-7% of a step on the sample world's tiny models. `memo_pixels`
wraps a processor's image processor so that each PIL image object is processed once, under the same keyword
arguments, and later draws stack the remembered rows: the output is the same tensor, row for row (the image
processor treats every image on its own; `tests/models/test_pixel_memo.py` checks the equality).

Keyed by the image object's identity, held only while the image lives (a weak reference): images are never
modified in place here. Anything else (numpy arrays, tensors, other return types, extra outputs) goes straight
to the wrapped processor. `factory.save` saves the `plain` processor.
"""

from __future__ import annotations

import copy
import weakref

import torch
from PIL import Image
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import make_flat_list_of_images


class PixelMemo:
    """Callable in place of ``processor.image_processor``; every other attribute is the wrapped one's."""

    def __init__(self, inner):
        self._inner = inner
        self._rows: dict[tuple[int, str], tuple[weakref.ref, torch.Tensor]] = {}

    def __getattr__(self, name):
        if name in ("_inner", "_rows") or name.startswith("__"):  # before __init__ (copy, pickle): not there
            raise AttributeError(name)
        return getattr(self._inner, name)

    def __deepcopy__(self, memo):  # a copy starts with an empty memo
        return PixelMemo(copy.deepcopy(self._inner, memo))

    def __reduce__(self):  # and so does a pickled one (the memo holds weak references)
        return PixelMemo, (self._inner,)

    def _forget(self, key):
        self._rows.pop(key, None)

    def __call__(self, images, **kwargs):
        if kwargs.get("return_tensors") != "pt":
            return self._inner(images, **kwargs)
        flat = make_flat_list_of_images(images)
        if not flat or not all(isinstance(i, Image.Image) for i in flat):
            return self._inner(images, **kwargs)
        how = repr(sorted(kwargs.items()))
        keys = [(id(i), how) for i in flat]
        todo = {}
        for key, img in zip(keys, flat, strict=True):
            hit = self._rows.get(key)
            if (hit is None or hit[0]() is not img) and key not in todo:
                todo[key] = img
        if todo:
            out = self._inner(list(todo.values()), **kwargs)
            if set(out.keys()) != {"pixel_values"}:
                return self._inner(images, **kwargs)
            for (key, img), row in zip(todo.items(), out["pixel_values"], strict=True):
                self._rows[key] = (weakref.ref(img, lambda _, k=key: self._forget(k)), row)
        return BatchFeature({"pixel_values": torch.stack([self._rows[k][1] for k in keys])})


def plain(processor):
    """``processor`` as it is saved: with its own image processor (a shallow copy when that one is wrapped)."""
    if not isinstance(processor.image_processor, PixelMemo):
        return processor
    out = copy.copy(processor)
    out.image_processor = processor.image_processor._inner
    return out


def memo_pixels(processor):
    """``processor`` with its image processor wrapped in a `PixelMemo` (once)."""
    if not isinstance(processor.image_processor, PixelMemo):
        processor.image_processor = PixelMemo(processor.image_processor)
    return processor
