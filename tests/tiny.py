"""A very small sample world and tiny models: the whole factory in about a minute on 2 CPUs."""

ARCH = "{image_size: 32, patch_size: 8, vision_hidden: 32, vision_layers: 1, text_hidden: 64, text_layers: 1, vocab_size: 400}"
TINY = [
    "sample_world.vg_images=30",
    "sample_world.gqa_images=20",
    "sample_world.vqa_train_images=30",
    "sample_world.vqa_val_images=5",
    "sample_world.cc3m_images=16",
    "sample_world.cc3m_shards=2",
    "sample_world.cc3m_failed_fraction=0.1",
    # from scratch at a tiny size (the sample manifest fine-tunes from the shipped base: tests/models/test_base.py)
    "models.generator.base=null",
    "models.filter.base=null",
    "models.generator.architecture=" + ARCH,
    "models.filter.architecture=" + ARCH,
    "models.generator.train={steps: 8, batch_size: 8, warmup_steps: 2}",
    "models.filter.train={steps: 5, batch_size: 8, warmup_steps: 2}",
    "generate.captions=3",
    "generate.region_support=2",  # the sample manifest's 4 needs more than 3 samples
    "generate.questions={yes/no: 2, number: 1, other: 2}",
    "generate.max_new_tokens={caption: 8, question: 8, answer: 4}",
    "resources.generate.batch_size=4",
    "resources.filter.batch_size=4",
]
