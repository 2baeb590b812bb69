"""``ESTSPostProcess``'s NUM_SELECT limit: every (query, class) pair may be selected, one more is an error."""
import pytest
import torch

from ests_d2.modeling.postprocess import ESTSPostProcess


def _outputs(num_queries: int, num_classes: int):
    gen = torch.Generator().manual_seed(0)
    return {
        "pred_logits": torch.randn(1, num_queries, num_classes, generator=gen),
        "pred_boxes": torch.rand(1, num_queries, 4, generator=gen),
        "pred_beziers": torch.rand(1, num_queries, 32, generator=gen),
        "pred_rec": torch.randn(1, num_queries, 2, 97, generator=gen),
    }


def test_num_select_may_take_every_query_class_pair():
    (result,) = ESTSPostProcess(num_select=6)(_outputs(3, 2), torch.tensor([[50, 80]]))
    assert sorted(zip(result["query_index"].tolist(), result["labels"].tolist())) == [
        (q, c) for q in range(3) for c in range(2)]


def test_num_select_beyond_the_pairs_is_a_config_error():
    with pytest.raises(ValueError, match=r"^MODEL\.ESTS\.NUM_SELECT \(7\) exceeds the 6 \(query, class\) pairs$"):
        ESTSPostProcess(num_select=7)(_outputs(3, 2), torch.tensor([[50, 80]]))
