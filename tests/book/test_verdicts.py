"""The verdict table each chapter gathers its claim checks into."""

import numpy as np
import pytest

from dmcore.lab.verdicts import Verdicts, decade


def _two_rows(second_ok=True):
    v = Verdicts()
    v.check("L1. CCE memorises", "noisy fit above 0.45", f"{0.56234:.3f}", 0.56234 > 0.45)
    v.check("L2. MAE under-fits", "8 points below CCE", f"{0.763:.3f} vs {0.957:.3f}", second_ok)
    return v


def test_the_table_is_markdown_with_the_four_columns_in_order():
    assert _two_rows().table().splitlines() == [
        "| finding | criterion | measured | verdict |",
        "|---|---|---|---|",
        "| L1. CCE memorises | noisy fit above 0.45 | 0.562 | holds |",
        "| L2. MAE under-fits | 8 points below CCE | 0.763 vs 0.957 | holds |",
    ]


def test_a_failing_row_is_bold_in_the_table_and_named_by_assert_all():
    v = _two_rows(second_ok=False)
    assert v.table().splitlines()[-1] == "| L2. MAE under-fits | 8 points below CCE | 0.763 vs 0.957 | **fails** |"
    with pytest.raises(AssertionError) as raised:
        v.assert_all()
    message = str(raised.value)
    assert message.startswith("1 of 2 checks fail")
    assert "L2. MAE under-fits: 8 points below CCE; measured 0.763 vs 0.957: fails" in message
    assert "L1" not in message                      # only the failing rows are listed
    assert v.summary() == "1 of 2 checks hold"


def test_every_failing_row_is_listed():
    v = Verdicts()
    for name in ("a", "b", "c"):
        v.check(name, "criterion", "1", name == "b")
    with pytest.raises(AssertionError, match=r"2 of 3 checks fail:\n- a: .*\n- c: "):
        v.assert_all()


def test_passing_rows_pass_and_check_returns_the_outcome():
    v = _two_rows()
    v.assert_all()
    assert v.check("x", "y", "z", False) is False and len(v) == 3 and [r.ok for r in v.failures] == [False]


def test_no_rows_is_not_a_pass():
    with pytest.raises(AssertionError, match="no checks"):
        Verdicts().assert_all()
    with pytest.raises(ValueError):
        Verdicts().table()


@pytest.mark.parametrize("measured", [0.5, 1, np.float64(0.25), None])
def test_the_measured_value_must_be_formatted_by_the_chapter(measured):
    with pytest.raises(TypeError, match="explicit format"):
        Verdicts().check("f", "c", measured, True)


@pytest.mark.parametrize("ok", [1, 0.0, "yes", None, np.array([True, False])])
def test_the_outcome_must_be_a_bool(ok):
    with pytest.raises(TypeError, match="must be a bool"):
        Verdicts().check("f", "c", "m", ok)


def test_a_numpy_bool_is_a_bool():
    v = Verdicts()
    assert v.check("f", "c", "m", np.float64(1.0) > 0) is True
    assert type(v.rows[0].ok) is bool


@pytest.mark.parametrize("field", ["finding", "criterion", "measured"])
def test_texts_are_one_non_empty_line(field):
    args = {"finding": "f", "criterion": "c", "measured": "m"}
    for bad in ("", "two\nlines"):
        with pytest.raises(ValueError):
            Verdicts().check(**{**args, field: bad}, ok=True)


def test_a_finding_with_several_criteria_is_named_on_its_first_row():
    v = Verdicts()
    for finding, criterion in (("M1", "a"), ("M1", "b"), ("M2", "c"), ("M1", "d")):
        v.check(finding, criterion, "1", criterion != "b")
    assert [line.split(" | ")[0] for line in v.table().splitlines()[2:]] == ["| M1", "| ", "| M2", "| M1"]
    with pytest.raises(AssertionError, match="- M1: b; measured 1: fails"):   # named in full when it fails
        v.assert_all()


def test_a_pipe_in_a_cell_does_not_break_the_table():
    v = Verdicts()
    v.check("|x|", "a | b", "1", True)
    assert v.table().splitlines()[2] == r"| \|x\| | a \| b | 1 | holds |"


def test_evidence_against_is_listed_under_the_table():
    v = Verdicts()
    v.check("I1. DM beats CCE", "every seed above", "3 of 3", True, against="at ratio 10 one seed is below")
    v.check("I2", "c", "m", True, against=["one", "two"])
    lines = v.table().splitlines()
    assert lines[4:] == ["", "Evidence against:", "", "- I1. DM beats CCE: at ratio 10 one seed is below",
                         "- I2: one", "- I2: two"]


def test_a_reproduction_is_one_row_whose_text_does_not_depend_on_the_machine():
    from types import SimpleNamespace

    def Reproduction(experiment, modes, rows, seconds):       # what reproduce.reproduce returns, in brief
        failures = [r for r in rows if not r["ok"]]
        return SimpleNamespace(experiment=experiment, modes=modes, rows=rows, failures=failures, passed=not failures)

    rows = [{"ok": True}, {"ok": True}, {"ok": False}]
    for modes in ({"a": "bitwise", "b": "bitwise"}, {"a": "statistical", "b": "statistical"}):
        v = Verdicts()
        assert v.reproduced(Reproduction("label-noise", modes, rows[:2], 1.0)) is True
        assert v.table().splitlines()[2] == ("| The record `label-noise` reproduces | the re-trained sample within the rule "
                                             "of dmcore.lab.reproduce | runs re-trained: 2; values outside: 0 | holds |")
    assert v.reproduced(Reproduction("label-noise", modes, rows, 1.0)) is False
    with pytest.raises(AssertionError, match="`label-noise` reproduces.*values outside: 1"):
        v.assert_all()


def test_a_rounding_error_is_shown_as_its_decade():
    assert [decade(x) for x in (1.4e-14, 1.3e-14, 9.9e-14, 1e-13, -3e-7, 0.0, 0.5, 12.0)] == \
        ["< 1e-13", "< 1e-13", "< 1e-13", "< 1e-12", "< 1e-6", "0", "< 1e0", "< 1e2"]
    assert decade(float("nan")) == "nan"
