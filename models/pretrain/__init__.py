"""The bundled multi-task pretrainer: one model (tiny PaliGemma + contrastive and matching heads), one small
module per task (each owns its batch format and loss), a task sampler, the training loop and the evaluation.

    config.py    PretrainConfig: typed, validated once
    data.py      the published dataset through `datasets` (+ rejected pairs for the unfiltered ablation)
    model.py     PretrainModel: backbone, ITC projections, ITM head, prefix-LM / causal batches
    task_*.py    itc, itm, caption, completion, vqa, dense: examples(data) -> pool; loss(ctx, examples)
    tasks.py     the task registry
    sampler.py   task mixing: dynamic difficulty, uniform, proportional, round-robin
    loop.py      the training loop (Ray Train worker function): checkpoints, TensorBoard, progress
    cider.py     CIDEr-D;  evaluate.py  retrieval, captioning, VQA after a short fine-tune
"""
