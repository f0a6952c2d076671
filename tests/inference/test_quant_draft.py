"""Self-drafting by a low-precision copy of the same weights (``speculative.quant_draft``): the output
is the verifier's plain greedy decoding token for token (bf16 / int8 / int4 drafts, two
architectures, LoRA merged or kept, a visual prefix as ``inputs_embeds``), also where the draft
disagrees (a perturbed draft: rejections crop the draft's own cache); acceptance counters; the
draft's cache stays in sync; it shares what it does not change with the verifier and never
modifies it; it composes with prompt lookup and the answer datastore."""
import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from bevlm.inference.quantization import QuantLinear4
from bevlm.inference.speculative import (NgramDatastore, QuantDrafter, QuantDraftSetting, SelfSpeculativeDecoder,
                                         build_draft_lm, draft_resident_bytes)
from bevlm.inference.speculative.ngram import question_key
from bevlm.inference.variants import needs_inputs, resolve_speculative
from bevlm.models.llm import HFCausalLM, PrefixCache
from bevlm.testing import TINY_ARCH_CONFIGS

torch.set_num_threads(1)

P = 5
MAX_NEW = 16
EOS_BIAS = 3.0
LORA = dict(r=4, alpha=8, dropout=0.0)  # target_modules: the architecture's default
QUESTIONS = ["What are the important objects in the current scene?",
             "Predict the behavior of the ego vehicle.",
             "Is <c1,CAM_FRONT,712.5,510.0> a traffic sign or a road barrier?",
             "Yes?"]
PRECISIONS = ("bfloat16", "int8", "int4")


def _llm(arch: str = "llama", lora: bool = True) -> HFCausalLM:
    """A 4-layer tiny LLM of ``arch`` with a large init (varied greedy answers), non-zero LoRA
    adapters (so merging matters) and an untied LM head with a zero bias (to push EOS)."""
    torch.manual_seed(0)
    llm = HFCausalLM(tiny_config=dict(TINY_ARCH_CONFIGS[arch], num_hidden_layers=4, initializer_range=0.2),
                     lora=LORA if lora else None).eval()
    gen = torch.Generator().manual_seed(2)
    for name, p in llm.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0.0, 0.2, generator=gen)
    old = llm.lm.get_output_embeddings()
    head = nn.Linear(old.in_features, old.out_features, bias=True)
    head.weight.data.copy_(old.weight.data)
    head.bias.data.copy_(old.bias.data if old.bias is not None else torch.zeros(old.out_features))
    llm.lm.set_output_embeddings(head)
    return llm


def _cache(llm: HFCausalLM, seed: int = 1) -> PrefixCache:
    """The frame's prefix cache of random visual-prefix embeddings ``[1, P, D]``."""
    return llm.prefill(torch.randn(1, P, llm.hidden_size, generator=torch.Generator().manual_seed(seed)))


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def arch_llm(request):
    llm = _llm(request.param)
    return request.param, llm, _cache(llm)


def _quant_decoder(llm, precision, draft_len=4, **kw):
    kw = dict(dict(use_ngram=False, use_layer_skip=False), **kw)
    return SelfSpeculativeDecoder(llm, [], draft_len=draft_len, quant_draft=precision, **kw)


def _head_bias(llm):
    return llm.lm.get_output_embeddings().bias


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("draft_len", [1, 3, 6])
def test_output_equals_plain_greedy(arch_llm, precision, draft_len):
    arch, llm, cache = arch_llm
    eos = llm.tokenizer.eos_token_id
    dec = _quant_decoder(llm, precision, draft_len)
    lengths, drafts = [], []
    try:
        for bias in (0.0, EOS_BIAS):
            with torch.no_grad():
                _head_bias(llm)[eos] = bias
            for q in QUESTIONS:
                ref = llm.generate_ids(cache, q, MAX_NEW)
                lengths.append(len(ref))
                assert dec.generate_ids(cache, q, MAX_NEW) == ref, (arch, precision, draft_len, q)
            drafts.append(dec.quant_drafter.lm)
    finally:
        with torch.no_grad():
            _head_bias(llm)[eos] = 0.0
    assert drafts[0] is not drafts[1]  # the verifier's weights changed: the draft was rebuilt from them
    assert MAX_NEW in lengths and any(n < MAX_NEW for n in lengths), lengths  # budget and EOS stops
    s = dec.stats
    assert s.generated == sum(lengths)
    assert s.drafted == s.quant_drafted > 0 and 0 < s.accepted == s.quant_accepted <= s.quant_drafted
    assert s.quant_forwards == s.quant_drafted  # one draft forward per drafted token (the first also catches up)
    assert s.full_forwards <= s.generated + len(lengths)    # at most one verify per token (+ the query forwards)
    assert s.draft_resident_bytes > 0


def test_exact_copy_accepts_everything(arch_llm):
    """An fp32 draft (the verifier's own weights, or a copy with LoRA merged) accepts every draft:
    fewer verify forwards than generated tokens."""
    _, llm, cache = arch_llm
    for setting in ("float32", dict(precision="float32", keep_lora=False)):
        dec = _quant_decoder(llm, setting, draft_len=4)
        for q in QUESTIONS:
            assert dec.generate_ids(cache, q, MAX_NEW) == llm.generate_ids(cache, q, MAX_NEW)
        s = dec.stats
        assert s.quant_drafted > 0 and s.quant_accepted == s.quant_drafted and s.acceptance == 1.0
        assert s.full_forwards < s.generated
        assert s.full_forwards == len(QUESTIONS) * 4  # 16 tokens: the query forward + 3 verifies of 4 drafts + 1
    assert _quant_decoder(llm, "float32").quant_drafter.model() is llm.lm  # nothing copied


def test_perturbed_draft_rejections_stay_exact():
    """A draft that often disagrees (its MLPs perturbed): the verifier rejects, both caches roll back
    (the verifier's cropped, the draft's cropped to the verified prefix) and the output is greedy."""
    llm = _llm()
    cache = _cache(llm)
    dec = _quant_decoder(llm, "bfloat16", draft_len=4)
    draft = dec.quant_drafter.model()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in draft.named_parameters():
            if "mlp" in name:
                p.add_(torch.randn(p.shape, generator=gen).to(p.dtype) * 0.03)
    assert dec.quant_drafter.model() is draft  # the verifier did not change: the perturbed draft stays
    for q in QUESTIONS:
        assert dec.generate_ids(cache, q, MAX_NEW) == llm.generate_ids(cache, q, MAX_NEW)
    s = dec.stats
    assert 0 < s.quant_accepted < s.quant_drafted  # partly accepted, partly rejected


def test_draft_cache_stays_in_sync():
    """After drafts that the verifier rejects, the draft's cache holds exactly the verified tokens
    it was fed, and it drafts what a fresh draft fed the verified tokens at once drafts."""
    llm = _llm()
    cache = _cache(llm)
    drafter = QuantDrafter(llm, QuantDraftSetting("float32", keep_lora=False))
    query = llm._query_ids(QUESTIONS[0])
    stops = llm.prompt.stop_ids
    session = drafter.session(cache, query)
    verified = [llm.generate_ids(cache, QUESTIONS[0], 1)[0]]
    for step in range(5):
        drafts = session.draft(verified, 4, stops)
        assert session.past.get_seq_length() == session.base + len(query) + len(verified) + len(drafts) - 1
        # pretend the verifier kept the first draft only and chose another token after it
        verified = verified + drafts[:1] + [(drafts[1] + 7 + step) % 500 if len(drafts) > 1 else 5]
    drafts = session.draft(verified, 4, stops)
    assert session.fed[:len(query) + len(verified)] == query + verified
    assert session.past.get_seq_length() == session.base + len(session.fed)
    assert drafts == drafter.session(cache, query).draft(verified, 4, stops)


@pytest.mark.parametrize("precision", ["bfloat16", "int4"])
def test_prefix_sources(precision):
    """The draft's prefix from its own prefill (with and without the shared prompt-text cache), from
    the verifier's KV (cast), and a hand-built cache without prefix embeddings whose positions run
    ahead of its entries (a pruned prefix): all greedy-exact."""
    llm = _llm()
    for share in (False, True):
        llm.share_text_prefix = share
        cache = _cache(llm)
        assert cache.prefix_embeds is not None and cache.prefix_embeds.shape == (1, P, llm.hidden_size)
        pruned_like = PrefixCache(past_key_values=cache.past_key_values, prefix_len=cache.prefix_len + 7,
                                  hidden_prefix=cache.hidden_prefix)
        for setting in (dict(precision=precision), dict(precision=precision, prefix="verifier")):
            dec = _quant_decoder(llm, setting, draft_len=3)
            for c in (cache, pruned_like):
                for q in QUESTIONS[:2]:
                    assert dec.generate_ids(c, q, MAX_NEW) == llm.generate_ids(c, q, MAX_NEW), (share, setting)
            assert dec.stats.quant_accepted > 0
    llm.share_text_prefix = False


@pytest.mark.parametrize("chain", [False, True])
def test_lookup_and_datastore_first_then_the_quantised_draft(chain):
    """Prompt lookup and the training-answer datastore propose first; the int4 draft fills in when
    they have nothing; its cache catches up on tokens accepted from lookup drafts."""
    llm = _llm()
    cache = _cache(llm)
    eos = llm.tokenizer.eos_token_id
    refs = [llm.generate_ids(cache, q, MAX_NEW) for q in QUESTIONS]
    noise = [[(t * 7 + 3) % 200 for t in r] for r in refs]
    store = NgramDatastore(refs[:2] + noise, max_ngram=3, min_ngram=1, min_share=0.0, end_id=eos,
                           keys=[question_key(q) for q in QUESTIONS[:2]] + [question_key(q) for q in QUESTIONS])
    dec = _quant_decoder(llm, "int4", draft_len=3, use_ngram=True, ngram_min_n=1, ngram_draft_len=3,
                         datastore=store, store_draft_len=4, chain_drafts=chain)
    context = refs[3]
    for q, ref in zip(QUESTIONS, refs):
        assert dec.generate_ids(cache, q, MAX_NEW, context_ids=context) == ref
    s = dec.stats
    assert s.store_drafted > 0 and s.quant_drafted > 0
    assert s.drafted == s.ngram_drafted + s.store_drafted + s.quant_drafted and s.accepted <= s.drafted
    assert s.full_forwards < s.generated
    # the frame decoder interface, one question after the other
    dec.reset_stats()
    assert dec.decode(cache, QUESTIONS, [MAX_NEW] * len(QUESTIONS)) == refs
    assert dec.stats.draft_resident_bytes > 0  # kept by reset_stats


def test_memory_sharing_and_the_verifier_is_untouched():
    llm = _llm()
    lm = llm.lm
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    ids_before = {id(p) for p in lm.parameters()}
    verifier_bytes = sum(p.numel() * p.element_size() for p in lm.parameters())
    embed_ptr = lm.get_input_embeddings().weight.data_ptr()
    sizes = {}
    for precision in ("bfloat16", "int8", "int4"):
        draft, report = build_draft_lm(lm, QuantDraftSetting(precision))
        assert draft is not lm
        # int4 / int8 merge the adapters into the copy by default, a float copy keeps them
        assert any(".lora_" in n for n, _ in draft.named_parameters()) == (precision == "bfloat16")
        if precision != "bfloat16":  # the table is left as it is: shared, not copied
            assert draft.get_input_embeddings().weight.data_ptr() == embed_ptr
            assert report is not None and report.layers
        else:
            assert report is None and all(p.dtype == torch.bfloat16 for p in draft.parameters())
        draft(input_ids=torch.tensor([[5, 6, 7]]))  # int4 kernels build their run-time state here
        sizes[precision] = draft_resident_bytes(draft, lm)
    merged, _ = build_draft_lm(lm, QuantDraftSetting("bfloat16", keep_lora=False))
    assert not any(".lora_" in n for n, _ in merged.named_parameters())
    kept, _ = build_draft_lm(lm, QuantDraftSetting("int4", keep_lora=True))
    assert any(".lora_" in n for n, _ in kept.named_parameters())
    assert any(isinstance(m, QuantLinear4) for m in kept.modules())
    assert sizes["int4"] < sizes["bfloat16"] < verifier_bytes and sizes["int8"] < sizes["bfloat16"]
    assert draft_resident_bytes(lm, lm) == 0
    # the verifier's tensors are the same objects with the same values
    assert {id(p) for p in lm.parameters()} == ids_before
    assert all(torch.equal(before[k], v) for k, v in lm.state_dict().items())
    assert all(p.dtype == torch.float32 for p in lm.parameters())


def test_int8_keeps_the_adapters_of_float_linears():
    """int8 leaves the MLP output projection in float: its adapter stays beside the shared weight
    (no merged float copy of it); every other adapted Linear is merged and quantised."""
    torch.manual_seed(0)
    llm = HFCausalLM(tiny_config=dict(TINY_ARCH_CONFIGS["llama"], num_hidden_layers=4, initializer_range=0.2),
                     lora=dict(LORA, target_modules=["q_proj", "v_proj", "down_proj"])).eval()
    for name, p in llm.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0.0, 0.2)
    cache = _cache(llm)
    draft, report = build_draft_lm(llm.lm, QuantDraftSetting("int8"))
    down, verifier_down = draft.model.layers[0].mlp.down_proj, llm.lm.model.layers[0].mlp.down_proj
    assert hasattr(down, "lora_A") and down.base_layer.weight.data_ptr() == verifier_down.base_layer.weight.data_ptr()
    assert not any(n.endswith("q_proj.lora_A") for n, _ in draft.named_modules())
    assert any(n.endswith("q_proj") for n in report.layers)
    dec = _quant_decoder(llm, "int8", draft_len=3)
    for q in QUESTIONS:
        assert dec.generate_ids(cache, q, MAX_NEW) == llm.generate_ids(cache, q, MAX_NEW)
    assert dec.stats.quant_accepted > 0


def test_one_draft_per_lora_adapter():
    """A multi-LoRA model: each adapter gets its own draft (built once, reused when it is active
    again) and decoding stays greedy-exact for each."""
    torch.manual_seed(0)
    llm = HFCausalLM(tiny_config=dict(TINY_ARCH_CONFIGS["llama"], num_hidden_layers=4, initializer_range=0.2),
                     lora=LORA, adapter_names=["city", "highway"]).eval()
    gen = torch.Generator().manual_seed(4)
    for name, p in llm.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0.0, 0.3, generator=gen)
    dec = _quant_decoder(llm, "int8", draft_len=3)
    drafts = []
    for adapter in ("city", "highway", "city"):
        llm.set_adapter(adapter)
        cache = _cache(llm)
        for q in QUESTIONS[:2]:
            assert dec.generate_ids(cache, q, MAX_NEW) == llm.generate_ids(cache, q, MAX_NEW), adapter
        drafts.append(dec.quant_drafter.lm)
    assert drafts[0] is not drafts[1] and drafts[2] is drafts[0]
    assert dec.stats.quant_accepted > 0


def test_deepcopy_rebinds_the_drafter():
    llm = _llm()
    cache = _cache(llm)
    dec = _quant_decoder(llm, "int4")
    dec.generate_ids(cache, QUESTIONS[0], 4)
    twin = copy.deepcopy(dec)
    assert twin.quant_drafter.llm is twin.llm and twin.llm is not llm and twin.quant_drafter.lm is None
    assert twin.generate_ids(cache, QUESTIONS[0], MAX_NEW) == llm.generate_ids(cache, QUESTIONS[0], MAX_NEW)


def test_settings_are_checked():
    assert QuantDraftSetting.parse("int8") == QuantDraftSetting(precision="int8")
    assert QuantDraftSetting.parse(dict(precision="int4", quant=dict(group_size=16))).quant == dict(group_size=16)
    assert QuantDraftSetting("bfloat16").merges_lora is False and QuantDraftSetting("int4").merges_lora is True
    with pytest.raises(ValueError, match="precision"):
        QuantDraftSetting("int3")
    with pytest.raises(ValueError, match="unknown keys.*bits"):
        QuantDraftSetting.parse(dict(precision="int4", bits=4))
    with pytest.raises(ValueError, match="only applies"):
        QuantDraftSetting("bfloat16", quant=dict(group_size=32))
    with pytest.raises(ValueError, match="set by"):
        QuantDraftSetting("int4", quant=dict(method="gptq"))
    with pytest.raises(ValueError, match="group_size"):
        QuantDraftSetting("int4", quant=dict(group_size=0))
    with pytest.raises(ValueError, match="prefix"):
        QuantDraftSetting("int4", prefix="none")
    llm = _llm(lora=False)
    with pytest.raises(ValueError, match="batched=False"):
        SelfSpeculativeDecoder(llm, [], quant_draft="int4", batched=True)
    with pytest.raises(ValueError, match="skip_layers"):
        SelfSpeculativeDecoder(llm, [1], quant_draft="int4")
    # a variant with a quantised draft needs no calibration search; the setting passes through
    assert needs_inputs([dict(speculative=dict(quant_draft="int4"))]) == (False, False)
    assert needs_inputs([dict(speculative=dict(draft_len=4))]) == (True, False)
    resolved = resolve_speculative(SimpleNamespace(llm=llm), dict(quant_draft="int4", draft_len=3), calib=None,
                                   log=lambda *_: None)
    assert resolved == dict(quant_draft="int4", draft_len=3, skip_layers=[])
