"""The ego status as text in the prefix (bevlm.models.heads.ego_text): hand-computed quantities and
line, a fixed length, and the model places exactly those token embeddings in its prefix."""
import copy
import math

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from bevlm.models.heads.ego_text import EgoText
from bevlm.registry import DATASETS, MODELS
from tests.conftest import REPO

init_default_scope("bevlm")
torch.set_num_threads(1)


def _line(ego):
    et = EgoText()
    return et.describe(et.quantities(torch.tensor(ego, dtype=torch.float32)))


def test_quantities_and_line_hand_computed():
    et = EgoText()
    # straight, accelerating: 8 m/s + 0.5 m/s^2 over 3 s -> 8 * 3 + 0.5 * 0.5 * 9 = 26.25 m
    q = et.quantities(torch.tensor([8.0, 0.0, 0.5, 0.0, 0.0]))
    assert q["speed"] == pytest.approx(8.0) and q["accel"] == pytest.approx(0.5)
    assert q["dist"] == pytest.approx(26.25, abs=1e-3) and q["heading_deg"] == 0.0
    assert _line([8.0, 0.0, 0.5, 0.0, 0.0]) == ("Ego: 8.0 m/s, speeding up 0.5 m/s2, not turning. "
                                                "In 3 s at this rate: 26 m, 0 deg.")
    # braking to a stop: 4 m/s at -2 m/s^2 stops after 2 s, 4^2 / (2 * 2) = 4 m, then stays
    q = et.quantities(torch.tensor([4.0, 0.0, -2.0, 0.0, 0.0]))
    assert q["dist"] == pytest.approx(4.0, abs=1e-3) and q["accel"] == pytest.approx(-2.0)
    assert _line([4.0, 0.0, -2.0, 0.0, 0.0]) == ("Ego: 4.0 m/s, slowing down 2.0 m/s2, not turning. "
                                                 "In 3 s at this rate: 4 m, 0 deg.")
    # turning right at 2 deg/s at a constant 10 m/s: 30 m along the arc (chords: -0.001 %), 6 deg right
    q = et.quantities(torch.tensor([10.0, 0.0, 0.0, 0.0, math.radians(-2.0)]))
    assert q["dist"] == pytest.approx(30.0, rel=1e-4) and q["heading_deg"] == pytest.approx(-6.0)
    assert _line([10.0, 0.0, 0.0, 0.0, math.radians(-2.0)]) == (
        "Ego: 10.0 m/s, steady speed, turning right 2.0 deg/s. In 3 s at this rate: 30 m, 6 deg right.")
    # the acceleration along the motion: a sideways acceleration does not speed the car up
    q = et.quantities(torch.tensor([0.0, 5.0, 0.0, 1.0, 0.0]))
    assert q["speed"] == pytest.approx(5.0) and q["accel"] == pytest.approx(1.0)
    assert _line([0.0, 0.0, 0.0, 0.0, 0.0]) == "Ego: 0.0 m/s, steady speed, not turning. In 3 s at this rate: 0 m, 0 deg."


def test_fixed_length_and_bad_settings():
    class Tok:  # one id per character
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) for c in text]}

    line = _line([8.0, 0.0, 0.5, 0.0, 0.0])
    et = EgoText(num_tokens=len(line) + 3)
    assert et.token_ids(line, Tok()) == [ord(c) for c in line] + [ord("\n")] * 3
    with pytest.raises(ValueError, match="raise model.ego_text.num_tokens"):
        EgoText(num_tokens=len(line) - 1).token_ids(line, Tok())
    with pytest.raises(ValueError, match="multiple of 0.5"):
        EgoText(horizon_s=1.2)
    with pytest.raises(ValueError, match="num_tokens must be >= 8"):
        EgoText(num_tokens=4)


@pytest.mark.parametrize("vision", ["bev", "blind"])
def test_prefix_holds_the_lines_token_embeddings(tiny_world, vision):
    """The prefix grows by num_tokens; those rows, just before the ego token, are the LLM's input
    embeddings of the line written from each sample's own ego status."""
    cfg = Config.fromfile(f"{REPO}/configs/bev_vlm_tiny.py")
    if vision == "blind":
        cfg.model.vision = "blind"
    ds = DATASETS.build(dict(type="BEVDriveDataset", ann_file=f"{tiny_world}/infos/bevlm_infos_val.pkl",
                             data_root=f"{tiny_world}/", pipeline=cfg.pipeline, queue_length=1, qa_mode="frame"))
    plain = copy.deepcopy(cfg.model.to_dict())
    with_text = dict(plain, ego_text=dict(num_tokens=160))
    torch.manual_seed(0)
    model = MODELS.build(with_text).eval()
    torch.manual_seed(0)
    base = MODELS.build(plain).eval()
    data = model.data_preprocessor(pseudo_collate([ds[0], ds[3]]), False)
    with torch.no_grad():
        prefix = model(**copy.deepcopy(data), mode="tensor")
        ref = base(**copy.deepcopy(data), mode="tensor")
    n_txt = 160
    assert prefix.shape[1] == ref.shape[1] + n_txt
    n_tail = 1 + (model.traj_head.num_tokens if model.traj_head is not None else 0)  # ego token + queries
    start = prefix.shape[1] - n_tail - n_txt
    samples = data["data_samples"]
    for i, s in enumerate(samples):
        line = EgoText().describe(EgoText().quantities(s.ego_status))
        ids = EgoText(num_tokens=n_txt).token_ids(line, model.llm.tokenizer)
        emb = model.llm.lm.get_input_embeddings()(torch.tensor(ids))
        torch.testing.assert_close(prefix[i, start:start + n_txt], emb.to(prefix.dtype))
    # the rest of the prefix is the model without the line
    torch.testing.assert_close(prefix[:, :start], ref[:, :start])
    torch.testing.assert_close(prefix[:, start + n_txt:], ref[:, start:])


def test_training_step_and_lossless_decoding_with_the_line(tiny_world):
    """Finite losses with the line in the prefix; at test time every question is answered, with the same
    answers under the lossless decoding stack as under plain greedy decoding."""
    cfg = Config.fromfile(f"{REPO}/configs/bev_vlm_tiny.py")
    cfg.model.ego_text = dict(num_tokens=160)
    ds = DATASETS.build(dict(type="BEVDriveDataset", ann_file=f"{tiny_world}/infos/bevlm_infos_train.pkl",
                             data_root=f"{tiny_world}/", pipeline=cfg.pipeline, queue_length=2, qa_per_sample=3))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model.to_dict()).train()
    data = model.data_preprocessor(pseudo_collate([ds[0], ds[1]]), True)
    losses = model(**data, mode="loss")
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    val = DATASETS.build(dict(type="BEVDriveDataset", ann_file=f"{tiny_world}/infos/bevlm_infos_val.pkl",
                              data_root=f"{tiny_world}/", pipeline=cfg.pipeline, queue_length=1, qa_mode="frame"))
    pdata = model.data_preprocessor(pseudo_collate([val[0]]), False)
    model.set_test_cfg(dict(stream_temporal=False))
    with torch.no_grad():
        greedy = model(**copy.deepcopy(pdata), mode="predict")[0].pred_answers
    model.set_test_cfg(dict(share_prompt_cache=True,
                            speculative=dict(skip_layers=[], use_layer_skip=False, draft_len=4, ngram_min_n=2,
                                             use_ngram=True, batched=True)))
    model.reset_test_state()
    with torch.no_grad():
        fast = model(**copy.deepcopy(pdata), mode="predict")[0].pred_answers
    assert set(greedy) == {qa.index for qa in pdata["data_samples"][0].qa}
    assert fast == greedy
