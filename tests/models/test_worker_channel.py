"""The vLLM worker's pipe carries data, never code: MessagePack frames (no pickle anywhere in the product)."""

import io
import re
from pathlib import Path

import pytest

from jade.models.backends.vllm_worker import recv, send

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("app", "formats", "jade", "models", "pipeline", "reports", "sampleworld", "stages")


def test_a_message_round_trips():
    msg = {
        "op": "generate",
        "images": {0: b"\x89PNG\r\n", 7: b""},
        "requests": [{"prompt": "answer en what?", "n": 2, "top_k": 20, "temperature": 0.5}],
        "ignore_eos": False,
        "nested": [["text", 0.25, [1, 2, 3]]],
    }
    buf = io.BytesIO()
    send(buf, msg)
    send(buf, {"op": "close"})
    buf.seek(0)
    assert recv(buf) == msg and recv(buf) == {"op": "close"}
    with pytest.raises(EOFError):
        recv(buf)


def test_a_truncated_message_is_an_error_not_a_hang():
    buf = io.BytesIO()
    send(buf, {"op": "x"})
    with pytest.raises(EOFError, match="mid-message"):
        recv(io.BytesIO(buf.getvalue()[:-1]))


def test_no_pickle_on_any_channel_of_the_product():
    for folder in PRODUCT:
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            assert not re.search(r"\bpickle\.loads?\b|\bimport pickle\b|cloudpickle", text), path
