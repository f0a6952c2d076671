"""Packed training batches: prompt layout, labels, 4D mask and position ids."""
import pytest
import torch

from bevlm.models.llm import HFCausalLM
from bevlm.models.llm.packing import IGNORE_INDEX
from bevlm.models.llm.prompt import encode
from bevlm.testing import TINY_LLAMA_CONFIG

torch.set_num_threads(1)

P = 5
BLOCKS = [("What are the important objects in the current scene?", "There is a white sedan to the front."),
          ("What is the moving status of object <c1,CAM_FRONT,712.5,510.0>?", "Going ahead."),
          ("Predict the behavior of the ego vehicle.", "The ego vehicle is going straight.")]


def _tiny(attn: str = "sdpa") -> HFCausalLM:
    torch.manual_seed(0)
    return HFCausalLM(tiny_config=TINY_LLAMA_CONFIG, attn_implementation=attn).eval()


@pytest.fixture(scope="module")
def llm():
    return _tiny()


def test_layout_comes_from_chat_template(llm):
    layout = llm.layout
    assert layout.from_chat_template
    assert layout.prefix_text.endswith("<|im_start|>user\n")
    assert "You are a driving assistant." in layout.prefix_text
    assert layout.query_suffix == "<|im_end|>\n<|im_start|>assistant\n"
    assert layout.answer_suffix == "<|im_end|>"
    assert llm.prompt.stop_ids == {llm.tokenizer.eos_token_id}


def test_plain_layout_without_template():
    llm = _tiny()
    llm.tokenizer.chat_template = None
    from bevlm.models.llm.prompt import chat_layout
    layout = chat_layout(llm.tokenizer, "SYS")
    assert not layout.from_chat_template
    assert layout.prefix_text == "System: SYS\nUser: "
    assert layout.answer_suffix == llm.tokenizer.eos_token


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_blocks_equal_blocks_alone(attn):
    llm = _tiny(attn)
    torch.manual_seed(1)
    prefix = torch.randn(2, P, llm.hidden_size)
    # Row 0 packs 3 blocks; row 1 is shorter and gets right padding.
    packed = llm.build_batch([BLOCKS, BLOCKS[1:2]], num_prefix=P)
    with torch.no_grad():
        logits, targets = llm.answer_logits(packed, prefix)
        loss = llm.forward_train(packed, prefix)["loss_lm"]
        alone_logits, alone_targets, alone_losses = [], [], []
        for row, blocks in ((0, BLOCKS), (1, BLOCKS[1:2])):
            for block in blocks:
                single = llm.build_batch([[block]], num_prefix=P)
                lg, tg = llm.answer_logits(single, prefix[row:row + 1])
                alone_logits.append(lg)
                alone_targets.append(tg)
                alone_losses.append(llm.forward_train(single, prefix[row:row + 1])["loss_lm"] * len(tg))
    assert torch.equal(targets, torch.cat(alone_targets))
    torch.testing.assert_close(logits, torch.cat(alone_logits), atol=1e-5, rtol=0)
    torch.testing.assert_close(loss, torch.stack(alone_losses).sum() / len(targets), atol=1e-5, rtol=0)


def test_single_block_matches_plain_causal_forward(llm):
    """One block alone through the custom mask == HF's own causal path."""
    torch.manual_seed(2)
    prefix = torch.randn(1, P, llm.hidden_size)
    batch = llm.build_batch([[BLOCKS[0]]], num_prefix=P)
    with torch.no_grad():
        logits, targets = llm.answer_logits(batch, prefix)
        embeds = llm._splice(batch["input_ids"], batch["prefix_slice"], prefix)
        ref = llm.lm(inputs_embeds=embeds).logits[0, :-1]  # [L-1, V]
    keep = batch["labels"][0, 1:] != IGNORE_INDEX
    torch.testing.assert_close(logits, ref[keep], atol=1e-5, rtol=0)


def test_labels_exactly_the_answers(llm):
    batch = llm.build_batch([BLOCKS, BLOCKS[:1]], num_prefix=P)
    labels, ids = batch["labels"], batch["input_ids"]
    keep = labels != IGNORE_INDEX
    assert torch.equal(labels[keep], ids[keep])  # labels are the tokens themselves (HF shift convention)
    start, end = batch["prefix_slice"]
    assert end - start == P and end == batch["prefix_len"] == llm.prefix_text_len + P
    assert not keep[:, :end].any()
    eos = llm.tokenizer.eos_token_id
    for row, blocks in enumerate((BLOCKS, BLOCKS[:1])):
        expected = []
        for _, answer in blocks:
            expected += encode(llm.tokenizer, answer) + [eos]
        assert labels[row][keep[row]].tolist() == expected
        # every supervised run is preceded by the assistant-turn opening
        runs = torch.nonzero(keep[row, 1:] & ~keep[row, :-1]).flatten() + 1
        assert len(runs) == len(blocks)
        suffix = list(llm.prompt.query_suffix_ids)
        for r in runs.tolist():
            assert ids[row, r - len(suffix):r].tolist() == suffix


def test_mask_and_positions_isolate_blocks(llm):
    batch = llm.build_batch([BLOCKS], num_prefix=P)
    mask = batch["attention_mask_4d"][0, 0]
    pos = batch["position_ids"][0]
    n0 = batch["prefix_len"]
    starts = torch.nonzero(pos == n0).flatten().tolist()
    assert len(starts) == 3 and starts[0] == n0
    ends = starts[1:] + [mask.shape[0]]
    for s, e in zip(starts, ends):
        assert mask[s:e, :n0].all()  # sees the whole prefix
        assert torch.equal(mask[s:e, s:e], torch.ones(e - s, e - s, dtype=torch.bool).tril())
        assert not mask[s:e, n0:s].any() and not mask[s:e, e:].any()  # and no other block
        assert torch.equal(pos[s:e], torch.arange(n0, n0 + e - s))
    assert torch.equal(mask[:n0, :n0], torch.ones(n0, n0, dtype=torch.bool).tril())
    assert not mask[:n0, n0:].any()


def test_forward_train_gradients_and_hidden_prefix():
    llm = _tiny()
    for p in llm.parameters():
        p.requires_grad_(False)
    torch.manual_seed(3)
    prefix = torch.randn(2, P, llm.hidden_size, requires_grad=True)
    batch = llm.build_batch([BLOCKS[:2], BLOCKS[2:]], num_prefix=P)
    out = llm.forward_train(batch, prefix)
    assert out["hidden_prefix"].shape == (2, P, llm.hidden_size)
    assert out["loss_lm"].ndim == 0 and torch.isfinite(out["loss_lm"])
    out["loss_lm"].backward()
    assert prefix.grad is not None and prefix.grad.abs().sum() > 0


def test_bad_prefix_shape_is_a_clear_error(llm):
    batch = llm.build_batch([BLOCKS[:1]], num_prefix=P)
    with pytest.raises(ValueError, match="num_prefix"):
        llm.forward_train(batch, torch.zeros(1, P + 1, llm.hidden_size))



def test_gradient_checkpointing_same_loss_and_grads():
    torch.manual_seed(4)
    prefix = torch.randn(1, P, 64)
    batch = None
    results = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        llm = HFCausalLM(tiny_config=TINY_LLAMA_CONFIG, freeze_base=False, gradient_checkpointing=ckpt).train()
        assert all(layer.gradient_checkpointing == ckpt for layer in llm.lm.model.layers)
        batch = batch or llm.build_batch([BLOCKS], num_prefix=P)
        loss = llm.forward_train(batch, prefix)["loss_lm"]
        loss.backward()
        results.append((loss.detach(), llm.lm.model.layers[0].self_attn.q_proj.weight.grad.clone()))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-6, rtol=0)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-6, rtol=1e-5)
    assert results[0][1].abs().sum() > 0


def test_build_from_registry_config():
    from mmengine.config import ConfigDict

    from bevlm.registry import MODELS
    cfg = ConfigDict(type="HFCausalLM", tiny_config=dict(TINY_LLAMA_CONFIG), system_prompt="SYS",
                     lora=dict(r=2, alpha=4, dropout=0.0, target_modules=["q_proj", "v_proj"]))
    llm = MODELS.build(cfg)
    assert isinstance(llm, HFCausalLM) and llm.adapter_names == ["default"]
    assert "SYS" in llm.layout.prefix_text
    with pytest.raises(TypeError):
        MODELS.build(dict(type="HFCausalLM", tiny_config=dict(TINY_LLAMA_CONFIG), lora_rank=4))


def test_missing_pretrained_is_a_clear_error():
    with pytest.raises(OSError, match="nothing is downloaded"):
        HFCausalLM("/nonexistent/model-dir")
    with pytest.raises(ValueError, match="torch_dtype"):
        HFCausalLM(tiny_config=TINY_LLAMA_CONFIG, torch_dtype="fp32")
