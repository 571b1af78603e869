"""A tokenizer trained offline on the run's own training texts, for models trained from scratch.

SentencePiece-style BPE (Metaspace pre-tokenizer, like Gemma's, with punctuation split off words, so "circle?"
at the end of a question is the same "circle" as anywhere else) built with the `tokenizers` library: no
download. PaliGemma's processor then adds ``<image>`` and the 1024 ``<loc>`` + 128 ``<seg>`` tokens.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
ALPHABET = list(string.ascii_lowercase + string.ascii_uppercase + string.digits + " .,;:!?'\"-/()&%\n")


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    # words, then punctuation split off them: "circle?" is "▁circle" + "?", the same noun as mid-sentence
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation("isolated")]
    )
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=ALPHABET)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        padding_side="left",  # generation pads on the left
    )
