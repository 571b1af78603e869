"""The task registry: name -> task class. Adding a task is one module and one line here."""

from __future__ import annotations

from jade.models.pretrain.task_binding import Binding, Query, Relation
from jade.models.pretrain.task_caption import Captioning
from jade.models.pretrain.task_completion import Completion
from jade.models.pretrain.task_dense import DenseCaption
from jade.models.pretrain.task_detect import Detect
from jade.models.pretrain.task_itc import ITC
from jade.models.pretrain.task_itm import ITM
from jade.models.pretrain.task_locate import Locate
from jade.models.pretrain.task_objects import Objects
from jade.models.pretrain.task_relate import Relate
from jade.models.pretrain.task_vqa import VQA

TASKS = {
    t.name: t
    for t in (
        ITC,
        ITM,
        Captioning,
        Completion,
        VQA,
        DenseCaption,
        Objects,
        Locate,
        Detect,
        Relate,
        Binding,
        Query,
        Relation,
    )
}


def make_task(name: str, cfg=None):
    """The task ``name``, with its settings from the pretraining config where it has any (ITC's texts)."""
    if name == "itc" and cfg is not None:
        return ITC(cfg.itc_texts)
    return TASKS[name]()
