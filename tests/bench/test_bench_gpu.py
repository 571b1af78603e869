"""The GPU benchmark's code path, at a tiny size on the CPU (the full-size run needs a GPU machine)."""

from bench import gpu


def test_gpu_bench_tiny_on_cpu(tmp_path):
    report = gpu.run(tmp_path, size="tiny", images=2, batch=64)
    assert report["images"] == 2 and report["images_per_s"] > 0
    assert report["tokens_per_image"] > 0 and report["model_flops_per_image"] > 0
    assert (tmp_path / "gpu-hf.json").exists()
