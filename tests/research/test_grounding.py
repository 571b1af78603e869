"""`python -m research.grounding`: every probe trains on a small world and prints its curve."""

import pytest

from jade.sampleworld import WorldConfig, write_world

pytestmark = pytest.mark.research


def test_grounding_probes_run(tmp_path, capsys):
    from research import grounding

    world = tmp_path / "world"
    cfg = WorldConfig(
        seed=1, vg_images=2, gqa_images=2, vqa_train_images=24, vqa_val_images=2, cc3m_images=4, cc3m_shards=1
    )
    write_world(world, cfg)
    assert grounding.main([str(world), "--steps", "50", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and "held-out cell accuracy" in lines[0]
    assert all("50: loss" in line for line in lines[1:])
