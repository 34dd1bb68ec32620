"""Text-only baselines on ClueWorld stay near chance (the options give nothing away).

Acceptance point: a text-only baseline (answer from question and options alone)
stays within 10 points of chance (20 % with 5 options) on a ClueWorld test split.
Two baselines are trained on a train split and scored on a split from another seed:

* option prior: pick the option string most often correct in training;
* a linear classifier (softmax over the 5 options) on bag-of-words features of the
  option and of (question word, option word) pairs, trained with Adam.

The same classifier must learn the answer when the correct option carries a marker
word, so the near-chance result is not a classifier that cannot learn.  The
accuracies are printed and stored with ``record_property``.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from cluenet.data.clueworld import WorldConfig, clip_rng, make_sample, sample_id
from cluenet.schema import Sample

TRAIN_N, TEST_N = 3000, 1000
WIDE_TRAIN_N = 2000  # the wide config's split only adds the count template: a smaller one keeps the test fast
TRAIN_SEED, TEST_SEED = 101, 202
CHANCE = 0.2
MAX_TEXT_ONLY_ACCURACY = CHANCE + 0.10
MIN_LEAKED_ACCURACY = 0.80
LEAK_MARKER = "zzgold"
EPOCHS, LR = 100, 0.05


def _split(n: int, seed: int, cfg: WorldConfig) -> list[Sample]:
    return [make_sample(clip_rng(seed, i), cfg, sample_id(seed, i)) for i in range(n)]


@pytest.fixture(scope="module")
def splits() -> dict[str, tuple[list[Sample], list[Sample]]]:
    # default config (the shipped model's data) and the widest one (count questions on)
    wide = WorldConfig(objects=(2, 6))
    return {
        "default": (_split(TRAIN_N, TRAIN_SEED, WorldConfig()), _split(TEST_N, TEST_SEED, WorldConfig())),
        "wide": (_split(WIDE_TRAIN_N, TRAIN_SEED, wide), _split(TEST_N, TEST_SEED, wide)),
    }


def _features(question: str, option: str) -> list[str]:
    q, o = question.replace("?", "").split(), option.split()
    feats = [f"o:{w}" for w in o] + [f"o2:{a}_{b}" for a, b in zip(o, o[1:])]
    return feats + [f"x:{a}|{b}" for a in q for b in o]


class TextClassifier:
    """Linear score per option over bag-of-words counts, softmax over the options."""

    def __init__(self, samples: list[Sample], marker: bool = False) -> None:
        self.marker = marker
        self.vocab: dict[str, int] = {}
        for s in samples:
            for i in range(len(s.options)):
                for f in _features(s.question, self._text(s, i)):
                    self.vocab.setdefault(f, len(self.vocab))
        x, y = self._encode(samples), torch.tensor([s.answer for s in samples])
        self.w = torch.zeros(len(self.vocab), requires_grad=True)
        opt = torch.optim.Adam([self.w], lr=LR)
        for _ in range(EPOCHS):  # full batch: the data are small
            opt.zero_grad()
            torch.nn.functional.cross_entropy(x @ self.w, y).backward()
            opt.step()

    def _text(self, s: Sample, i: int) -> str:
        return s.options[i] + (f" {LEAK_MARKER}" if self.marker and i == s.answer else "")

    def _encode(self, samples: list[Sample]) -> torch.Tensor:
        """[n, options, vocab] feature counts; features unseen in training are dropped."""
        x = np.zeros((len(samples), len(samples[0].options), len(self.vocab)), dtype=np.float32)
        for n, s in enumerate(samples):
            for i in range(len(s.options)):
                for f in _features(s.question, self._text(s, i)):
                    if f in self.vocab:
                        x[n, i, self.vocab[f]] += 1
        return torch.from_numpy(x)

    def accuracy(self, samples: list[Sample]) -> float:
        with torch.no_grad():
            pred = (self._encode(samples) @ self.w).argmax(1)
        return float((pred == torch.tensor([s.answer for s in samples])).float().mean())


def option_prior_accuracy(train: list[Sample], test: list[Sample]) -> float:
    """Pick the option string with the highest smoothed correct-rate in training."""
    shown, correct = Counter(), Counter()
    for s in train:
        for i, o in enumerate(s.options):
            shown[o] += 1
            correct[o] += i == s.answer
    rate = lambda o: (correct[o] + CHANCE) / (shown[o] + 1)  # noqa: E731  unseen strings score chance
    hits = [int(np.argmax([rate(o) for o in s.options])) == s.answer for s in test]
    return float(np.mean(hits))


@pytest.mark.parametrize("name", ["default", "wide"])
def test_text_only_baselines_stay_near_chance(splits, name, record_property):
    train, test = splits[name]
    prior = option_prior_accuracy(train, test)
    clf = TextClassifier(train).accuracy(test)
    print(f"\n[{name}] text-only accuracy on {len(test)} test questions: option prior {prior:.3f}, "
          f"bag-of-words classifier {clf:.3f} (chance {CHANCE:.2f}, limit {MAX_TEXT_ONLY_ACCURACY:.2f})")
    record_property(f"{name}_option_prior_accuracy", round(prior, 4))
    record_property(f"{name}_text_classifier_accuracy", round(clf, 4))
    assert prior <= MAX_TEXT_ONLY_ACCURACY
    assert clf <= MAX_TEXT_ONLY_ACCURACY


def test_classifier_learns_a_leaked_answer(splits, record_property):
    train, test = splits["default"]
    acc = TextClassifier(train, marker=True).accuracy(test)  # the marker is on the test split too
    print(f"\nthe same classifier with a marker on the correct option: {acc:.3f}")
    record_property("leaked_text_classifier_accuracy", round(acc, 4))
    assert acc > MIN_LEAKED_ACCURACY


def test_answer_position_is_uniform(splits):
    train, _ = splits["default"]
    counts = np.bincount([s.answer for s in train], minlength=5) / len(train)
    assert np.all(np.abs(counts - CHANCE) < 0.03), counts
