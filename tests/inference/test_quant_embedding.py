"""int4 embedding table + tied LM head: exact lookups, error bound, bytes, shared codes, save/load."""
import pytest
import torch
import torch.nn.functional as F

from bevlm.inference.quantization import (QuantEmbedding4, QuantLinear4, dequantize, load_quantized, module_bytes,
                                          quantize_model, quantize_rtn, save_quantized)
from bevlm.models.llm import HFCausalLM
from bevlm.testing import TINY_LLAMA_CONFIG

torch.set_num_threads(1)

CONFIG = dict(TINY_LLAMA_CONFIG, hidden_size=128, intermediate_size=256)
GROUP = 64
QUESTION = "What are the important objects in the current scene?"


def _llm(seed: int = 0, **overrides) -> HFCausalLM:
    torch.manual_seed(seed)
    return HFCausalLM(tiny_config=dict(CONFIG, **overrides)).eval()


def _ids() -> torch.Tensor:
    return torch.randint(0, CONFIG["vocab_size"], (2, 24), generator=torch.Generator().manual_seed(7))


def _logits(llm: HFCausalLM) -> torch.Tensor:
    with torch.no_grad():
        return llm.lm(input_ids=_ids()).logits


def test_lookup_is_the_dequantised_row_and_within_half_a_step():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, 128)
    q_emb = QuantEmbedding4.from_embedding(emb, GROUP)
    ids = torch.tensor([[0, 7, 7, 49], [3, 1, 2, 48]])
    table = q_emb.dequantized_weight()                                       # [V, D]
    assert torch.equal(q_emb(ids), table[ids])                               # gathered rows, same numbers
    q, scales, zeros = quantize_rtn(emb.weight.detach(), GROUP)
    assert torch.equal(table, dequantize(q, scales, zeros, GROUP))
    err = (table - emb.weight.detach()).abs().reshape(50, -1, GROUP)         # [V, G, g]
    assert bool((err <= scales.float()[..., None] / 2 + 1e-6).all())
    assert q_emb.weight_bytes() == 50 * 64 + 2 * 2 * 50 * 2                  # codes + fp16 scales and zeros
    head = q_emb.tied_head(kernel="dequant")
    assert head.qweight is q_emb.qweight and head.scales is q_emb.scales and head.zeros is q_emb.zeros
    x = torch.randn(3, 128)
    torch.testing.assert_close(head(x), F.linear(x, table), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="group_size"):
        QuantEmbedding4(10, 100, group_size=64)


@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_tied_model_stores_the_table_once_and_shrinks_below_0_3x(method):
    llm = _llm()
    fp16_bytes = sum(2 * p.numel() for p in llm.lm.parameters())  # tied weight counted once
    calib = None
    if method == "gptq":
        def calib(module):
            llm.generate_ids(llm.prefill(torch.randn(1, 5, 128)), QUESTION, 4)
    report = quantize_model(llm, dict(method=method, group_size=GROUP, kernel="cached", embeddings=True),
                            calib_fn=calib)
    emb, head = llm.lm.get_input_embeddings(), llm.lm.get_output_embeddings()
    assert isinstance(emb, QuantEmbedding4) and isinstance(head, QuantLinear4)
    assert head.qweight.data_ptr() == emb.qweight.data_ptr()
    assert {"model.model.embed_tokens", "model.lm_head"} <= set(report.layers)
    assert report.linear_bytes_after <= 0.3 * report.linear_bytes_fp16, report.table()
    assert module_bytes(llm) == report.module_bytes_after <= 0.3 * fp16_bytes, (module_bytes(llm), fp16_bytes)
    cache = llm.prefill(torch.randn(1, 5, 128, generator=torch.Generator().manual_seed(1)))
    ids = llm.generate_ids(cache, QUESTION, 8)
    assert ids == llm.generate_ids_no_cache(torch.randn(1, 5, 128, generator=torch.Generator().manual_seed(1)),
                                            QUESTION, 8)
    assert llm.generate_ids_batch(cache, [QUESTION, "Yes?"], 8)[0] == ids


def test_untied_head_is_quantised_as_its_own_linear():
    llm = _llm(tie_word_embeddings=False)
    report = quantize_model(llm, dict(method="rtn", group_size=GROUP, kernel="dequant", embeddings=True))
    emb, head = llm.lm.get_input_embeddings(), llm.lm.get_output_embeddings()
    assert isinstance(emb, QuantEmbedding4) and isinstance(head, QuantLinear4)
    assert head.qweight.data_ptr() != emb.qweight.data_ptr()
    assert report.linear_bytes_after == sum(llm.get_submodule(n).weight_bytes() for n in report.layers)


def test_save_load_round_trip_keeps_the_tie(tmp_path):
    llm = _llm()
    quantize_model(llm, dict(method="rtn", group_size=GROUP, kernel="dequant", embeddings=True))
    expected = _logits(llm)
    path = str(tmp_path / "q.safetensors")
    config = save_quantized(llm, path)
    assert set(config["embeddings"]) == {"model.model.embed_tokens"}
    assert config["tied_heads"] == {"model.lm_head": "model.model.embed_tokens"}
    restored = load_quantized(_llm(seed=5), path, kernel="dequant")
    assert torch.equal(_logits(restored), expected)
    emb, head = restored.lm.get_input_embeddings(), restored.lm.get_output_embeddings()
    assert isinstance(emb, QuantEmbedding4) and head.qweight.data_ptr() == emb.qweight.data_ptr()


def test_embeddings_need_an_int4_method():
    with pytest.raises(ValueError, match="embeddings=True"):
        quantize_model(_llm(), dict(method="int8_dynamic", embeddings=True))


def test_gptq_quantises_the_tied_head_on_its_input_hessian():
    import copy

    llm = _llm()
    prefixes = [torch.randn(1, 12, 128, generator=torch.Generator().manual_seed(10 + k)) for k in range(6)]

    def calib(module):
        for p in prefixes:
            llm.generate_ids(llm.prefill(p), QUESTION, 6)

    # the head's calibration inputs, from the float model
    rows = []
    head = llm.lm.get_output_embeddings()
    handle = head.register_forward_pre_hook(lambda _m, inp: rows.append(inp[0].reshape(-1, 128).detach()))
    with torch.no_grad():
        calib(llm)
    handle.remove()
    x = torch.cat(rows)
    w = head.weight.detach().clone()
    rtn = copy.deepcopy(llm)
    quantize_model(rtn, dict(method="rtn", group_size=GROUP, kernel="dequant", embeddings=True))
    report = quantize_model(llm, dict(method="gptq", group_size=GROUP, kernel="dequant", embeddings=True),
                            calib_fn=calib)
    assert report.calib_runs == llm.num_layers + 1  # the blocks, then the head
    emb = llm.lm.get_input_embeddings()
    assert emb.method == "gptq" and llm.lm.get_output_embeddings().qweight.data_ptr() == emb.qweight.data_ptr()

    def head_err(model):
        return float((x @ model.lm.get_input_embeddings().dequantized_weight().t() - x @ w.t()).pow(2).mean())

    assert head_err(llm) < head_err(rtn), (head_err(llm), head_err(rtn))


def test_int8_table_exact_on_a_q8_0_grid_and_within_half_a_step():
    from bevlm.inference.quantization import QuantEmbedding8

    gen = torch.Generator().manual_seed(2)
    d = (torch.rand(40, 4, 1, generator=gen) * 0.01 + 1e-4).half().float()  # fp16 scale per 32 columns
    q = torch.randint(-127, 128, (40, 4, 32), generator=gen).float()
    q[..., 0] = 127  # the group's max-abs element sets the scale
    grid = (q * d).reshape(40, 128)
    table = QuantEmbedding8.from_embedding(torch.nn.Embedding.from_pretrained(grid), group_size=32)
    assert table.qweight.dtype == torch.int8 and torch.equal(table.dequantized_weight(), grid)
    ids = torch.tensor([[3, 0, 39]])
    assert torch.equal(table(ids), grid[ids])
    emb = torch.nn.Embedding(40, 128)
    t8 = QuantEmbedding8.from_embedding(emb, group_size=32)
    err = (t8.dequantized_weight() - emb.weight).abs().reshape(40, 4, 32)
    assert bool((err <= t8.scales.float()[..., None] / 2 * (1 + 1e-6)).all())
    assert t8.weight_bytes() == 40 * 128 + 2 * 40 * 4


def test_int8_table_with_int4_linears_ties_the_head_and_round_trips(tmp_path):
    from bevlm.inference.quantization import QuantEmbedding8
    from bevlm.inference.quantization.quant_embedding8 import TiedInt8Head

    llm = _llm()
    fp = _logits(llm)
    report = quantize_model(llm, dict(method="rtn", group_size=32, kernel="dequant", embeddings="int8"))
    emb, head = llm.lm.get_input_embeddings(), llm.lm.get_output_embeddings()
    assert isinstance(emb, QuantEmbedding8) and isinstance(head, TiedInt8Head)
    assert head.qweight.data_ptr() == emb.qweight.data_ptr()
    assert module_bytes(llm) == report.module_bytes_after
    expected = _logits(llm)
    assert float((expected - fp).abs().max()) < 0.1 * float(fp.abs().max())
    path = str(tmp_path / "q8.safetensors")
    config = save_quantized(llm, path)
    assert config["embeddings"]["model.model.embed_tokens"]["bits"] == 8
    assert config["tied_heads"] == {"model.lm_head": "model.model.embed_tokens"}
    restored = load_quantized(_llm(seed=5), path, kernel="dequant")
    assert torch.equal(_logits(restored), expected)
    with pytest.raises(ValueError, match="embeddings="):
        quantize_model(_llm(), dict(method="rtn", group_size=32, embeddings="int2"))


def test_int8_tied_head_dequant_kernel_keeps_no_float_copy():
    """``kernel='dequant'``: the int8 table's tied head dequantises per call (same logits as the cached
    copy) and the resident / streamed byte counts of the benchmark see the difference."""
    from bevlm.inference.quantization import kernels as quant_kernels
    from bevlm.inference.variants import llm_read_bytes, llm_resident_bytes, llm_weight_bytes

    logits, figures = {}, {}
    for kernel in ("cached", "dequant"):
        quant_kernels.clear_workspace()
        llm = _llm()
        quantize_model(llm, dict(method="rtn", group_size=32, kernel=kernel, embeddings="int8"))
        logits[kernel] = _logits(llm)
        holder = torch.nn.Module()
        holder.llm = llm
        head = llm.lm.get_output_embeddings()
        assert head.kernel == kernel
        figures[kernel] = (llm_weight_bytes(holder), llm_resident_bytes(holder) - quant_kernels.workspace_bytes(),
                           llm_read_bytes(holder), head.runtime_bytes() - head.weight_bytes())
        if kernel == "dequant":  # the shared workspace holds one row block of the table, not the table
            assert 0 < quant_kernels.workspace_bytes() <= quant_kernels.WORKSPACE_ELEMENTS * 5
    assert torch.equal(logits["cached"], logits["dequant"])
    stored, resident, read, head_copy = figures["dequant"]
    assert resident == stored == read and head_copy == 0  # nothing beyond the codes and the workspace
    c_stored, c_resident, c_read, c_head_copy = figures["cached"]
    assert c_stored == stored and c_head_copy > 0 and c_resident >= stored + c_head_copy
    assert c_read > read


#: Calibration text with a known frequency per token: 5 (12 times), 7 (6 times), 100..129 (once each).
CALIB_IDS = torch.tensor([[5] * 12 + [7] * 6 + list(range(100, 130))])


def _gptq_with_rows(llm: HFCausalLM, rows: int, kernel: str = "dequant"):
    def calib(module):
        llm.lm(input_ids=CALIB_IDS)

    return quantize_model(llm, dict(method="gptq", group_size=GROUP, kernel=kernel, embeddings=True,
                                    table_rows=rows), calib_fn=calib)


def test_precise_rows_are_the_calibration_tokens_in_int8():
    from bevlm.inference.quantization.quant_embedding import TiedRowsHead
    from bevlm.inference.quantization.quant_embedding8 import dequantize_int8_groups, quantize_int8_groups

    llm = _llm()
    table = llm.lm.get_input_embeddings().weight.detach().clone()
    report = _gptq_with_rows(llm, rows=20)
    emb, head = llm.lm.get_input_embeddings(), llm.lm.get_output_embeddings()
    assert report.precise_rows == emb.precise_rows == 20
    assert isinstance(head, TiedRowsHead) and head.base.qweight.data_ptr() == emb.qweight.data_ptr()
    assert head.row_ids.data_ptr() == emb.row_ids.data_ptr()  # stored once
    ids = emb.row_ids
    assert bool((ids[1:] > ids[:-1]).all())
    # the most used calibration tokens, ties by id: 5, 7, then 100..117
    assert ids.tolist() == [5, 7] + list(range(100, 118))
    # the rows are Q8_0 of the float rows: within half an int8 step of the float table
    q, scales = quantize_int8_groups(table[ids], 32)
    assert torch.equal(emb.precise_row_values(), dequantize_int8_groups(q, scales, 32))
    # lookups of precise ids give the int8 rows, other ids the int4 rows
    other = next(i for i in range(CONFIG["vocab_size"]) if i not in set(ids.tolist()))
    looked = emb(torch.tensor([[int(ids[3]), other]]))[0]
    assert torch.equal(looked[0], emb.precise_row_values()[3])
    assert torch.equal(looked[1], emb.dequantized_weight()[other])
    # logits: the int4 head's, with the precise rows' recomputed from the int8 rows
    x = torch.randn(5, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out, base = head(x), head.base(x)
    assert torch.allclose(out[:, ids], x @ emb.precise_row_values().t(), atol=1e-5)
    keep = torch.ones(CONFIG["vocab_size"], dtype=torch.bool)
    keep[ids] = False
    assert torch.equal(out[:, keep], base[:, keep])
    # the rows are counted in the stored bytes: K * (8 bytes id + D int8 + D / 32 fp16 scales)
    assert emb.weight_bytes() - (emb.qweight.numel() + 2 * emb.scales.numel() + 2 * emb.zeros.numel()) == \
        20 * (8 + 128 + 2 * 128 // 32)


def test_precise_rows_round_trip_and_refusals(tmp_path):
    llm = _llm()
    report = _gptq_with_rows(llm, rows=1000)  # more than the calibration text uses: every token it uses
    assert report.precise_rows == 32
    expected = _logits(llm)
    path = str(tmp_path / "rows.safetensors")
    config = save_quantized(llm, path, settings=dict(method="gptq", group_size=GROUP, kernel="dequant",
                                                     embeddings=True, table_rows=1000))
    assert config["embeddings"]["model.model.embed_tokens"]["precise_rows"] == report.precise_rows
    assert config["tied_heads"] == {"model.lm_head": "model.model.embed_tokens"}
    restored = load_quantized(_llm(seed=5), path)
    assert torch.equal(_logits(restored), expected)
    with pytest.raises(ValueError, match="needs embeddings='int4'"):
        quantize_model(_llm(), dict(method="gptq", embeddings="int8", table_rows=10), calib_fn=lambda m: None)
    untied = _llm(tie_word_embeddings=False)
    with pytest.raises(ValueError, match="not tied"):
        quantize_model(untied, dict(method="gptq", group_size=GROUP, embeddings=True, table_rows=10),
                       calib_fn=lambda m: None)
