"""hstu_match runs its user tower on the users' rows only, not on the sampler's appended rows."""

import torch

from recforge.datasets.sampler import NUM_NEGATIVES_KEY
from recforge.models.hstu_match import AUTOREGRESSIVE_KEY
from recforge.models.model import TrainWrapper
from tests.unit.test_hstu_match_autoregressive import build, parse, rows


def _batch(model):
    # three users, then two sampled items with no history (as the negative sampler appends them)
    b = parse(model, rows([[1, 2, 3], [4, 5], [6], [], []], [7, 8, 9, 10, 11]))
    b.extras[NUM_NEGATIVES_KEY] = torch.tensor([2])
    return b


def test_the_user_tower_sees_only_the_users_and_scores_are_unchanged():
    model = build()
    model.eval()
    b = _batch(model)
    seen = []
    encode = model.user_tower.encoder.encode

    def spy(grouped):
        seen.append(grouped["uih.sequence_length"].shape[0])
        return encode(grouped)

    model.user_tower.encoder.encode = spy
    with torch.no_grad():
        predictions = model.predict(b)
        full = model.user_tower(model.embedding_group(b.sparse_features, b.dense_features))
    assert seen[0] == 3 and predictions["user_emb"].shape[0] == 3
    torch.testing.assert_close(predictions["user_emb"], full[:3])


def test_autoregressive_logits_with_sampled_rows():
    model = build()
    b = _batch(model)
    _, (_, predictions, _) = TrainWrapper(model)(b)
    # 3 + 2 + 1 events of the users; the positive, then the 5 candidates (in-batch + sampled)
    assert predictions[AUTOREGRESSIVE_KEY].shape == (6, 6)
