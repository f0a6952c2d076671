# BEV-VLM: resnet18 + FPN -> BEVFormer-lite (32x32 BEV over +-32 m) -> pool+MLP (36 tokens)
# -> SmolLM2-135M-Instruct with LoRA, + ego token + 6 trajectory tokens.
bev_h, bev_w, embed_dims = 32, 32, 64
pc_range = (-32.0, -32.0, -3.0, 32.0, 32.0, 3.0)
model = dict(
    type="BEVVLM",
    vision="bev",
    data_preprocessor=dict(type="BEVVLMDataPreprocessor"),
    img_backbone=dict(type="TimmBackbone", model_name="resnet18", out_indices=(2, 3)),
    img_neck=dict(type="FPNLite", in_channels=[128, 256], out_channels=embed_dims, num_outs=2),
    bev_encoder=dict(
        type="BEVFormerLiteEncoder", embed_dims=embed_dims, bev_h=bev_h, bev_w=bev_w,
        pc_range=pc_range, num_layers=2, num_heads=4, num_levels=2, num_points=4,
        num_z_anchors=4, num_cams=6, ffn_dims=128, use_temporal=True),
    aux_head=dict(type="BEVAuxHead", embed_dims=embed_dims, num_classes=11, bev_h=bev_h,
                  bev_w=bev_w, pc_range=pc_range, loss_heatmap_weight=1.0, loss_occ_weight=1.0),
    camera_tokens=dict(type="CameraPatchTokens", in_dims=embed_dims, num_cams=6, tokens_per_cam=6),
    projector=dict(type="PoolMLPProjector", in_dims=embed_dims, bev_h=bev_h, bev_w=bev_w,
                   out_h=6, out_w=6),
    llm=dict(type="HFCausalLM", pretrained="smollm2",
             lora=dict(r=16, alpha=32, dropout=0.0,
                       target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                       "up_proj", "down_proj"]),
             freeze_base=True),
    # the waypoints are the ego status extrapolated with constant turn rate and acceleration (CTRA,
    # kinematic_prior, no parameters) plus learned offsets: an MLP readout of the trajectory tokens and
    # a direct path from the 5 ego-status values (ego_prior_dims), both starting at exactly zero
    # (zero_init_offsets: the untrained head is the CTRA planner). The trajectory study:
    # docs/research/trajectory.md; the earlier head (learned offsets alone):
    # configs/ablations/bev_vlm_no-kinematic-prior.py
    traj_head=dict(type="TrajectoryTokenHead", num_tokens=6, horizon=6, ego_prior_dims=5,
                   kinematic_prior="ctra", zero_init_offsets=True),
    use_ego_status=True,
    # test-time settings (bevlm.models.detectors.test_cfg.TestConfig); inference variants
    # (configs/benchmarks/default.py, tools/test.py --variant) override these keys
    test_cfg=dict(
        max_new_tokens=32,
        # answers that list every key object with its c-tag are long; the rest are short. Each
        # budget is above the longest reference of its family in the mini world (SmolLM2 tokens:
        # important objects 187, notice order 229, priority 110, objects in direction 34) with a
        # margin; tools/test.py warns, naming the fix, when a test set's references are longer
        family_max_new_tokens=dict(important_objects=224, notice_order=256, priority=128, objects_in_direction=48),
        # stop an answer that loops ("one chair, one chair, ...") at its 3rd-4th copy, keep one copy
        repetition_stop=dict(max_period=8, min_repeats=3, min_span=12),
        batch_questions=True,
        share_prompt_cache=False,
        stream_temporal=True,
        count_flops_frames=2,
        pruning=dict(),
        speculative=None,
        # the official multiple-choice questions (behaviour, moving status) are answered with the
        # option whose text the model finds likeliest as the answer to the open-ended stem, instead
        # of a decoded letter (docs/research/multiple_choice.md; the letter:
        # configs/ablations/bev_vlm_mc-generate.py)
        multiple_choice="likelihood",
    ),
)
