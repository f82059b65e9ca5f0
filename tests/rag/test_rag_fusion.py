import numpy as np
import pytest

from llmloop.rag.errors import IndexConfigError
from llmloop.rag.retrieve import FusionConfig, reciprocal_rank_fusion


def test_items_ranked_well_by_both_lists_win() -> None:
    dense = np.array([1, 2, 3])
    bm25 = np.array([3, 2, 4])
    ids, scores = reciprocal_rank_fusion([dense, bm25], [1.0, 1.0], rrf_k=60)
    assert ids.tolist()[:2] == [2, 3] or ids.tolist()[:2] == [3, 2]
    assert set(ids.tolist()) == {1, 2, 3, 4}
    assert scores[0] == pytest.approx(1 / 62 + 1 / 62) or scores[0] == pytest.approx(
        1 / 63 + 1 / 61
    )
    assert list(scores) == sorted(scores, reverse=True)


def test_weights_tilt_the_fusion() -> None:
    dense, bm25 = np.array([1, 2]), np.array([2, 1])
    assert reciprocal_rank_fusion([dense, bm25], [2.0, 1.0])[0].tolist() == [1, 2]
    assert reciprocal_rank_fusion([dense, bm25], [1.0, 2.0])[0].tolist() == [2, 1]
    assert reciprocal_rank_fusion([dense, bm25], [0.0, 1.0])[0].tolist() == [2, 1]


def test_empty_rankings_fuse_to_nothing() -> None:
    ids, scores = reciprocal_rank_fusion([np.array([], dtype=np.int64)] * 2, [1.0, 1.0])
    assert ids.size == scores.size == 0


@pytest.mark.parametrize(
    "kwargs", [{"dense_weight": -1}, {"dense_weight": 0, "bm25_weight": 0}, {"rrf_k": -5}]
)
def test_bad_fusion_config(kwargs: dict) -> None:
    with pytest.raises(IndexConfigError):
        FusionConfig(**kwargs)
