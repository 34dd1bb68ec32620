"""The adaptive filter: keep rule edge cases, head scoring, save/load, training-free scores."""
import pytest
import torch

from cluenet.errors import ModelError
from cluenet.filter import FilterHead, select, similarity_scores, threshold
from cluenet.schema import FilterSettings


def test_select_keeps_above_relative_and_absolute_cut():
    s = FilterSettings(tau_min=0.3, rho=0.5, m_max=8)
    assert select([0.9, 0.5, 0.44, 0.2], s) == [True, True, False, False]
    assert threshold([0.9, 0.5, 0.44, 0.2], s) == pytest.approx(0.45)


def test_select_all_equal_keeps_all_up_to_m_max():
    assert select([0.6] * 4, FilterSettings(m_max=8)) == [True] * 4
    assert select([0.6] * 4, FilterSettings(m_max=2)) == [True, True, False, False]  # ties keep the earlier


def test_select_all_below_tau_keeps_the_best_one():
    assert select([0.1, 0.25, 0.2], FilterSettings(tau_min=0.9)) == [False, True, False]


def test_select_more_than_m_max_keeps_the_best():
    assert select([0.5, 0.9, 0.7, 0.8], FilterSettings(tau_min=0.0, rho=0.0, m_max=2)) == [False, True, False, True]


def test_select_empty():
    assert select([], FilterSettings()) == []
    assert threshold([], FilterSettings()) is None


def test_head_scores_in_unit_interval_and_save_load_identical(tmp_path):
    torch.manual_seed(0)
    head = FilterHead(32, mlp_hidden=16).eval()
    h, q = torch.randn(5, 32), torch.randn(32)
    before = head.score(h, q)
    assert len(before) == 5 and all(0.0 < u < 1.0 for u in before)
    assert len(set(before)) > 1  # depends on the clue, not constant
    path = head.save(tmp_path / "head.safetensors")
    again = FilterHead.load(path, hidden_size=32)
    assert again.score(h, q) == before


def test_head_hidden_mismatch_names_both_sizes(tmp_path):
    path = FilterHead(32).save(tmp_path / "head.safetensors")
    with pytest.raises(ModelError, match="hidden size 32.*gives 64"):
        FilterHead.load(path, hidden_size=64)
    with pytest.raises(ModelError, match="hidden size 32.*gives 16"):
        FilterHead(32).score(torch.randn(2, 16), torch.randn(16))


def test_load_rejects_foreign_safetensors(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ModelError, match="not a ClueNet filter head"):
        FilterHead.load(tmp_path / "x.safetensors")
    with pytest.raises(ModelError, match="not found"):
        FilterHead.load(tmp_path / "missing.safetensors")


def test_similarity_scores_rank_by_cosine():
    q = torch.tensor([1.0, 0.0])
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    assert similarity_scores(h, q) == pytest.approx([1.0, 0.5, 0.0])
    assert similarity_scores(torch.zeros(0, 2), q) == []
