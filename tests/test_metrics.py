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
