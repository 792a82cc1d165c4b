"""Difficulty scores: forgetting on hand-written histories, the streaming recorder against
the brute-force history reference, EL2N / loss / margin by hand, AUM, resume, the hardness convention."""
import math

import numpy as np
import pytest
import torch

from ccfs.errors import CheckpointError, ConfigError, DataError
from ccfs.scores import HIGHER_IS_EASIER, RECORDED, to_hardness
from ccfs.teacher.difficulty import (DynamicsRecorder, ce_loss, default_el2n_epochs, el2n, forgetting_from_history,
                                     margin)


def history(*columns: list[int]) -> torch.Tensor:
    """Bool [P, N] from one list per sample (its correctness at each presentation)."""
    return torch.tensor(columns, dtype=torch.bool).T


# ----------------------------------------------------------------------------- forgetting reference


@pytest.mark.parametrize("column, events", [
    ([1, 0, 1, 0], 2), ([0, 1, 1], 0), ([1, 1, 0], 1), ([1, 0, 0, 1, 0, 1], 2), ([1, 1, 1], 0), ([0, 1, 0], 1),
])
def test_forgetting_counts_correct_to_incorrect_transitions(column, events):
    out = forgetting_from_history(history(column))
    assert out.dtype == torch.float32 and out.tolist() == [events]


def test_never_learned_ranks_above_every_learned_sample():
    h = history([1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 1, 1], [1, 0, 1, 0])
    assert forgetting_from_history(h).tolist() == [2, 4, 0, 2]  # never learned: max(2 + 1, P = 4)


def test_all_never_learned_gets_presentation_count():
    assert forgetting_from_history(history([0, 0, 0], [0, 0, 0])).tolist() == [3, 3]


def naive_forgetting(h: np.ndarray) -> np.ndarray:
    """Per-sample Python loop, independent of the vectorised reference."""
    counts = [sum(h[p - 1, i] and not h[p, i] for p in range(1, len(h))) for i in range(h.shape[1])]
    learned = h.any(0)
    top = max([c for c, ok in zip(counts, learned) if ok], default=-1)
    return np.array([c if ok else max(top + 1, len(h)) for c, ok in zip(counts, learned)], dtype=np.float32)


def test_forgetting_matches_naive_loop_on_random_histories():
    g = torch.Generator().manual_seed(0)
    h = torch.rand(9, 40, generator=g) < 0.6
    h[:, :3] = False  # a few never-learned samples
    np.testing.assert_array_equal(forgetting_from_history(h).numpy(), naive_forgetting(h.numpy()))


def test_forgetting_rejects_non_bool_history():
    with pytest.raises(ValueError):
        forgetting_from_history(torch.ones(3, 4))


# ----------------------------------------------------------------------------- per-batch scores by hand

# softmax([ln 2, 0, 0]) = [1/2, 1/4, 1/4]; softmax([0, 0, ln 2]) = [1/4, 1/4, 1/2]
LOGITS = torch.tensor([[math.log(2), 0.0, 0.0], [math.log(2), 0.0, 0.0], [1.0, 3.0, 2.0]])
LABELS = torch.tensor([0, 1, 2])


def test_el2n_by_hand():
    p2 = torch.softmax(LOGITS[2], 0)
    expected = [math.sqrt(0.25 + 0.0625 + 0.0625), math.sqrt(0.25 + 0.5625 + 0.0625),
                math.sqrt(p2[0] ** 2 + p2[1] ** 2 + (1 - p2[2]) ** 2)]
    torch.testing.assert_close(el2n(LOGITS, LABELS), torch.tensor(expected))


def test_ce_loss_by_hand():
    expected = [math.log(2), math.log(4), math.log(math.exp(1) + math.exp(3) + math.exp(2)) - 2]
    torch.testing.assert_close(ce_loss(LOGITS, LABELS), torch.tensor(expected))


def test_margin_by_hand():
    torch.testing.assert_close(margin(LOGITS, LABELS), torch.tensor([math.log(2), -math.log(2), -1.0]))


# ----------------------------------------------------------------------------- streaming recorder

K = 3  # classes in the synthetic runs


def logits_for(correct: torch.Tensor, labels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random logits [B, K] whose argmax is the label exactly where `correct`."""
    z = torch.randn(len(labels), K, generator=g)
    other = z.scatter(1, labels[:, None], float("-inf")).amax(1)
    lowest = z.amin(1)
    gap = 0.1 + torch.rand(len(labels), generator=g)
    true = torch.where(correct, other + gap, lowest - gap)
    return z.scatter(1, labels[:, None], true[:, None])


def replay(recorder, h, labels, g, epochs=None, log=None):
    """Feed history `h` [P, N] epoch by epoch, each in a random order and random batch sizes."""
    for epoch in range(len(h)) if epochs is None else epochs:
        order = torch.randperm(h.shape[1], generator=g)
        for idx in torch.split(order, int(torch.randint(1, 8, (1,), generator=g))):
            z = logits_for(h[epoch, idx], labels[idx], g)
            recorder(epoch, idx, z, labels[idx])
            if log is not None:
                log.append((epoch, idx, z))


def run_case(seed=0, epochs=8, n=30):
    g = torch.Generator().manual_seed(seed)
    h = torch.rand(epochs, n, generator=g) < 0.7
    h[:, :2] = False  # never learned
    h[:, 2] = True  # never forgotten
    labels = torch.randint(0, K, (n,), generator=g)
    return g, h, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recorder_forgetting_equals_history_reference(seed):
    g, h, labels = run_case(seed)
    rec = DynamicsRecorder(h.shape[1], len(h))
    replay(rec, h, labels, g)
    np.testing.assert_array_equal(rec.scores()["forgetting"], forgetting_from_history(h).numpy())


def brute_force_scores(log, labels, el2n_epochs):
    """Every score from the full log of (epoch, indices, logits), one sample at a time."""
    n = len(labels)
    per = {i: [] for i in range(n)}  # sample → [(epoch, logits [K])] in presentation order
    for epoch, idx, z in log:
        for j, i in enumerate(idx.tolist()):
            per[i].append((epoch, z[j]))
    out = {k: np.zeros(n, np.float32) for k in ("aum", "margin", "el2n", "loss", "el2n_early", "loss_last")}
    for i, seen in per.items():
        y = labels[i:i + 1]
        m = [float(margin(z[None], y)) for _, z in seen]
        early = [z for e, z in seen if e in el2n_epochs]
        out["aum"][i], out["margin"][i] = np.mean(m), m[-1]
        out["el2n"][i] = np.mean([float(el2n(z[None], y)) for z in early])
        out["loss"][i] = np.mean([float(ce_loss(z[None], y)) for z in early])
        out["el2n_early"][i] = float(el2n(early[0][None], y))
        out["loss_last"][i] = float(ce_loss(seen[-1][1][None], y))
    return out


@pytest.mark.parametrize("played, el2n_epochs", [(6, [1, 3, 4]), (4, [0]), (4, [1, 5])])  # 4 of 6: interrupted
def test_recorder_scores_match_brute_force(played, el2n_epochs):
    g, h, labels = run_case(seed=3, epochs=6, n=20)
    rec, log = DynamicsRecorder(20, 6, el2n_epochs=el2n_epochs), []
    replay(rec, h, labels, g, epochs=range(played), log=log)
    got, want = rec.scores(), brute_force_scores(log, labels, set(el2n_epochs))
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    assert all(v.dtype == np.float32 and v.shape == (20,) for v in got.values())
    assert not np.allclose(got["aum"], got["margin"])  # AUM averages, margin is the last epoch


def test_every_score_has_a_sign():
    g, h, labels = run_case(epochs=2, n=5)
    rec = DynamicsRecorder(5, 2)
    replay(rec, h, labels, g)
    assert set(rec.scores()) <= set(HIGHER_IS_EASIER)


def test_state_dict_round_trip_mid_run_gives_identical_scores():
    g, h, labels = run_case(seed=4, epochs=8)
    full, first = DynamicsRecorder(30, 8), DynamicsRecorder(30, 8)
    g_full, g_split = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    replay(full, h, labels, g_full)
    replay(first, h, labels, g_split, epochs=range(4))
    sd = first.state_dict()
    assert all(t.device.type == "cpu" for t in sd["state"].values())
    resumed = DynamicsRecorder(30, 8)
    resumed.load_state_dict(sd)
    replay(resumed, h, labels, g_split, epochs=range(4, 8))
    a, b = full.scores(), resumed.scores()
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_load_state_dict_rejects_another_run():
    with pytest.raises(CheckpointError, match="resume with the settings"):
        DynamicsRecorder(30, 8).load_state_dict(DynamicsRecorder(31, 8).state_dict())


def test_scores_before_full_coverage_raise():
    rec = DynamicsRecorder(4, 2, el2n_epochs=[0])
    with pytest.raises(DataError, match="saw no batch"):
        rec.scores()
    rec(0, torch.tensor([0, 2]), torch.zeros(2, K), torch.tensor([0, 1]))
    with pytest.raises(DataError, match=r"2 of 4 samples \(first: index 1\) were never presented"):
        rec.scores()


def test_scores_need_the_el2n_epochs():
    rec = DynamicsRecorder(2, 4, el2n_epochs=[2])
    rec(0, torch.tensor([0, 1]), torch.zeros(2, K), torch.tensor([0, 1]))
    with pytest.raises(DataError, match=r"el2n epochs \[2\]"):
        rec.scores()


@pytest.mark.parametrize("num_epochs, expected", [(200, [20, 40]), (10, [1, 2]), (5, [0, 1]), (1, [0])])
def test_default_el2n_epochs(num_epochs, expected):
    assert default_el2n_epochs(num_epochs) == expected
    assert DynamicsRecorder(3, num_epochs).el2n_epochs == expected


@pytest.mark.parametrize("epochs", [[], [5], [-1]])
def test_bad_el2n_epochs_raise(epochs):
    with pytest.raises(ConfigError, match="el2n_epochs"):
        DynamicsRecorder(3, 5, el2n_epochs=epochs)


def test_epoch_out_of_range_raises():
    with pytest.raises(ConfigError, match="epoch 3"):
        DynamicsRecorder(2, 3)(3, torch.tensor([0]), torch.zeros(1, K), torch.tensor([0]))


# ----------------------------------------------------------------------------- hardness


@pytest.mark.parametrize("name", sorted(HIGHER_IS_EASIER))
def test_hardness_puts_hardest_first(name):
    scores = torch.tensor([3.0, 1.0, 2.0])
    order = torch.argsort(to_hardness(scores, name), descending=True).tolist()
    assert order == ([1, 2, 0] if HIGHER_IS_EASIER[name] else [0, 2, 1])


def test_hardness_works_on_numpy_too():
    assert to_hardness(np.array([1.0, -2.0]), "aum").tolist() == [-1.0, 2.0]
    assert to_hardness(np.array([1.0, -2.0]), "forgetting").tolist() == [1.0, -2.0]


def test_signs_of_paper_scores():
    assert not HIGHER_IS_EASIER["forgetting"] and HIGHER_IS_EASIER["cscore"]
    assert HIGHER_IS_EASIER["logits"] and HIGHER_IS_EASIER["aum"]


def test_recorder_scores_are_the_recorded_names():
    rec = DynamicsRecorder(2, 1)
    rec(0, torch.tensor([0, 1]), torch.randn(2, K), torch.tensor([0, 1]))
    assert set(rec.scores()) == set(RECORDED)


def test_hardness_unknown_name_lists_valid_ones():
    with pytest.raises(ConfigError, match="valid: .*forgetting"):
        to_hardness(torch.zeros(2), "hardness")


def test_recorder_detaches_logits():
    rec = DynamicsRecorder(2, 1)
    z = torch.randn(2, K, requires_grad=True)
    rec(0, torch.tensor([0, 1]), z * 2, torch.tensor([0, 1]))
    assert rec.scores()["margin"].shape == (2,)  # numpy() refuses tensors that require grad
