# Inference variants compared by tools/benchmark.py and tested by tools/test.py --variant (the first
# one is the baseline). A variant overrides keys of the model's test_cfg (batch_questions, pruning,
# speculative, ...: BEVVLM.set_test_cfg) and may add weight transformations (quant, llm_dtype);
# see bevlm.inference.variants.
# prompt lookup + REST-style drafts from the training answers, no layer skip
_store = dict(draft_len=4, ngram_min_n=2, ngram_draft_len=10, use_ngram=True, use_layer_skip=False,
              store_draft_len=10, datastore=dict(max_ngram=4, min_ngram=2, min_share=0.3))
# ... and chained: lookup / datastore proposals continued on the growing draft, up to 16 tokens
_chain = dict(_store, chain_drafts=True, max_draft_len=16)
variants = dict(
    baseline=dict(batch_questions=False),                      # batch-1 greedy, one question at a time
    batched=dict(),                                            # a frame's questions decoded as one batch
    # the model config's loop stop rule switched off (answers run to their budget)
    no_stop_rule=dict(batch_questions=False, repetition_stop=None),
    # prompt lookup over the question and the frame's earlier QA, then layer-skip drafts
    # (the skip-set search scores 6 random candidate layers per greedy round: a few minutes on CPU)
    speculative=dict(batch_questions=False,
                     speculative=dict(draft_len=4, use_ngram=True, use_layer_skip=True, max_skip=8,
                                      search=dict(sample_per_round=6))),
    # prompt lookup only (the layer-skip search above found no set that pays off for SmolLM2-135M)
    speculative_lookup=dict(batch_questions=False,
                            speculative=dict(draft_len=4, ngram_draft_len=8, use_ngram=True, use_layer_skip=False)),
    # + REST-style drafts from an n-gram table of the training answers: confident, short drafts
    speculative_store_confident=dict(
        batch_questions=False,
        speculative=dict(draft_len=4, ngram_min_n=2, ngram_draft_len=8, use_ngram=True, use_layer_skip=False,
                         store_draft_len=6, datastore=dict(max_ngram=4, min_ngram=2, min_share=0.6))),
    # + REST-style drafts from an n-gram table of the training answers (no layer skip)
    speculative_store=dict(batch_questions=False, speculative=_store),
    speculative_chain=dict(batch_questions=False, speculative=_chain),
    # the frame's questions drafted and verified as one batch (lossless, like `batched`)
    speculative_batched=dict(speculative=dict(_chain, batched=True)),
    # int4 codes stored packed; computed with the dequantise-once kernel (same numbers as the
    # packed kernels, which are slower than fp32 on AVX2 CPUs: see bevlm.inference.quantization.bench)
    # `embeddings=True`: the tied 49k x 576 embedding / LM head table in int4 too (the whole LLM
    # then takes 0.28x of its fp16 bytes instead of 0.62x)
    int4_rtn=dict(quant=dict(method="rtn", bits=4, group_size=64, kernel="cached", embeddings=True)),
    int4_rtn_linears=dict(quant=dict(method="rtn", bits=4, group_size=64, kernel="cached")),
    # GPTQ calibrated teacher-forced on 4 training frames' QA (every answer token a row)
    int4_gptq=dict(quant=dict(method="gptq", bits=4, group_size=64, kernel="cached", embeddings=True)),
    # + a clipping search of every group's range (grid 20, least squared error; RTN and GPTQ)
    int4_rtn_clip=dict(quant=dict(method="rtn", bits=4, group_size=64, kernel="cached", embeddings=True,
                                  clip_search=20)),
    int4_gptq_clip=dict(quant=dict(method="gptq", bits=4, group_size=64, kernel="cached", embeddings=True,
                                   clip_search=20)),
    # int4 on the grid the base LLM was shipped on (SmolLM2's file is Q4_1: groups of 32 input
    # columns, fp16 scale + fp16 offset): the base Linears are reproduced exactly, the trained LoRA
    # adapters stay unmerged beside them (bf16), the table in int4 (group 32, offsets; the tied head
    # shares its codes). Merging first would put W + BA off that grid and round it a second time.
    int4_grid=dict(quant=dict(method="rtn", bits=4, group_size=32, zero_point="offset", keep_lora=True,
                              kernel="cached", embeddings=True)),
    int4_grid_linears=dict(quant=dict(method="rtn", bits=4, group_size=32, zero_point="offset", keep_lora=True,
                                      kernel="cached")),
    # + the tied head / table by GPTQ on the head's input Hessian (teacher-forced training QA)
    int4_grid_gptq=dict(quant=dict(method="gptq", bits=4, group_size=32, zero_point="offset", keep_lora=True,
                                   kernel="cached", embeddings=True)),
    # the int4 grid Linears + the table / tied head in int8 (Q8_0: the shipped file's own layout)
    int4_grid_int8table=dict(quant=dict(method="rtn", bits=4, group_size=32, zero_point="offset", keep_lora=True,
                                        kernel="cached", embeddings="int8")),
    # under 0.3x of the fp16 bytes: the shipped grid's exact Linears alone take 0.25x (4 bits + two
    # fp16 per 32 weights), so LoRA is merged (W + BA, GPTQ-quantised on its grid again) and the
    # table coarser: g32 Linears + a g192 table (a group divides the width 576), or mixed
    # precision by layer kind (the MLP's gate / up at g64, the rest at g32) + a g64 table
    int4_merged_g32=dict(quant=dict(method="gptq", bits=4, group_size=32, zero_point="offset", kernel="cached",
                                    embeddings=True, embed_group_size=192)),
    int4_merged_mixed=dict(quant=dict(method="gptq", bits=4, group_size=32, zero_point="offset", kernel="cached",
                                      embeddings=True, embed_group_size=64,
                                      group_sizes={"gate_proj": 64, "up_proj": 64})),
    # + activation-aware scaling before GPTQ (AWQ, alpha searched per Linear on 11 grid points; the
    # 1/s vector per Linear adds 4 bytes per input channel) and GPTQ's activation order
    int4_merged_mixed_awq=dict(quant=dict(method="gptq", bits=4, group_size=32, zero_point="offset", kernel="cached",
                                          embeddings=True, embed_group_size=64, awq_grid=10,
                                          group_sizes={"gate_proj": 64, "up_proj": 64})),
    int4_merged_mixed_awq_act=dict(quant=dict(method="gptq", bits=4, group_size=32, zero_point="offset",
                                              kernel="cached", embeddings=True, embed_group_size=64, awq_grid=10,
                                              act_order=True, group_sizes={"gate_proj": 64, "up_proj": 64})),
    # where the merged int4 loses accuracy: the same int4 Linears (AWQ + GPTQ) with the tied table / LM
    # head in int8 (Q8_0, 0.35x of fp16 in all: over the 0.30x budget) or left in float
    int4_merged_mixed_awq_int8table=dict(quant=dict(method="gptq", bits=4, group_size=32, zero_point="offset",
                                                    kernel="cached", embeddings="int8", awq_grid=10,
                                                    group_sizes={"gate_proj": 64, "up_proj": 64})),
    int4_merged_mixed_awq_floattable=dict(quant=dict(method="gptq", bits=4, group_size=32, zero_point="offset",
                                                     kernel="cached", awq_grid=10,
                                                     group_sizes={"gate_proj": 64, "up_proj": 64})),
    # the same bytes as int4_merged_mixed_awq (4.75 stored bits per Linear weight on average), the group
    # sizes (32 / 64 / 128) chosen per Linear by its measured output error (one more calibration run)
    int4_merged_budget_awq=dict(quant=dict(method="gptq", bits=4, zero_point="offset", kernel="cached",
                                           embeddings=True, embed_group_size=64, awq_grid=10, group_budget=4.75)),
    # the same budget, each Linear's error weighted by the reference answers' loss gradients at its
    # outputs (diagonal Fisher: an estimate of the loss increase, comparable across layers)
    int4_merged_fisher_awq=dict(quant=dict(method="gptq", bits=4, zero_point="offset", kernel="cached",
                                           embeddings=True, embed_group_size=64, awq_grid=10, group_budget=4.75,
                                           sensitivity="fisher")),
    # the same codes' layout after a Hadamard rotation of the residual stream (QuaRot-style; the float
    # model's function unchanged, its outlier channels spread over all): no extra stored bytes
    int4_merged_mixed_awq_rot=dict(quant=dict(method="gptq", bits=4, group_size=32, zero_point="offset",
                                              kernel="cached", embeddings=True, embed_group_size=64, awq_grid=10,
                                              group_sizes={"gate_proj": 64, "up_proj": 64}, rotation="hadamard")),
    int4_merged_mixed_awq_floattable_rot=dict(quant=dict(method="gptq", bits=4, group_size=32, zero_point="offset",
                                                         kernel="cached", awq_grid=10, rotation="hadamard",
                                                         group_sizes={"gate_proj": 64, "up_proj": 64})),
    # the same with other rotation seeds (other random signs): how much of a decoded score is the rotation's draw
    int4_merged_mixed_awq_rot_s1=dict(quant=dict(method="gptq", bits=4, group_size=32, zero_point="offset",
                                                 kernel="cached", embeddings=True, embed_group_size=64, awq_grid=10,
                                                 group_sizes={"gate_proj": 64, "up_proj": 64}, rotation="hadamard",
                                                 rotation_seed=1)),
    # + each MLP's inner width rotated too (online Hadamard before down_proj, QuaRot's R4; 1536 = 12 x 64 x 2)
    int4_merged_mixed_awq_rot_mlp=dict(quant=dict(method="gptq", bits=4, group_size=32, zero_point="offset",
                                                  kernel="cached", embeddings=True, embed_group_size=64, awq_grid=10,
                                                  group_sizes={"gate_proj": 64, "up_proj": 64}, rotation="hadamard",
                                                  rotation_mlp=True)),
    # + up to 1000 table rows (the tokens the calibration text uses most) also kept in int8, their lookups
    # and logits from those rows (0.6 MB: 0.298x of fp16 in all)
    int4_merged_mixed_awq_rot_rows=dict(quant=dict(method="gptq", bits=4, group_size=32, zero_point="offset",
                                                   kernel="cached", embeddings=True, embed_group_size=64, awq_grid=10,
                                                   group_sizes={"gate_proj": 64, "up_proj": 64}, rotation="hadamard",
                                                   table_rows=1000)),
    int4_merged_mixed_act=dict(quant=dict(method="gptq", bits=4, group_size=32, zero_point="offset", kernel="cached",
                                          embeddings=True, embed_group_size=64, act_order=True,
                                          group_sizes={"gate_proj": 64, "up_proj": 64})),
    int8_attn=dict(quant=dict(method="int8_dynamic",
                              include=("q_proj", "k_proj", "v_proj", "o_proj"))),
    # the prompt text before the visual slot prefilled once per model, not once per frame (lossless)
    prompt_cache=dict(share_prompt_cache=True),
    prompt_cache_bev_keep50=dict(share_prompt_cache=True, pruning=dict(bev_keep_ratio=0.5)),
    fastv50=dict(pruning=dict(fastv_keep_ratio=0.5)),
    bev_keep50=dict(pruning=dict(bev_keep_ratio=0.5)),
    bev_keep50_early_exit=dict(pruning=dict(bev_keep_ratio=0.5, encoder_layers=1)),
    bev_keep25=dict(pruning=dict(bev_keep_ratio=0.25)),
    bev_keep25_early_exit=dict(pruning=dict(bev_keep_ratio=0.25, encoder_layers=1)),
    bev_keep50_fastv50=dict(pruning=dict(bev_keep_ratio=0.5, fastv_keep_ratio=0.5)),
    # The QA-round policy is a training-time choice (the model answers in the format it was
    # trained on): compare configs/bev_vlm.py with configs/ablations/bev_vlm_three-rounds.py
    # through tools/test.py, or benchmark the three-rounds model with this file.
    combined=dict(pruning=dict(bev_keep_ratio=0.5),
                  quant=dict(method="int8_dynamic", include=("q_proj", "k_proj", "v_proj", "o_proj"))),
    combined_speculative=dict(batch_questions=False, pruning=dict(bev_keep_ratio=0.5), speculative=_chain),
    # lossless stack: shared prompt cache + batched speculative decoding
    lossless=dict(share_prompt_cache=True, speculative=dict(_chain, batched=True)),
    # + BEV-side pruning of half the visual tokens
    combined_batched=dict(share_prompt_cache=True, pruning=dict(bev_keep_ratio=0.5),
                          speculative=dict(_chain, batched=True)),
    # + a third of the visual tokens kept (12 of 36): encoder + prefill FLOPs about 0.48x of the baseline
    combined_batched_keep33=dict(share_prompt_cache=True, pruning=dict(bev_keep_ratio=1 / 3),
                                 speculative=dict(_chain, batched=True)),
)
# the MLP-rotated variant's other draws: rotation seeds 1 to 4 (other random signs of the same Hadamard matrices)
for _seed in (1, 2, 3, 4):
    variants[f"int4_merged_mixed_awq_rot_mlp_s{_seed}"] = dict(
        quant=dict(variants["int4_merged_mixed_awq_rot_mlp"]["quant"], rotation_seed=_seed))
# the int4 variants decoded with the lossless stack: each answers exactly as its own greedy
# decoding, so the accuracy of the quantised model is measured about 3.5x faster
for _name in ("int4_rtn", "int4_rtn_clip", "int4_gptq", "int4_gptq_clip", "int4_grid", "int4_grid_gptq",
              "int4_grid_int8table", "int4_merged_g32", "int4_merged_mixed", "int4_merged_mixed_awq",
              "int4_merged_mixed_awq_act", "int4_merged_mixed_act", "int4_merged_mixed_awq_int8table",
              "int4_merged_mixed_awq_floattable", "int4_merged_budget_awq",
              "int4_merged_fisher_awq", "int4_merged_mixed_awq_rot", "int4_merged_mixed_awq_floattable_rot",
              "int4_merged_mixed_awq_rot_rows", "int4_merged_mixed_awq_rot_s1",
              "int4_merged_mixed_awq_rot_mlp", "int4_merged_mixed_awq_rot_mlp_s1",
              "int4_merged_mixed_awq_rot_mlp_s2", "int4_merged_mixed_awq_rot_mlp_s3", "int4_merged_mixed_awq_rot_mlp_s4"):
    variants[_name + "_lossless"] = dict(variants[_name], **variants["lossless"])
# the lossless stack with shorter chained drafts (a verify forward of 8 rows x 17 tokens is
# compute-bound on 2 cores: fewer drafted tokens per row may pay)
variants["lossless_draft8"] = dict(share_prompt_cache=True, speculative=dict(_chain, batched=True, max_draft_len=8))
variants["lossless_draft12"] = dict(share_prompt_cache=True, speculative=dict(_chain, batched=True, max_draft_len=12))
# the lossless stack with the frame's questions prefilled in one padded forward (before 2026-12-04), against
# the default length groups (model.test_cfg.prefill_group_tokens)
variants["lossless_one_prefill"] = dict(variants["lossless"], prefill_group_tokens=None)
# the LLM computing in bf16 (vision fp32): half the bytes read per decoded token, and fast bf16
# matmuls on CPUs with AVX512-BF16 / AMX (not lossless: compare its agreement with the baseline)
variants["lossless_bf16"] = dict(variants["lossless"], llm_dtype="bfloat16")
variants["combined_bf16"] = dict(variants["combined_batched"], llm_dtype="bfloat16")
variants["int4_grid_lossless_bf16"] = dict(variants["int4_grid_lossless"], llm_dtype="bfloat16")
# int4 layers computed by the fastest correct kernel of this machine (torch's packed int4 matmul
# where it wins its one-time micro-benchmark, else dequantise per call)
variants["int4_grid_auto_lossless"] = dict(variants["int4_grid_lossless"],
                                           quant=dict(variants["int4_grid"]["quant"], kernel="auto"))
# a low-precision copy of the same weights as the draft model (speculative.quant_draft: its own KV
# cache, 4 tokens per draft, verified by the fp32 model: lossless), batch 1. Per precision: the
# draft model alone (`qdraft_<p>`), after prompt lookup (`_lookup`, against `speculative_lookup_n2`),
# after lookup + the training-answer datastore (`_store`, against `speculative_store`) and chained
# (`_chain`, against `speculative_chain`); the benchmark's acc_<source> / drafted_quant / draft_MB
# columns split acceptance by draft source. `fp32` is the verifier's own weights (accepts every
# draft: the cost of drafting without a cheaper model); `int4_grid` keeps the LoRA adapters unmerged
# beside the base on its shipped Q4_1 grid (the int4_grid_int8table variant above answers as the
# float model on 48 of 48 questions).
_lookup = dict(draft_len=4, ngram_min_n=2, ngram_draft_len=10, use_ngram=True, use_layer_skip=False)
variants["speculative_lookup_n2"] = dict(batch_questions=False, speculative=_lookup)
for _name, _draft in (("fp32", "float32"), ("bf16", "bfloat16"), ("int8", "int8"), ("int4", "int4"),
                      ("int4_grid", dict(precision="int4", keep_lora=True))):
    variants[f"qdraft_{_name}"] = dict(batch_questions=False, speculative=dict(
        draft_len=4, use_ngram=False, use_layer_skip=False, quant_draft=_draft))
    variants[f"qdraft_{_name}_lookup"] = dict(batch_questions=False, speculative=dict(_lookup, quant_draft=_draft))
    variants[f"qdraft_{_name}_store"] = dict(batch_questions=False, speculative=dict(_store, quant_draft=_draft))
    variants[f"qdraft_{_name}_chain"] = dict(batch_questions=False, speculative=dict(_chain, quant_draft=_draft))
# int4 of the trained, merged weights computed without resident float copies (issue: the cached
# kernel holds an fp32 copy of every layer): the same codes dequantised layer by layer at each call
# (`_dequant`), or by the fastest correct kernel of this CPU (`_auto`: torch's packed int4 matmul where
# it exists and wins its micro-benchmark, else per-call dequantisation). Same numbers as
# `int4_merged_g32` up to the kernel's rounding; compare resident bytes, peak RSS and speed.
for _k in ("dequant", "auto"):
    for _name in ("int4_merged_g32", "int4_merged_mixed_awq", "int4_rtn", "int4_merged_mixed_awq_rot_mlp"):
        variants[f"{_name}_{_k}"] = dict(quant=dict(variants[_name]["quant"], kernel=_k))
# Prompt lookup over the detections line the prefix holds as embeddings (PrefixCache.lookup_ids) and, in
# batched decoding, over the other questions' answers decoded so far (both on by default, lossless): the
# stack without each and without both (the stack before 2026-12-05), and the same without the
# training-answer datastore (lookup drafts only).
_no_line, _no_others = dict(lookup_prefix_text=False), dict(lookup_other_answers=False)
_lookup_chain = dict(_lookup, chain_drafts=True, max_draft_len=16, batched=True)
for _name, _spec in (("lossless", variants["lossless"]["speculative"]), ("lossless_lookup_only", _lookup_chain)):
    variants[_name] = dict(share_prompt_cache=True, speculative=dict(_spec))
    variants[_name + "_no_prefix"] = dict(share_prompt_cache=True, speculative=dict(_spec, **_no_line))
    variants[_name + "_no_others"] = dict(share_prompt_cache=True, speculative=dict(_spec, **_no_others))
    variants[_name + "_plain"] = dict(share_prompt_cache=True, speculative=dict(_spec, **_no_line, **_no_others))
# the lossless stack with an end guard: an important-objects answer may not end before it gives the
# objects' IDs (a stop token is passed over for the best other token until the answer holds "<c";
# not lossless against plain greedy: it changes the answers it guards, in the float model and in int4
# alike; docs/efficient_inference.md)
_guard = dict(answer_must_contain=dict(important_objects="<c"))
for _name in ("lossless", "int4_merged_mixed_awq_rot_mlp_lossless", "int4_merged_mixed_awq_rot_mlp_s1_lossless",
              "int4_merged_mixed_awq_rot_mlp_s2_lossless", "int4_merged_mixed_awq_rot_mlp_s3_lossless",
              "int4_merged_mixed_awq_rot_mlp_s4_lossless"):
    variants[_name + "_guard"] = dict(variants[_name], **_guard)
    # ... and it may not loop to its budget without the IDs either: while the answer lacks "<c", a token
    # that would complete a block of up to 24 tokens written three times back to back is passed over (the
    # mini world's training answers never name one object description three times in a row)
    variants[_name + "_guard_loops"] = dict(variants[_name], **_guard,
                                            answer_guard_loops=dict(max_period=24, min_repeats=3, min_span=12))
    # ... nor wander between a few descriptions to its budget: no 12-token phrase more than twice anywhere in
    # the answer (the mini world's important-objects answers, 1440 in train and val of three domains, never
    # hold one more than twice)
    variants[_name + "_guard_recur"] = dict(variants[_name + "_guard_loops"],
                                            answer_guard_recurrence=dict(ngram=12, max_count=2))
# Trained draft heads (speculative.draft_heads: Medusa-style heads on the verifier's last hidden state,
# fitted to the checkpoint's own answers by tools/train_draft_heads.py; lossless, they only draft): where
# lookup and the datastore propose nothing (`head_policy='fallback'`), or also where their draft departs
# from the heads' guesses ('override'), the heads guess the next tokens after the one just chosen.
# The datastore nearly always proposes something, so beside it the heads draft with 'override' only.
# Needs the heads file first:
#   python tools/train_draft_heads.py configs/bev_vlm.py work_dirs/bev_vlm/iter_100.pth
_heads = dict(draft_heads="work_dirs/draft_heads/bev_vlm.safetensors", head_draft_len=3)
variants["lossless_heads_fallback"] = dict(share_prompt_cache=True,
                                           speculative=dict(variants["lossless"]["speculative"], **_heads))
variants["lossless_heads"] = dict(share_prompt_cache=True, speculative=dict(
    variants["lossless"]["speculative"], **_heads, head_policy="override"))
variants["lossless_heads_p50"] = dict(share_prompt_cache=True, speculative=dict(
    variants["lossless"]["speculative"], **_heads, head_policy="override", head_min_prob=0.5))
variants["lossless_lookup_only_heads"] = dict(share_prompt_cache=True, speculative=dict(_lookup_chain, **_heads))
# the lossless stack with the collision questions answered from their family's training answers:
# each gets the text (of those seen >= 2 times in training) the model finds likeliest as its whole
# answer (bevlm.models.qa.closed_set), or likeliest relative to the content-free frame ("calibrated")
variants["lossless_closed_collision"] = dict(variants["lossless"], closed_set=dict(families=["collision_actions"]))
variants["lossless_closed_collision_calibrated"] = dict(
    variants["lossless"], closed_set=dict(families=["collision_actions"], scoring="calibrated"))
# ... or likeliest relative to the same frame with the question's c-tag replaced by "the object"
variants["lossless_closed_collision_tag"] = dict(
    variants["lossless"], closed_set=dict(families=["collision_actions"], scoring="tag_calibrated"))
