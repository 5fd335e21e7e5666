import pytest

from bench.metrics import classification_metrics


def test_metrics_match_hand_computed_values():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    m = classification_metrics(y_true, y_pred, ["neg", "neu", "pos"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    # neg: P=2/2 R=2/3 F1=0.8; neu: P=1/2 R=1/2 F1=0.5; pos: P=1/2 R=1 F1=2/3
    assert m["per_class"]["neg"] == pytest.approx(
        {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3}
    )
    assert m["per_class"]["neu"]["f1"] == pytest.approx(0.5)
    assert m["per_class"]["pos"]["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["macro_precision"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert m["macro_recall"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["n"] == 6


def test_absent_class_counts_in_macro_average():
    m = classification_metrics([0, 0], [0, 0], ["a", "b"])
    assert m["accuracy"] == 1.0
    assert m["macro_f1"] == pytest.approx(0.5)  # class b: no support, F1 0
    assert m["confusion_matrix"] == [[2, 0], [0, 0]]


def test_mismatched_lengths_and_empty_input_are_refused():
    with pytest.raises(ValueError, match="y_pred has 1"):
        classification_metrics([0, 1], [0], ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        classification_metrics([], [], ["a", "b"])


def test_paired_difference_by_hand():
    from scipy.stats import binomtest

    from bench.paired import paired_difference

    truth = [0, 1] * 50
    reference = list(truth)  # always right
    candidate = [1 - t if i < 10 else t for i, t in enumerate(truth)]  # wrong on 10 rows
    result = paired_difference(truth, reference, candidate, classes=2)
    assert result["accuracy_diff"] == pytest.approx(-0.10)
    assert result["only_reference_right"] == 10 and result["only_model_right"] == 0
    assert result["mcnemar_p"] == pytest.approx(binomtest(0, 10, 0.5).pvalue) == 2 * 0.5**10
    low, high = result["accuracy_ci"]
    assert -0.17 < low < -0.10 < high < -0.03  # 10 losses in 100 paired rows: clearly worse
    assert result["macro_f1_ci"][1] < 0
    assert paired_difference(truth, reference, candidate, classes=2) == result  # seeded
    same = paired_difference(truth, candidate, candidate, classes=2)
    assert same["accuracy_ci"] == [0.0, 0.0] and same["mcnemar_p"] == 1.0


def test_paired_macro_f1_matches_the_one_metrics_function():
    import numpy as np

    from bench.metrics import classification_metrics
    from bench.paired import paired_difference

    rng = np.random.default_rng(1)
    truth = rng.integers(0, 3, 500)
    a = np.where(rng.random(500) < 0.8, truth, rng.integers(0, 3, 500))
    b = np.where(rng.random(500) < 0.7, truth, rng.integers(0, 3, 500))
    names = ["neg", "neu", "pos"]
    want = (
        classification_metrics(truth, b, names)["macro_f1"]
        - classification_metrics(truth, a, names)["macro_f1"]
    )
    assert paired_difference(truth, a, b, classes=3)["macro_f1_diff"] == pytest.approx(want)


def test_expected_calibration_error_by_hand():
    import numpy as np

    from bench.metrics import expected_calibration_error

    sure = np.log(np.array([[0.9, 0.1]] * 10))  # says 90% on every row
    labels = [0] * 7 + [1] * 3  # right on 7 of 10
    assert expected_calibration_error(sure, labels) == pytest.approx(0.2)
    honest = np.log(np.array([[0.7, 0.3]] * 10))
    assert expected_calibration_error(honest, labels) == pytest.approx(0.0, abs=1e-12)
    mixed = np.log(np.array([[0.95, 0.05]] * 4 + [[0.55, 0.45]] * 6))
    # bins: 4 rows at 0.95 all right (gap 0.05), 6 rows at 0.55 with 3 right (gap 0.05)
    assert expected_calibration_error(mixed, [0] * 4 + [0, 0, 0, 1, 1, 1]) == pytest.approx(0.05)
