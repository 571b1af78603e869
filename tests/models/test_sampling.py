"""The vectorized token choice: hashed noise is uniform and keyed, top-K sampling follows its softmax."""

import torch

from jade.models.backends.sampling import choose, hashed_uniform


def test_hashed_uniform_is_uniform_and_keyed():
    tok = torch.arange(4096)[None, :]
    u = hashed_uniform(torch.tensor([7]), torch.tensor([0]), 0, tok)[0]
    assert 0.0 < float(u.min()) and float(u.max()) < 1.0
    assert abs(float(u.mean()) - 0.5) < 0.02
    hist = torch.histc(u.float(), bins=8, min=0, max=1)
    assert float(hist.min()) > 4096 / 8 * 0.8
    other = [
        hashed_uniform(torch.tensor([8]), torch.tensor([0]), 0, tok)[0],  # another seed
        hashed_uniform(torch.tensor([7]), torch.tensor([1]), 0, tok)[0],  # another sample
        hashed_uniform(torch.tensor([7]), torch.tensor([0]), 1, tok)[0],  # another step
    ]
    for o in other:
        assert not torch.equal(o, u)
        assert abs(float(torch.corrcoef(torch.stack([u, o]))[0, 1])) < 0.1
    assert torch.equal(hashed_uniform(torch.tensor([7]), torch.tensor([0]), 0, tok)[0], u)


def test_top_k_sampling_follows_the_softmax_over_the_k_best():
    logits = torch.tensor([[2.0, 1.0, 0.0, 5.0, -1.0]])
    n = 4000
    rows = logits.expand(n, -1)
    tok, lp = choose(
        rows,
        greedy=torch.zeros(n, dtype=torch.bool),
        top_k=torch.full((n,), 3),
        temperature=torch.full((n,), 2.0),
        seed=torch.full((n,), 11, dtype=torch.int64),
        sample=torch.arange(n),
        step=0,
    )
    kept = torch.tensor([3, 0, 1])  # the 3 best tokens
    probs = torch.softmax(logits[0, kept] / 2.0, -1)
    freq = torch.stack([(tok == t).float().mean() for t in kept])
    assert set(tok.tolist()) <= set(kept.tolist())
    assert torch.allclose(freq, probs, atol=0.03)
    assert torch.allclose(lp[tok == 3][0], torch.log(probs[0]), atol=1e-5)


def test_greedy_rows_take_the_argmax_in_a_mixed_batch():
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(0))
    greedy = torch.tensor([True, False, True, False, True, False])
    tok, lp = choose(
        logits,
        greedy,
        torch.full((6,), 5),
        torch.ones(6),
        torch.arange(6),
        torch.zeros(6, dtype=torch.long),
        0,
    )
    assert torch.equal(tok[greedy], logits.argmax(-1)[greedy])
    assert torch.allclose(lp[greedy], torch.log_softmax(logits, -1).max(-1).values[greedy])
