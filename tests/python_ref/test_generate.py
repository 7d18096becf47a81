"""Caption decoding: the cached prefix/step graphs reproduce the uncached seq2seq forward, for greedy and beam."""

import pytest
import torch

from minivlm.python_ref.config import tiny
from minivlm.python_ref.errors import InputError
from minivlm.python_ref.fusion import Fusion
from minivlm.python_ref.packing import pack_inputs
from minivlm.python_ref.generate import UncachedDecoder, beam_search, greedy
from minivlm.python_ref.tokenizer import Tokenizer

CFG = tiny().fusion
# Cached and uncached paths sum attention over differently laid-out keys: fp32 rounding only.
CACHE_ATOL = 1e-5


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.default()


def _model(seed: int = 0) -> Fusion:
    """Seeded random weights large enough that the context matters: BERT's 0.02 init gives near-uniform
    logits and the same token forever; a scaled-up output bias makes the argmax a real choice."""
    torch.manual_seed(seed)
    f = Fusion(CFG).eval()
    with torch.no_grad():
        for name, p in f.named_parameters():
            if name.startswith("encoder.embeddings.") and p.dim() == 2:
                p.normal_(0, 0.3)
            elif p.dim() == 2:
                p.normal_(0, 1.0 / p.shape[1] ** 0.5)
        f.mlm_head.bias.normal_(0, 3.0)
    return f


@pytest.fixture(scope="module")
def model() -> Fusion:
    return _model()


@pytest.fixture(scope="module")
def inputs(tok):
    regions = torch.randn(3, CFG.region_dim, generator=torch.Generator().manual_seed(1))
    return pack_inputs(tok, "", ["red circle", "blue square"], regions, CFG, require_text=False)


def _assert_same(cached, uncached):
    assert cached.token_ids == uncached.token_ids
    assert cached.finished == uncached.finished
    assert cached.step_logits.shape == uncached.step_logits.shape
    err = (cached.step_logits - uncached.step_logits).abs().max().item()
    assert err <= CACHE_ATOL, f"max abs logit error {err:.3g} > {CACHE_ATOL}"
    assert cached.score == pytest.approx(uncached.score, abs=1e-5)


def test_greedy_cached_equals_uncached(model, tok, inputs):
    cached = greedy(model, tok, inputs)
    uncached = greedy(model, tok, inputs, cached=False)
    _assert_same(cached, uncached)
    assert len(cached.token_ids) == CFG.max_caption_tokens and not cached.finished
    assert len(set(cached.token_ids)) >= 3, f"trivial caption {cached.token_ids}"
    assert cached.step_logits.shape == (CFG.max_caption_tokens, CFG.vocab_size)
    assert list(cached.step_logits.argmax(-1)) == list(cached.token_ids)


@pytest.mark.parametrize("num_beams", [2, 4])
def test_beam_cached_equals_uncached(model, tok, inputs, num_beams):
    cached = beam_search(model, tok, inputs, num_beams)
    uncached = beam_search(model, tok, inputs, num_beams, cached=False)
    _assert_same(cached, uncached)
    assert len(set(cached.token_ids)) >= 3
    # the score is the path's log-probability, length-normalised
    logp = torch.log_softmax(cached.step_logits, -1)
    total = sum(logp[i, t] for i, t in enumerate(cached.token_ids))
    assert cached.score == pytest.approx(float(total) / len(cached.token_ids), abs=1e-4)


def test_beam_is_at_least_as_likely_as_greedy(model, tok, inputs):
    g = greedy(model, tok, inputs)
    b = beam_search(model, tok, inputs, 4, length_penalty=0.0)  # no length normalisation: plain sum
    assert b.score >= g.score - 1e-5


def test_stops_at_sep(tok, inputs):
    f = _model()
    with torch.no_grad():
        f.mlm_head.bias[tok.sep_id] = 100.0
    for cached in (True, False):
        g = greedy(f, tok, inputs, cached=cached)
        assert g.token_ids == () and g.finished and g.step_logits.shape == (1, CFG.vocab_size)
        b = beam_search(f, tok, inputs, 3, cached=cached)
        assert b.token_ids == () and b.finished


def test_sep_midway_with_cache(tok, inputs):
    """A [SEP] that wins only after a few tokens: both paths stop at the same step."""
    f = _model()
    base = greedy(f, tok, inputs)
    with torch.no_grad():  # make [SEP] the runner-up at step 3, then push it just past the winner
        row = base.step_logits[2]
        f.mlm_head.bias[tok.sep_id] += float(row.max() - row[tok.sep_id]) + 0.5
    cached, uncached = greedy(f, tok, inputs), greedy(f, tok, inputs, cached=False)
    _assert_same(cached, uncached)
    assert cached.finished and len(cached.token_ids) < CFG.max_caption_tokens


def test_max_caption_tokens(model, tok, inputs):
    c = greedy(model, tok, inputs, max_caption_tokens=3)
    assert len(c.token_ids) == 3 and c.token_ids == greedy(model, tok, inputs).token_ids[:3]
    with pytest.raises(InputError, match="max_caption_tokens is 15"):
        greedy(model, tok, inputs, max_caption_tokens=15)
    with pytest.raises(InputError, match="num_beams is 0"):
        beam_search(model, tok, inputs, 0)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_on_step_reports_each_rows_history_and_its_logits(model, tok, inputs, num_beams):
    """Every row the hook sees is the uncached forward of its own history: the hook reports what each row
    really decoded from (goldens key their tables by these histories)."""
    seen = []

    def hook(history, logits):
        seen.append((history.clone(), logits.clone()))

    if num_beams == 1:
        caption = greedy(model, tok, inputs, on_step=hook)
    else:
        caption = beam_search(model, tok, inputs, num_beams, on_step=hook)
    assert [h.shape[1] for h, _ in seen] == list(range(1, len(seen) + 1))  # one call per step, history grows by one
    assert all(h.shape[0] == num_beams and (h[:, 0] == tok.cls_id).all() for h, _ in seen)
    best = (tok.cls_id, *caption.token_ids)
    for t in range(1, min(len(best), len(seen)) + 1):  # the winner's path runs through the recorded histories
        assert best[:t] in {tuple(r) for r in seen[t - 1][0].tolist()}, f"step {t} lacks the caption's prefix"
    for history, logits in seen:
        for row in range(0, num_beams, max(1, num_beams - 1)):  # first and last row of each step
            with torch.no_grad():
                uncached = UncachedDecoder(model, tok, inputs, 1).step(history[row : row + 1])[0]
            err = float((uncached - logits[row]).abs().max())
            assert err <= CACHE_ATOL, f"step {history.shape[1]} row {row}: hook logits {err:.3g} from the uncached forward"
