"""Every metric, hand-computed on fixed small R matrices (docs/metrics.md has the 3 x 3 one).

R[i, j] = score on the language trained at step j after training step i (0-based).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpc_forget.analysis import metrics as M

nan = float("nan")

# the worked example of docs/metrics.md
R3 = np.array(
    [
        [0.8, 0.3, 0.2],
        [0.6, 0.9, 0.4],
        [0.5, 0.7, 0.7],
    ]
)

# 4 x 4 with two missing cells
R4 = np.array(
    [
        [0.9, 0.2, 0.1, 0.6],
        [0.7, 0.8, nan, 0.4],
        [0.6, nan, 0.9, 0.5],
        [0.5, 0.6, 0.7, 0.8],
    ]
)


def close(a, b):
    np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), atol=1e-12)


# ---------------------------------------------------------------------------- alignment


def test_order_aligned_permutes_columns_to_the_training_order():
    languages = ["a", "b", "c"]  # store columns
    steps = ["c", "a", "b"]  # training order
    m = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=float)
    close(M.order_aligned(m, languages, steps), [[3, 1, 2], [6, 4, 5], [9, 7, 8]])


def test_order_aligned_errors():
    with pytest.raises(M.MetricsError, match="does not match"):
        M.order_aligned(np.zeros((2, 3)), ["a", "b", "c"], ["a", "b", "c"])
    with pytest.raises(M.MetricsError, match="'d' is not among"):
        M.order_aligned(np.zeros((3, 3)), ["a", "b", "c"], ["a", "b", "d"])
    with pytest.raises(M.MetricsError, match="repeat"):
        M.order_aligned(np.zeros((3, 3)), ["a", "b", "c"], ["a", "b", "b"])
    with pytest.raises(M.MetricsError, match="T x T"):
        M.cbt(np.zeros((2, 3)))


# ---------------------------------------------------------------------------- section 3.3 on R3


def test_avg_f1_learned_and_final_f1():
    close(M.avg_f1_learned(R3), [0.8, 0.75, 1.9 / 3])
    assert M.final_f1(R3) == pytest.approx(1.9 / 3)


def test_window_change_common_and_seen():
    W = M.window_change(R3)
    assert W[1, 0] == pytest.approx(-0.2)  # 0.6 - 0.8
    assert W[2, 1] == pytest.approx(-0.15)  # mean(0.5 - 0.6, 0.7 - 0.9)
    assert W[2, 0] == pytest.approx(-0.3)  # 0.5 - 0.8
    assert np.isnan(W[0, 0]) and np.isnan(W[0, 1])  # a <= b undefined
    S = M.window_change(R3, "seen")  # differences of the Fig. 2 curve
    assert S[1, 0] == pytest.approx(0.75 - 0.8)
    assert S[2, 1] == pytest.approx(1.9 / 3 - 0.75)
    with pytest.raises(M.MetricsError, match="p_set"):
        M.window_change(R3, "all")


def test_performance_shift_eq9_and_change_fig3():
    close(M.performance_shift(R3), [0.2, 0.15])  # P_t - P_{t+1}: positive = a drop
    close(M.performance_change(R3), [nan, -0.2, -0.15])  # Fig. 3, positive = a gain
    # eq. 9 averaged over orders: R3 and the top-left 3 x 3 of R4 (shift [0.2, 0.1])
    close(M.p_avg([R3, R4[:3, :3]]), [0.2, 0.125])
    with pytest.raises(M.MetricsError):
        M.p_avg([])


# ---------------------------------------------------------------------------- section 3.4 on R3


def test_cft_cbt_paper():
    # CFT eq. 10-11: X_0 = mean(0.3, 0.2) = 0.25, X_1 = 0.4 -> 0.325
    assert M.cft(R3) == pytest.approx(0.325)
    # CBT eq. 12 (0-based): mean(0.5 - 0.8, 0.7 - 0.9) = -0.25
    assert M.cbt(R3) == pytest.approx(-0.25)


HAND_R3 = {
    # convention: (backward, forward), forward with baseline 0
    "paper": (-0.25, 0.325),
    "paper-literal": (-0.1, 0.325),  # (R10 - R00 + R11 - R11) / 2
    "gem": (-0.5 / 3, 0.7 / 3),  # (-0.3 - 0.2 + 0) / 3 ; (0 + 0.3 + 0.4) / 3
    "avalanche": (-0.25, 0.35),  # -forgetting over tasks 0,1 ; (0.3 + 0.4) / 2
    "mhamdi": (-0.225, 0.3),  # mean(-0.2, mean(-0.3, -0.2)) ; mean(0.3, mean(0.2, 0.4))
}


@pytest.mark.parametrize("convention", M.CONVENTIONS)
def test_every_convention_hand_computed(convention):
    bwt, fwt = HAND_R3[convention]
    assert M.cbt(R3, convention) == pytest.approx(bwt)
    assert M.cft(R3, convention) == pytest.approx(fwt)
    assert M.transfer_all(R3)[convention] == pytest.approx({"backward": bwt, "forward": fwt})


def test_the_conventions_disagree_on_the_same_matrix():
    t = M.transfer_all(R3)
    backward = {c: round(v["backward"], 9) for c, v in t.items()}
    forward = {c: round(v["forward"], 9) for c, v in t.items()}
    # GEM divides by T and includes the last task (its term is 0): (T-1)/T of Avalanche's
    assert backward["gem"] == pytest.approx(backward["avalanche"] * 2 / 3)
    assert backward["gem"] != backward["avalanche"]
    # Avalanche: minus forgetting over the tasks before the current one == the paper's eq. 12
    assert backward["avalanche"] == backward["paper"]
    # M'hamdi averages over every step, not only the last one
    assert backward["mhamdi"] not in (backward["paper"], backward["gem"])
    # the literal 1-based reading uses the second-to-last row
    assert backward["paper-literal"] not in (backward["paper"], backward["gem"])
    assert len(set(backward.values())) == 4
    # forward: raw future scores (paper) vs one hop / T (gem) vs one hop / (T-1) (avalanche)
    # vs every earlier step (mhamdi)
    assert len(set(forward.values())) == 4
    assert forward["gem"] == pytest.approx(forward["avalanche"] * 2 / 3)


def test_forward_baseline_is_subtracted_except_by_the_paper():
    b = [0.1, 0.1, 0.2]
    assert M.cft(R3, "paper", b) == pytest.approx(0.325)  # eq. 10-11 has no baseline
    assert M.cft(R3, "avalanche", b) == pytest.approx(((0.3 - 0.1) + (0.4 - 0.2)) / 2)
    assert M.cft(R3, "gem", b) == pytest.approx((0 + 0.2 + 0.2) / 3)
    assert M.cft(R3, "mhamdi", b) == pytest.approx(
        ((0.3 - 0.1) + ((0.2 - 0.2) + (0.4 - 0.2)) / 2) / 2
    )
    with pytest.raises(M.MetricsError, match="baseline"):
        M.cft(R3, "gem", [0.1, 0.2])


def test_fwt_k_hops():
    assert M.fwt_k(R3, 1) == pytest.approx(0.35)  # mean(R01, R12)
    assert M.fwt_k(R3, 2) == pytest.approx(0.2)  # R02
    assert math.isnan(M.fwt_k(R3, 3))
    with pytest.raises(M.MetricsError):
        M.fwt_k(R3, 0)


def test_mft_mbt_per_position_common():
    c = "common"
    close(M.mbt(R3, 0, c), [nan, -0.2, -0.15])  # = Fig. 3 change (h = 0, same p_set)
    close(M.mft(R3, 0, c), [nan, -0.2, -0.15])
    close(M.mbt(R3, 1, c), [nan, nan, -0.3])  # P_2 - P_0
    close(M.mft(R3, 1, c), [nan, -0.3, nan])  # P_2 - P_0, credited to the language at step 1
    close(M.mbt(R3, 2, c), [nan, nan, nan])
    f, b = M.hop_matrices(R3, hops=(0, 1, 2), p_set=c)
    close(f, [M.mft(R3, h, c) for h in (0, 1, 2)])
    close(b, [M.mbt(R3, h, c) for h in (0, 1, 2)])
    with pytest.raises(M.MetricsError):
        M.mft(R3, -1)


def test_mft_mbt_default_to_the_tasks_seen():
    # eq. 13-14: P_i = the average over the tasks seen up to step i = A_i = [0.8, 0.75, 1.9/3]
    assert M.HOP_P_SET_DEFAULT == "seen" and M.P_SET_DEFAULT == "common"
    close(M.mbt(R3, 0), [nan, -0.05, 1.9 / 3 - 0.75])
    close(M.mft(R3, 1), [nan, 1.9 / 3 - 0.8, nan])
    close(M.mbt(R3, 1), [nan, nan, 1.9 / 3 - 0.8])
    f, b = M.hop_matrices(R3, hops=(0, 1, 2))
    close(f, [M.mft(R3, h, "seen") for h in (0, 1, 2)])
    close(b, [M.mbt(R3, h, "seen") for h in (0, 1, 2)])


def test_the_two_readings_can_disagree_in_sign():
    # the language trained at step 1 scores high: the seen average rises while the
    # language learned before it drops
    R = np.array([[0.5, 0.1, 0.1], [0.4, 0.9, 0.1], [0.4, 0.9, 0.9]])
    assert M.mft(R, 0, "common")[1] == pytest.approx(-0.1)
    assert M.mft(R, 0, "seen")[1] == pytest.approx(0.15)


def test_hop_scalars_are_the_1_over_L_sums():
    f, b = M.hop_matrices(R3, hops=(0, 1, 2), p_set="common")
    # MFT_0: mean(-0.2, -0.15); MFT_1: the one window; MFT_2: none
    close(M.hop_scalars(f), [-0.175, -0.3, nan])
    close(M.hop_scalars(b), [-0.175, -0.3, nan])
    with pytest.raises(M.MetricsError, match="hops x positions"):
        M.hop_scalars(np.zeros(3))


# ---------------------------------------------------------------------------- NaN cells (R4)


def test_r4_section_3_3():
    close(M.avg_f1_learned(R4), [0.9, 0.75, 0.75, 0.65])  # R4[2, 1] missing: mean(0.6, 0.9)
    assert M.final_f1(R4) == pytest.approx(0.65)
    W = M.window_change(R4)
    assert W[2, 1] == pytest.approx(-0.1)  # only R20 - R10; the R21 - R11 pair is missing
    assert W[3, 2] == pytest.approx(-0.15)  # mean(0.5 - 0.6, 0.7 - 0.9)
    assert W[3, 1] == pytest.approx(-0.2)
    close(M.performance_shift(R4), [0.2, 0.1, 0.15])
    close(M.performance_change(R4), [nan, -0.2, -0.1, -0.15])


HAND_R4 = {
    "paper": (-0.8 / 3, 1.2 / 3),  # mean(-0.4, -0.2, -0.2) ; mean(0.3, 0.4, 0.5)
    "paper-literal": (-0.15, 1.2 / 3),  # mean(0.6 - 0.9, [R21 missing], 0)
    "gem": (-0.2, 0.7 / 3),  # mean(-0.4, -0.2, -0.2, 0) ; mean(0, 0.2, [R12 missing], 0.5)
    "avalanche": (-0.8 / 3, 0.35),
    "mhamdi": ((-0.2 - 0.3 - 0.8 / 3) / 3, (0.2 + 0.1 + 0.5) / 3),
}


@pytest.mark.parametrize("convention", M.CONVENTIONS)
def test_r4_conventions_average_the_terms_present(convention):
    bwt, fwt = HAND_R4[convention]
    assert M.cbt(R4, convention) == pytest.approx(bwt)
    assert M.cft(R4, convention) == pytest.approx(fwt)


def test_r4_hops():
    close(M.mbt(R4, 1, "common"), [nan, nan, -0.3, -0.2])
    close(M.mft(R4, 1, "common"), [nan, -0.3, -0.2, nan])
    close(M.mft(R4, 2, "common"), [nan, -0.4, nan, nan])
    # seen: A = [0.9, 0.75, 0.75, 0.65] (R4[2, 1] missing: A_2 = mean(0.6, 0.9))
    close(M.mbt(R4, 1), [nan, nan, -0.15, -0.1])
    close(M.mft(R4, 2), [nan, -0.25, nan, nan])
    assert M.fwt_k(R4, 1) == pytest.approx(0.35)  # mean(0.2, 0.5): R12 missing


def test_missing_cells_are_never_zero():
    inc = R4.copy()
    inc[3, :] = nan  # the last step is not there yet
    assert math.isnan(M.final_f1(inc))
    for c in ("paper", "gem", "avalanche"):
        assert math.isnan(M.cbt(inc, c)), c  # needs the last row
    assert M.cbt(inc, "mhamdi") == pytest.approx((-0.2 - 0.3) / 2)  # steps 1 and 2 only
    assert M.cft(inc) == pytest.approx(1.2 / 3)  # rows 0..2 are all there
    empty = np.full((3, 3), nan)
    for c in M.CONVENTIONS:
        assert math.isnan(M.cbt(empty, c)) and math.isnan(M.cft(empty, c)), c
    assert np.isnan(M.avg_f1_learned(empty)).all()
    assert np.isnan(M.performance_shift(empty)).all()
    assert math.isnan(M.fwt_k(empty, 1))
    assert math.isnan(M.cbt(np.array([[0.5]])))  # one language: nothing to transfer


def test_unknown_convention():
    with pytest.raises(M.MetricsError, match="unknown convention 'bwt'"):
        M.cbt(R3, "bwt")


# ---------------------------------------------------------------------------- aggregation


def test_average_per_language_over_orders():
    change = M.performance_change(R3)  # [nan, -0.2, -0.15]
    mean, count = M.average_per_language([(change, ["x", "y", "z"]), (change, ["z", "x", "y"])])
    assert mean["x"] == pytest.approx(-0.2) and count["x"] == 1  # first in order 1: no value
    assert mean["y"] == pytest.approx(-0.175) and count["y"] == 2
    assert mean["z"] == pytest.approx(-0.15) and count["z"] == 1
    f, _ = M.hop_matrices(R3, hops=(0, 1), p_set="common")
    mean, count = M.average_per_language([(f, ["x", "y", "z"])])
    close(mean["y"], [-0.2, -0.3])
    close(count["z"], [1, 0])


def test_summarize_mean_std_ci():
    s = M.summarize([0.1, 0.2, 0.3, nan], resamples=500, seed=1)
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.2)
    assert s["std"] == pytest.approx(0.1)  # ddof = 1
    assert 0.1 <= s["ci_low"] <= 0.2 <= s["ci_high"] <= 0.3
    one = M.summarize([0.5])
    assert one == {
        "mean": 0.5,
        "std": None,
        "ci_low": None,
        "ci_high": None,
        "n": 1,
        "ci_units": 1,
    }
    assert M.summarize([nan, None])["mean"] is None


def test_fewer_than_three_units_give_no_interval():
    two = M.summarize([0.1, 0.3], resamples=500)
    assert two["std"] == pytest.approx(math.sqrt(0.02)) and two["ci_low"] is None
    # 2 orders x 3 seeds: 6 runs but 2 units
    s = M.summarize([0.1, 0.11, 0.12, 0.3, 0.31, 0.32], ["1", "1", "1", "2", "2", "2"])
    assert s["n"] == 6 and s["ci_units"] == 2 and s["ci_low"] is None
    s = M.summarize([0.1, 0.2, 0.3], ["1", "2", "3"], resamples=200)
    assert s["ci_units"] == 3 and s["ci_low"] is not None


def test_bootstrap_resamples_orders_then_seeds():
    # 3 orders x 3 seeds; the seeds of an order agree closely, the orders do not
    values = [0.60, 0.61, 0.62, 0.70, 0.71, 0.72, 0.80, 0.81, 0.82]
    orders = ["1"] * 3 + ["2"] * 3 + ["3"] * 3
    naive = M.bootstrap_ci(values, resamples=2000, seed=0)
    lo, hi = M.bootstrap_ci(values, orders, resamples=2000, seed=0)
    assert lo < naive[0] and hi > naive[1]  # 3 independent units, not 9: wider
    assert lo >= 0.6 and hi <= 0.82
    # every resample draws whole orders: with one value per order it is the plain bootstrap
    one = [0.6, 0.7, 0.8]
    assert M.bootstrap_ci(one, ["a", "b", "c"], seed=3) == M.bootstrap_ci(one, seed=3)
    # a single order: its seeds are the units
    assert M.bootstrap_ci(one, ["a", "a", "a"], seed=3) == M.bootstrap_ci(one, seed=3)
    with pytest.raises(M.MetricsError, match="cluster labels"):
        M.bootstrap_ci(one, ["a"])


def test_bootstrap_is_deterministic_per_seed():
    v = [0.61, 0.64, 0.58, 0.66, 0.62]
    a = M.bootstrap_ci(v, resamples=1000, seed=0)
    assert a == M.bootstrap_ci(v, resamples=1000, seed=0)
    assert a != M.bootstrap_ci(v, resamples=1000, seed=1)
    assert min(v) <= a[0] < np.mean(v) < a[1] <= max(v)
    assert all(math.isnan(x) for x in M.bootstrap_ci([0.5], seed=0))
