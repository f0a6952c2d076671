"""Round text format (pack / format / parse), prompt templates and stop rules: pure strings."""
import random

import pytest

from bevlm.models.qa.format import (ONE_SENTENCE_FAMILIES, PromptTemplate, cut_at_stop_strings,
                                    first_sentence, format_round_answer, normalise_item, pack_round,
                                    parse_round_answer, postprocess_answer)

_WORDS = ("Yes.", "No.", "Going ahead.", "Turn left.", "The ego vehicle.", "None.", "Low.", "sedan",
          "is", "moving,", "parked,", "and", "the", "car", "to", "front", "left", "0.5", "1088.3",
          "(traffic light, green, 674.86, 0.14, 723.33, 109.18)", "Q1:", "A", "B.", "Firstly",
          "notice", "that", "slowly.", "?", "!", "A1", "a:b", "x,y.")
_CTAGS = ("<c1,CAM_FRONT,712.5,510.0>", "<c2,CAM_BACK,1088.3,497.5>", "<c13,CAM_FRONT_LEFT,-3.0,0>")


def _random_answer(rng: random.Random) -> str:
    if rng.random() < 0.15:
        return ""
    parts = [rng.choice(_CTAGS) if rng.random() < 0.25 else rng.choice(_WORDS)
             for _ in range(rng.randint(1, 12))]
    sep = rng.choice((" ", ", ", " "))
    return sep.join(parts)


def test_pack_and_format_exact_text():
    assert pack_round(["Is it?", "What is <c1,CAM_FRONT,712.5,510.0>?"]) == \
        "Q1: Is it?\nQ2: What is <c1,CAM_FRONT,712.5,510.0>?"
    assert format_round_answer(["Yes.", "", "Going ahead."]) == "A1: Yes.\nA2:\nA3: Going ahead."
    assert pack_round(["two\nlines ", "  x"]) == "Q1: two lines\nQ2: x"
    with pytest.raises(ValueError):
        pack_round([])
    with pytest.raises(ValueError):
        format_round_answer([])


def test_round_trip_property_over_generated_answer_lists():
    rng = random.Random(0)
    n_lists = 0
    for _ in range(400):
        answers = [_random_answer(rng) for _ in range(rng.randint(1, 70))]
        assert all(a == normalise_item(a) for a in answers)
        text = format_round_answer(answers)
        assert parse_round_answer(text, len(answers)) == answers
        n_lists += 1
    assert n_lists == 400


def test_round_trip_edge_cases():
    cases = [[""], ["", ""], ["<c1,CAM_FRONT,712.5,510.0>, <c2,CAM_BACK,1088.3,497.5>."],
             ["A1: looks like a tag", "Q2: also"], ["x"] * 12, ["Yes.", "", "No.", ""]]
    for answers in cases:
        assert parse_round_answer(format_round_answer(answers), len(answers)) == answers


def test_parse_is_robust_to_bad_output():
    # missing items -> '', text before the first tag and untagged lines ignored
    assert parse_round_answer("Sure, here:\nA1: Yes.\nblah\nA3: No.", 3) == ["Yes.", "", "No."]
    # extra items beyond n and repeated tags ignored (first wins)
    assert parse_round_answer("A1: a\nA2: b\nA3: c\nA1: z", 2) == ["a", "b"]
    # spacing variants around the tag
    assert parse_round_answer("A1:Yes.\n  A 2 :  No. ", 2) == ["Yes.", "No."]
    # all answers on one line: split at the next expected tag only
    assert parse_round_answer("A1: Yes. A2: Going ahead. A3: <c1,CAM_FRONT,712.5,510.0>.", 3) == \
        ["Yes.", "Going ahead.", "<c1,CAM_FRONT,712.5,510.0>."]
    assert parse_round_answer("A1: see A3: later", 3) == ["see A3: later", "", ""]
    # nothing usable
    assert parse_round_answer("", 2) == ["", ""]
    assert parse_round_answer("I do not know.", 1) == [""]
    assert parse_round_answer("A1: x", 0) == []
    # a custom tag
    assert parse_round_answer(format_round_answer(["p", "q"], tag="Ans"), 2, tag="Ans") == ["p", "q"]


def test_default_template_is_identity_and_custom_template_wraps():
    t = PromptTemplate()
    q = "What is the moving status of object <c1,CAM_FRONT,712.5,510.0>?"
    assert t.system is None
    assert t.question_text(q) == q
    assert t.round_text([q, "Yes?"]) == pack_round([q, "Yes?"])
    c = PromptTemplate(question_prefix="[Q] ", question_suffix=" [/Q]",
                       round_instruction="Answer each as A<i>: <answer>.", question_tag="Question")
    assert c.question_text("x?") == "[Q] x? [/Q]"
    assert c.round_text(["x?", "y?"]) == "[Q] Answer each as A<i>: <answer>.\nQuestion1: x?\nQuestion2: y? [/Q]"
    with pytest.raises(ValueError, match="letters only"):
        PromptTemplate(answer_tag="A:")
    with pytest.raises(ValueError, match="different"):
        PromptTemplate(question_tag="A", answer_tag="A")


def test_first_sentence_and_stop_strings():
    assert first_sentence("Yes. The car is moving.") == "Yes."
    assert first_sentence("  Going ahead. Going ahead. Going") == "Going ahead."
    assert first_sentence("<c1,CAM_FRONT,712.5,510.0>. It is close") == "<c1,CAM_FRONT,712.5,510.0>."
    assert first_sentence("Is it? Yes") == "Is it?"
    assert first_sentence("no end here") == "no end here"
    assert first_sentence("0.5 m ahead") == "0.5 m ahead"
    assert cut_at_stop_strings("Yes.<|im_end|> junk", ["<|im_end|>"]) == "Yes."
    assert cut_at_stop_strings("a STOP b END c", ["END", "STOP"]) == "a"
    assert cut_at_stop_strings("nothing", ["END"]) == "nothing"
    with pytest.raises(ValueError):
        cut_at_stop_strings("x", [""])


def test_postprocess_answer_by_family():
    assert {"are_there", "moving_status", "should_consider"} <= ONE_SENTENCE_FAMILIES
    assert "important_objects" not in ONE_SENTENCE_FAMILIES
    assert postprocess_answer("Yes. Yes. No.", "are_there") == "Yes."
    assert postprocess_answer("Going ahead. The car", "moving_status") == "Going ahead."
    long = "The ego vehicle is going straight. The ego vehicle is driving slowly."
    assert postprocess_answer(long, "behavior") == long  # two-sentence family untouched
    assert postprocess_answer("Yes. No.", "are_there", one_sentence_families=None) == "Yes. No."
    mc = ("What is the moving status of object <c1,CAM_FRONT,712.5,510.0>? Please select the correct "
          "answer from the following options: A. Turn left. B. Going ahead. C. Stopped. D. Back up.")
    assert postprocess_answer("B. Going ahead.", "moving_status", mc) == "B"
    assert postprocess_answer("C", "moving_status", mc) == "C"
    assert postprocess_answer("(D) back", "moving_status", mc) == "D"
    assert postprocess_answer("Going ahead.", "moving_status", mc) == "Going ahead."
    assert postprocess_answer("No. blah STOP x", "are_there", stop_strings=["STOP"]) == "No."
