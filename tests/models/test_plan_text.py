"""The trajectory head's plan as text after the prefix (bevlm.models.heads.plan_text): hand-computed
lines, a prefix cache extended by tokens equals the prefill of the longer prefix, and the model places
the line of its own plan after the trajectory queries in both phases."""
import copy
import math

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from bevlm.models.heads.plan_text import PlanText
from bevlm.models.llm.generation import greedy_from_cache
from bevlm.models.llm.query_slots import extend_prefix
from bevlm.models.qa import answer_frame, is_multiple_choice
from bevlm.registry import DATASETS, MODELS
from tests.conftest import REPO

init_default_scope("bevlm")
torch.set_num_threads(1)
N_TXT = 160  # tokens of the line in the tiny models (the tiny tokenizer spends more tokens per word)


def _straight(speeds, step=0.5):
    return torch.tensor([[float(x), 0.0] for x in np.cumsum(np.asarray(speeds, float) * step)])


def test_lines_hand_computed():
    pt = PlanText()
    # 3 m per 0.5-s step, straight: mean 6 m/s (normal), 0 deg, 6 m/s at 3 s as now: keep
    assert pt.describe(6.0, _straight([6.0] * 6)) == (
        "Plan: The ego vehicle is going straight. The ego vehicle is driving with normal speed. "
        "Safe actions: Keep going at the same speed, decelerate gradually without braking.")
    # braking: the speed read at 3 s is 0.4 + (0.4 - 1) / 2 = 0.1 m/s (< 0.5: stops), mean 2.52 m/s: slowly
    assert pt.describe(5.5, _straight([5, 4, 3, 2, 1, 0.4])) == (
        "Plan: The ego vehicle is going straight. The ego vehicle is driving slowly. "
        "Safe actions: Brake gently to a stop, decelerate gradually without braking.")
    # a left curve at 5 m/s turning 6 deg per 0.5 s: 36 deg left at 3 s (> 20: steering)
    pts, heading, pos = [], 0.0, np.zeros(2)
    for _ in range(6):
        chord = heading + math.radians(3.0)
        pos = pos + 2.5 * np.array([math.cos(chord), math.sin(chord)])
        pts.append(pos.tolist())
        heading += math.radians(6.0)
    assert PlanText(safe_actions=False).describe(5.0, pts) == (
        "Plan: The ego vehicle is steering to the left. The ego vehicle is driving with normal speed.")
    # the current speed is read from the ego status [vx, vy, ...]
    assert PlanText.speed_of(torch.tensor([3.0, 4.0, 0.0, 0.0, 0.0])) == pytest.approx(5.0)


def test_fixed_length_and_bad_settings():
    class Tok:  # one id per character
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) for c in text]}

    line = PlanText().describe(6.0, _straight([6.0] * 6))
    assert PlanText(num_tokens=len(line) + 2).token_ids(line, Tok()) == [ord(c) for c in line] + [ord("\n")] * 2
    with pytest.raises(ValueError, match="raise model.plan_text.num_tokens"):
        PlanText(num_tokens=len(line) - 1).token_ids(line, Tok())
    with pytest.raises(ValueError, match="num_tokens must be >= 8"):
        PlanText(num_tokens=4)
    with pytest.raises(ValueError, match=r"plans must be \[B=1, H, 2\]"):
        PlanText().lines([object()], torch.zeros(2, 6, 2))


def _cfg(options: dict | None = None, **model):
    cfg = Config.fromfile(f"{REPO}/configs/bev_vlm_tiny.py")
    cfg.model.update(model)
    cfg.merge_from_dict(options or {})
    return cfg


def _build(cfg):
    torch.manual_seed(0)
    model = MODELS.build(cfg.model.to_dict())
    gen = torch.Generator().manual_seed(1)  # random LoRA B: the tiny LLM then writes non-empty answers
    with torch.no_grad():
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model


def _val(world, cfg, **kw):
    return DATASETS.build(dict(type="BEVDriveDataset", ann_file=f"{world}/infos/bevlm_infos_val.pkl",
                               data_root=f"{world}/", pipeline=cfg.pipeline, queue_length=1, qa_mode="frame", **kw))


@pytest.mark.parametrize("share", [False, True])
def test_extended_cache_equals_the_prefill_of_the_longer_prefix(share):
    cfg = _cfg()
    model = _build(cfg).eval()
    llm = model.llm
    llm.share_text_prefix = share
    torch.manual_seed(3)
    prefix = torch.randn(1, 7, llm.hidden_size) * 0.1
    ids = llm.tokenizer("Plan: keep going", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        base = llm.prefill(prefix)
        ext = extend_prefix(llm, base, ids)
        full = llm.prefill(torch.cat([prefix, llm.embed_tokens(torch.tensor([ids]))], dim=1))
        assert ext.prefix_len == full.prefix_len == base.prefix_len + len(ids)
        assert base.hidden_prefix.shape[1] == 7  # the original cache is not mutated
        assert base.past_key_values.get_seq_length() == base.prefix_len
        torch.testing.assert_close(ext.hidden_prefix, full.hidden_prefix, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ext.prefix_embeds, full.prefix_embeds)
        for q in ("What is ahead?", "Predict the behavior of the ego vehicle."):
            assert greedy_from_cache(llm.lm, ext, llm._query_ids(q), 6, llm.prompt.stop_ids) == \
                greedy_from_cache(llm.lm, full, llm._query_ids(q), 6, llm.prompt.stop_ids)
    with pytest.raises(ValueError, match="no token ids"):
        extend_prefix(llm, base, [])


@pytest.mark.parametrize("head", [{}, {"model.traj_head.num_commands": 3, "model.traj_head.command_input": True}],
                         ids=["plain-head", "command-input"])
def test_prefix_holds_the_line_of_the_heads_own_plan(tiny_world, head):
    """The prefix is the model's without the line, then the line written from the plan the head makes
    from that prefix's query states; the trajectory predicted is the one of the same model without
    the line (the queries precede it), and the line is what the LLM saw before the questions. With
    the command as a head input the line is written from the plan for the frame's command."""
    cfg = _cfg(head, plan_text=dict(num_tokens=N_TXT))
    model = _build(cfg).eval()
    plain = _build(_cfg(head)).eval()
    ds = _val(tiny_world, cfg)
    data = model.data_preprocessor(pseudo_collate([ds[0], ds[3]]), False)
    with torch.no_grad():
        seen = copy.deepcopy(data)
        prefix = model(**seen, mode="tensor")
        ref = plain(**copy.deepcopy(data), mode="tensor")
        k = model.traj_head.num_tokens
        queries = model.llm.prefix_hidden(ref)[:, -k:]
        samples = seen["data_samples"]
        plans = model.traj_head(queries, model._traj_ego(samples), model._traj_command(samples))
    assert prefix.shape[1] == ref.shape[1] + N_TXT
    torch.testing.assert_close(prefix[:, :ref.shape[1]], ref)
    for i, s in enumerate(samples):
        line = PlanText().describe(PlanText.speed_of(s.ego_status), plans[i])
        assert line.startswith("Plan: The ego vehicle is ") and s.plan_text == line
        ids = PlanText(num_tokens=N_TXT).token_ids(line, model.llm.tokenizer)
        torch.testing.assert_close(prefix[i, ref.shape[1]:], model.llm.embed_tokens(torch.tensor(ids)))
    # predict: the same plan as the model without the line, every question answered after the line
    model.set_test_cfg(dict(stream_temporal=False))
    plain.set_test_cfg(dict(stream_temporal=False))
    one = model.data_preprocessor(pseudo_collate([ds[0]]), False)
    with torch.no_grad():
        out = model(**copy.deepcopy(one), mode="predict")[0]
        base = plain(**copy.deepcopy(one), mode="predict")[0]
    torch.testing.assert_close(out.pred_traj, base.pred_traj)
    assert out.plan_text == PlanText().describe(PlanText.speed_of(out.ego_status), out.pred_traj)
    assert set(out.pred_answers) == {qa.index for qa in one["data_samples"][0].qa}
    assert out.efficiency["prefix_tokens"] == base.efficiency["prefix_tokens"] + N_TXT
    # the answers are those of a prefill of the prefix with the line (what training shows the LLM)
    with torch.no_grad():
        full = model.llm.prefill(model(**copy.deepcopy(one), mode="tensor"))
    decoded = [q for q in one["data_samples"][0].qa if not is_multiple_choice(q)]
    tc = model.test_cfg
    res = answer_frame(model.llm, full, decoded, model.qa_policy, tc.max_new_tokens, tc.family_max_new_tokens,
                       decoder=model.frame_decoder)
    assert decoded and res.answers == {q.index: out.pred_answers[q.index] for q in decoded}


def test_training_step_reads_the_queries_before_the_line(tiny_world):
    cfg = _cfg(plan_text=dict(num_tokens=N_TXT))
    model = _build(cfg).train()
    ds = DATASETS.build(dict(type="BEVDriveDataset", ann_file=f"{tiny_world}/infos/bevlm_infos_train.pkl",
                             data_root=f"{tiny_world}/", pipeline=cfg.pipeline, queue_length=2, qa_per_sample=3))
    data = model.data_preprocessor(pseudo_collate([ds[0], ds[1]]), True)
    losses = model(**data, mode="loss")
    assert all(torch.isfinite(v) for v in losses.values())
    loss = sum(v for k, v in losses.items() if "loss" in k)
    loss.backward()
    assert model.traj_head.queries.grad is not None and model.traj_head.queries.grad.abs().sum() > 0
    assert all(isinstance(s.plan_text, str) for s in data["data_samples"])
    # the states the head reads in the training forward are the queries', not the line's
    hidden = torch.arange(2 * 10 * 1, dtype=torch.float32).reshape(2, 10, 1).expand(-1, -1, 3)
    k = model.traj_head.num_tokens
    big = torch.zeros(2, k + N_TXT + 4, 3)
    big[:, 4:4 + k] = hidden[:, :k]
    torch.testing.assert_close(model._query_states(big), hidden[:, :k])


def test_lossless_decoding_gives_the_greedy_answers_with_the_line(tiny_world):
    cfg = _cfg(plan_text=dict(num_tokens=N_TXT))
    model = _build(cfg).eval()
    pdata = model.data_preprocessor(pseudo_collate([_val(tiny_world, cfg)[0]]), False)
    model.set_test_cfg(dict(stream_temporal=False))
    with torch.no_grad():
        greedy = model(**copy.deepcopy(pdata), mode="predict")[0].pred_answers
    model.set_test_cfg(dict(share_prompt_cache=True,
                            speculative=dict(skip_layers=[], use_layer_skip=False, draft_len=4, ngram_min_n=2,
                                             use_ngram=True, batched=True)))
    model.reset_test_state()
    with torch.no_grad():
        fast = model(**copy.deepcopy(pdata), mode="predict")[0].pred_answers
    assert fast == greedy


@pytest.mark.parametrize("overrides", [dict(traj_placement="after_qa"), dict(traj_source="text")])
def test_refused_without_a_prefix_head(overrides):
    cfg = _cfg(plan_text=dict(num_tokens=N_TXT), **overrides)
    with pytest.raises(ValueError, match="plan_text writes the trajectory head's plan"):
        MODELS.build(cfg.model.to_dict())


def test_split_forward_equals_the_forward_with_the_inserted_slots():
    """``forward_train(insert=...)``: the last prefix slots made from the first slots' states in the
    same forward (one pass on the KV cache of the other) give the hidden states, loss and gradients
    of one pass with those embeddings in place; the checkpointing path (two passes) gives the same."""
    from bevlm.models.llm import HFCausalLM
    from bevlm.testing import TINY_LLAMA_CONFIG

    torch.manual_seed(0)
    llm = HFCausalLM(tiny_config=TINY_LLAMA_CONFIG, lora=dict(r=4, alpha=8, dropout=0.0)).train()
    blocks = [[("What is the moving status of object <c1,CAM_FRONT,800.0,500.0>?", "Going ahead."),
               ("Predict the behavior of the ego vehicle.", "The ego vehicle is going straight.")],
              [("In this scenario, what are safe actions to take for the ego vehicle?", "Brake gently to a stop.")]]
    p0, n = 6, 3
    batch = llm.build_batch(blocks, num_prefix=p0 + n)
    head = (torch.randn(2, p0, llm.hidden_size) * 0.1).requires_grad_(True)
    proj = torch.randn(llm.hidden_size, n * llm.hidden_size) * 0.05

    def insert(states):  # a function of the last state, without gradient (as a line of text is)
        with torch.no_grad():
            return (states[:, -1] @ proj).reshape(-1, n, llm.hidden_size)

    def run(checkpointing: bool, split: bool):
        llm.gradient_checkpointing = checkpointing  # the path only (no layer is recomputed here)
        llm.zero_grad(set_to_none=True)
        head.grad = None
        if split:
            out = llm.forward_train(batch, head, insert=insert)
        else:  # the reference: the states of the first slots alone, then one pass with the slots in place
            with torch.no_grad():
                tail = insert(llm.prefix_hidden(head))
            out = llm.forward_train(batch, torch.cat([head, tail], dim=1))
        out["loss_lm"].backward()
        grads = [p.grad.clone() for p in llm.parameters() if p.grad is not None]
        return out, grads, head.grad.clone()

    ref, ref_grads, ref_head = run(False, split=False)
    for checkpointing in (False, True):
        out, grads, head_grad = run(checkpointing, split=True)
        assert out["hidden_prefix"].shape == (2, p0 + n, llm.hidden_size)
        torch.testing.assert_close(out["hidden_prefix"], ref["hidden_prefix"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out["loss_lm"], ref["loss_lm"], rtol=1e-5, atol=1e-6)
        assert len(grads) == len(ref_grads) > 0
        for g, r in zip(grads, ref_grads):
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(head_grad, ref_head, rtol=1e-4, atol=1e-6)
    llm.gradient_checkpointing = False
    with torch.no_grad():  # the inserted slots matter: zeros there give another loss
        zeros = llm.forward_train(batch, torch.cat([head, torch.zeros(2, n, llm.hidden_size)], dim=1))["loss_lm"]
    assert abs(float(zeros) - float(ref["loss_lm"].detach())) > 1e-4
    with pytest.raises(ValueError, match="insert returned"):
        llm.forward_train(batch, head, insert=lambda states: states[:, :1])
    with pytest.raises(ValueError, match="the inserted ones must fill the rest"):
        llm.forward_train(batch, torch.zeros(2, p0 + n, llm.hidden_size), insert=insert)


def test_training_writes_the_line_of_the_same_forward(tiny_world):
    """BEVVLM.loss with the plan line: the line comes from the query states of the training forward
    itself; the losses and gradients equal those of the two-pass path (a pass without gradient for
    the plan, then the whole prefix with the line), and the lines written are the same."""
    cfg = _cfg(plan_text=dict(num_tokens=N_TXT))
    model = _build(cfg).train()
    ds = DATASETS.build(dict(type="BEVDriveDataset", ann_file=f"{tiny_world}/infos/bevlm_infos_train.pkl",
                             data_root=f"{tiny_world}/", pipeline=cfg.pipeline, queue_length=2, qa_per_sample=3))
    batch = pseudo_collate([ds[0], ds[1]])

    def step(two_pass: bool):
        model.llm.gradient_checkpointing = two_pass  # the forward_train path only
        model.zero_grad(set_to_none=True)
        data = model.data_preprocessor(copy.deepcopy(batch), True)
        losses = model(**data, mode="loss")
        sum(v for k, v in losses.items() if "loss" in k).backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        return losses, grads, [s.plan_text for s in data["data_samples"]]

    split, split_grads, split_lines = step(False)
    two, two_grads, two_lines = step(True)
    model.llm.gradient_checkpointing = False
    assert split_lines == two_lines and all(line.startswith("Plan: ") for line in split_lines)
    for key in ("loss_lm", "loss_traj"):
        torch.testing.assert_close(split[key], two[key], rtol=1e-5, atol=1e-6)
    assert split_grads.keys() == two_grads.keys() and "traj_head.queries" in split_grads
    for key, g in split_grads.items():
        torch.testing.assert_close(g, two_grads[key], rtol=1e-3, atol=1e-5, msg=key)
