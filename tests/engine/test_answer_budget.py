"""Decode budgets against reference answers: ``budget_shortfalls`` (hand-computed) and the
``AnswerBudgetCheckHook`` that tools/test.py runs before decoding."""
import json
import logging
from types import SimpleNamespace

from bevlm.engine import AnswerBudgetCheckHook
from bevlm.models.qa import budget_shortfalls
from bevlm.structures import QAItem


def words(text):  # one "token" per word: lengths are easy to count by hand
    return text.split()


def qa(answer, family, question="Q?"):
    return QAItem(question, answer, "perception", 0, family)


def test_budget_shortfalls_hand_counted():
    items = [qa("a b c d e", "important_objects"),      # 5 > 4
             qa("a b c", "important_objects"),           # 3 <= 4
             qa("a b c d e f", "important_objects"),     # 6 > 4
             qa("a b", "moving_status"),                 # 2 <= default 2
             qa("a b c", "notice_order"),                # 3 > default 2
             qa("", "notice_order")]                     # no reference: ignored
    found = budget_shortfalls(items, words, default=2, overrides={"important_objects": 4})
    assert found == {"important_objects": {"budget": 4, "longest": 6, "over": 2, "answers": 3},
                     "notice_order": {"budget": 2, "longest": 3, "over": 1, "answers": 1}}
    # a budget equal to the longest reference fits it
    assert budget_shortfalls(items, words, default=3, overrides={"important_objects": 6}) == {}


class _Tok:
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(range(len(text.split())))}


def _runner(entries, budgets, default=2, multiple_choice="generate", closed_set=None):
    test_cfg = SimpleNamespace(max_new_tokens=default, family_max_new_tokens=budgets,
                               multiple_choice=multiple_choice, closed_set=closed_set)
    model = SimpleNamespace(test_cfg=test_cfg, llm=SimpleNamespace(tokenizer=_Tok()))
    records = []
    logger = logging.getLogger("answer_budget_test")
    logger.warning = lambda msg: records.append(msg)  # the runner's MMLogger is a logging.Logger
    runner = SimpleNamespace(model=model, logger=logger,
                             test_dataloader=SimpleNamespace(dataset=SimpleNamespace(data_list=entries)))
    return runner, records


def test_hook_warns_with_the_fix_and_writes_its_file(tmp_path):
    entries = [{"frame": 0, "qa": [qa(" ".join(["w"] * 10), "important_objects"), qa("x", "moving_status")]},
               {"frame": 1, "qa": [], "history_only": True}]
    runner, warned = _runner(entries, {"important_objects": 8})
    out = tmp_path / "test" / "answer_budget.json"
    AnswerBudgetCheckHook(out_file=str(out)).before_test(runner)
    assert len(warned) == 1
    msg = warned[0]
    assert "'important_objects'" in msg and "budget of 8 tokens" in msg and "longest 10" in msg
    # the fix names the key and a budget above the longest reference (10 * 1.2 rounded up to 16)
    assert "--cfg-options model.test_cfg.family_max_new_tokens.important_objects=16" in msg
    assert json.loads(out.read_text()) == {"important_objects": {"budget": 8, "longest": 10, "over": 1,
                                                                 "answers": 1}}


def test_hook_silent_when_everything_fits(tmp_path):
    entries = [{"frame": 0, "qa": [qa("a b c", "important_objects")]}]
    runner, warned = _runner(entries, {"important_objects": 3})
    out = tmp_path / "answer_budget.json"
    AnswerBudgetCheckHook(out_file=str(out)).before_test(runner)
    assert warned == [] and json.loads(out.read_text()) == {}


def test_hook_skips_multiple_choice_answered_by_likelihood():
    mc = qa("A B C D E", "behavior", question="Predict the behavior. Please select the correct answer from "
                                              "the following options: A. Go. B. Stop. C. Turn left. D. Turn right.")
    runner, warned = _runner([{"frame": 0, "qa": [mc]}], {}, default=2, multiple_choice="likelihood")
    AnswerBudgetCheckHook().before_test(runner)
    assert warned == []
    runner, warned = _runner([{"frame": 0, "qa": [mc]}], {}, default=2, multiple_choice="generate")
    AnswerBudgetCheckHook().before_test(runner)
    assert len(warned) == 1


def test_hook_skips_the_closed_set_families_and_calibrated_multiple_choice():
    mc = qa("A B C D E", "behavior", question="Predict the behavior. Please select the correct answer from "
                                              "the following options: A. Go. B. Stop. C. Turn left. D. Turn right.")
    entries = [{"frame": 0, "qa": [qa("No such action will lead to a collision.", "collision_actions"), mc]}]
    runner, warned = _runner(entries, {}, default=2, multiple_choice="calibrated",
                             closed_set=dict(families=["collision_actions"]))
    AnswerBudgetCheckHook().before_test(runner)
    assert warned == []  # neither is decoded
    runner, warned = _runner(entries, {}, default=2, multiple_choice="calibrated")
    AnswerBudgetCheckHook().before_test(runner)
    assert len(warned) == 1 and "'collision_actions'" in warned[0]


def test_hook_ignores_models_without_language_side():
    runner, warned = _runner([{"frame": 0, "qa": [qa("a b c", "x")]}], {})
    runner.model = SimpleNamespace(test_cfg=None)  # e.g. the detection pretraining model
    AnswerBudgetCheckHook().before_test(runner)
    assert warned == []


def test_default_budgets_cover_the_generated_references(tiny_world):
    """The default config's budgets hold every reference answer of the generated world (train and
    val, SmolLM2's tokenizer): no answer the world asks for is cut by the decoder."""
    from mmengine.config import Config
    from transformers import AutoTokenizer

    from bevlm.models.llm.loading import smollm2_location
    from bevlm.structures.qa_families import classify_question

    cfg = Config.fromfile("configs/bev_vlm.py").model.test_cfg
    location, gguf = smollm2_location()
    tok = AutoTokenizer.from_pretrained(location, gguf_file=gguf)
    items = []
    for split in ("train", "val"):
        with open(f"{tiny_world}/drivelm_{split}.json") as f:
            for scene in json.load(f).values():
                for frame in scene["key_frames"].values():
                    for stage, qas in frame["QA"].items():
                        items += [qa(x["A"], classify_question(x["Q"], stage)) for x in qas]
    assert any(i.family == "important_objects" for i in items)

    def encode(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    assert budget_shortfalls(items, encode, cfg.max_new_tokens, dict(cfg.family_max_new_tokens)) == {}
