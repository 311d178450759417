"""The runtime under any input: token-budget batches, odd text, warnings that name the caller's line, and
resident memory that stays flat over a long run of mixed lengths."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import bertx
from bertx.batching import check_batch_tokens, plan, token_cost
from bertx.errors import InputError, OptionError

from reference import cosines, torch_sentence_embeddings

TEXTS = ["the cat eats food", "a dog runs in the park " * 12, "money in the bank", "river " * 100, "x"]


@pytest.fixture(scope="module")
def model(tiny_artifact: Path) -> bertx.Model:
    return bertx.Model.from_pretrained(tiny_artifact)


def test_a_type_that_reads_padding_gets_batches_of_one_length() -> None:
    lengths = np.array([9, 9, 7, 7, 7, 7, 7, 3])
    assert list(plan(lengths, 4, None, 0.0, equal_lengths=True)) == [(0, 2), (2, 6), (6, 7), (7, 8)]
    assert list(plan(lengths, 4, None, 0.0)) == [(0, 4), (4, 8)]


def test_plan_cuts_by_budget_with_the_count_as_upper_bound() -> None:
    lengths = np.array([100, 90, 50, 50, 50, 10, 10, 10, 10, 10, 3])
    batches = list(plan(lengths, max_texts=4, max_tokens=250, attention_ratio=0.0))
    assert batches == [(0, 2), (2, 6), (6, 10), (10, 11)]
    covered = [i for start, stop in batches for i in range(start, stop)]
    assert covered == list(range(len(lengths)))
    for start, stop in batches:
        width = lengths[start]
        assert stop - start <= 4
        assert stop - start == 1 or (stop - start) * token_cost(int(width), 0.0) <= 250
    # No budget: fixed counts, the old behaviour.
    assert list(plan(lengths, 4, None, 0.5)) == [(0, 4), (4, 8), (8, 11)]
    # A text over the budget on its own still gets a batch of one.
    assert list(plan(np.array([600, 5]), 8, 100, 0.0)) == [(0, 1), (1, 2)]


def test_attention_makes_long_batches_smaller() -> None:
    short = list(plan(np.full(256, 32), 256, 4096, 12 / 1536))
    long = list(plan(np.full(256, 256), 256, 4096, 12 / 1536))
    assert short[0] == (0, 102)  # 4096 // (32 × 1.25)
    assert long[0] == (0, 5)  # 4096 // (256 × 3): attention triples a long text's cost


@pytest.mark.parametrize("value", [-1, 1.5, "64", True])
def test_bad_batch_tokens_is_an_option_error(value: object) -> None:
    with pytest.raises(OptionError, match="batch_tokens"):
        check_batch_tokens(value)
    assert check_batch_tokens(None) is None and check_batch_tokens(0) is None


def test_token_budget_batches_give_the_same_vectors_as_torch(tiny_artifact: Path, tiny_bert: Path) -> None:
    want = torch_sentence_embeddings(tiny_bert, TEXTS, 128, "mean", False)
    for budget in (None, 1, 64, 4096):
        got = bertx.Model.from_pretrained(tiny_artifact, batch_tokens=budget).embed(TEXTS, pooling="mean")
        assert cosines(got, want).min() > 0.9999, budget


def test_lone_surrogate_is_an_input_error_naming_its_index(model: bertx.Model) -> None:
    for call in (model.embed, model.encode, model.encode_tokens):
        with pytest.raises(InputError, match=r"item 1 is not valid Unicode.*surrogate"):
            call(["fine", "bad \ud800 text"])
    with pytest.raises(InputError, match="text 0: item 1 is not valid Unicode"):
        model.encode_words([["fine", "\udfff"]])


ODD = [
    "nul\x00inside",
    "\x00",
    "bell\x07 and\x1b escape",
    "zero\u200bwidth\u200cjoin\u200d\ufeff",
    "\u200b\u200b",
    "combining e\u0301 and \U0001f600 emoji",
    "\ufffd replacement",
    "rtl \u202eoverride\u202c",
    "line\u2028separator\u2029para",
    "\t\r\n",
]


def test_odd_unicode_gets_vectors_like_torch(model: bertx.Model, tiny_bert: Path) -> None:
    got = model.embed(ODD, pooling="mean")
    assert got.shape == (len(ODD), model.hidden_size) and np.isfinite(got).all()
    want = torch_sentence_embeddings(tiny_bert, ODD, 128, "mean", False)
    assert cosines(got, want).min() > 0.9999


def test_truncation_warning_points_at_the_callers_line(model: bertx.Model) -> None:
    huge = ["word " * 500]
    calls = {
        "embed": lambda: model.embed(huge),
        "encode": lambda: model.encode(huge, layers="last4"),
        "encode_tokens": lambda: model.encode_tokens(huge),
        "encode_words": lambda: model.encode_words(huge),
        "hidden_states": lambda: model.hidden_states(huge),
    }
    for name, call in calls.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        found = [w for w in caught if issubclass(w.category, bertx.TruncationWarning)]
        assert len(found) == 1, name
        assert found[0].filename == __file__, (name, found[0].filename)


_FLAT_SCRIPT = """
import json, sys, warnings
import numpy as np
import bertx

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

warnings.simplefilter("ignore", bertx.TruncationWarning)
model = bertx.Model.from_pretrained(sys.argv[1])
words = "the cat eats food a dog runs in the park money bank river night".split()
rng = np.random.default_rng(0)
total, chunk = int(sys.argv[2]), 1000
samples = []
for start in range(0, total, chunk):
    texts = [" ".join(rng.choice(words, size=int(n))) for n in rng.integers(1, 127, size=chunk)]
    model.embed(texts)
    if start + chunk >= total // 10:
        samples.append(rss_mb())
print(json.dumps(samples))
"""


def test_resident_memory_stays_flat_over_many_mixed_lengths(tiny_artifact: Path) -> None:
    """50,000 texts of random lengths (the tiny model's full range of 1 to 128 tokens): after the first 5,000,
    the resident memory moves by less than 5%."""
    result = subprocess.run(
        [sys.executable, "-c", _FLAT_SCRIPT, str(tiny_artifact), "50000"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    samples = json.loads(result.stdout.strip().splitlines()[-1])
    first, peak = samples[0], max(samples)
    assert peak <= first * 1.05, samples


_WINDOWS_SCRIPT = """
import json, sys
from tokenizers import Tokenizer
from bertx.tokenization import TextEncoder

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

path = sys.argv[1]
before = rss_mb()
kept = [Tokenizer.from_file(path) for _ in range(5)]  # what one more copy of this tokenizer takes
copy = (rss_mb() - before) / len(kept)
del kept
encoder = TextEncoder(path, 256, 0)
text = ["word " * 600]
for window in range(40, 48):
    encoder.encode_windows(text, 4, window)
before = rss_mb()
for window in range(48, 248, 2):  # 100 distinct settings
    assert len(encoder.encode_windows(text, 8, window)[0].ids) == window
print(json.dumps({"copy": copy, "growth": rss_mb() - before}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads resident memory from /proc")
def test_a_stream_of_distinct_chunk_settings_keeps_memory_flat(minilm_source: Path) -> None:
    """Each (window, overlap) pair needs a tokenizer copy (MiniLM's: megabytes); a server's clients can ask for
    hundreds of pairs, and only the last few are kept. Measured in a fresh process, where a copy shows."""
    result = subprocess.run(
        [sys.executable, "-c", _WINDOWS_SCRIPT, str(minilm_source / "tokenizer.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["copy"] > 2, measured  # so that 100 unbounded copies would show many times over
    assert measured["growth"] < 10 * measured["copy"], measured
