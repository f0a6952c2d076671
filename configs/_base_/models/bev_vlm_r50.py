# Real-scale BEV-VLM (BEVFormer-tiny-like sizes): timm resnet50 + FPN (256 channels) ->
# BEVFormer-lite, 3 layers, 50x50 BEV over +-51.2 m -> pool + MLP (100 tokens) -> a Hugging Face
# causal LM under 3B from a local directory, LoRA on its attention projections, + ego token + 6
# trajectory tokens. Gradient checkpointing is on for backbone, encoder and LLM (same
# gradients, less activation memory: tests/models/test_grad_checkpointing.py).
# Weights come from local files only (docs/real_data.md says how to fetch them once):
#   checkpoints/resnet50_a1_in1k.safetensors, checkpoints/Qwen2.5-0.5B-Instruct/
bev_h, bev_w, embed_dims = 50, 50, 256
pc_range = (-51.2, -51.2, -5.0, 51.2, 51.2, 3.0)
backbone_weights = "checkpoints/resnet50_a1_in1k.safetensors"
llm_dir = "checkpoints/Qwen2.5-0.5B-Instruct"
model = dict(
    type="BEVVLM",
    vision="bev",
    data_preprocessor=dict(type="BEVVLMDataPreprocessor"),
    img_backbone=dict(type="TimmBackbone", model_name="resnet50", out_indices=(2, 3),
                      pretrained=backbone_weights, gradient_checkpointing=True),
    img_neck=dict(type="FPNLite", in_channels=[512, 1024], out_channels=embed_dims, num_outs=2),
    bev_encoder=dict(
        type="BEVFormerLiteEncoder", embed_dims=embed_dims, bev_h=bev_h, bev_w=bev_w,
        pc_range=pc_range, num_layers=3, num_heads=8, num_levels=2, num_points=4,
        num_z_anchors=4, num_cams=6, ffn_dims=512, use_temporal=True, gradient_checkpointing=True),
    aux_head=dict(type="BEVAuxHead", embed_dims=embed_dims, num_classes=11, bev_h=bev_h,
                  bev_w=bev_w, pc_range=pc_range, loss_heatmap_weight=1.0, loss_occ_weight=1.0),
    camera_tokens=dict(type="CameraPatchTokens", in_dims=embed_dims, num_cams=6, tokens_per_cam=16),
    projector=dict(type="PoolMLPProjector", in_dims=embed_dims, bev_h=bev_h, bev_w=bev_w,
                   out_h=10, out_w=10),
    # any causal LM under 3B from a local Hugging Face directory (Qwen2.5-0.5B / 1.5B, Llama-3.2-1B,
    # Phi-3.5-mini, ...): without target_modules LoRA takes the architecture's attention projections
    # (bevlm.models.llm.architectures.LORA_TARGETS); the frozen base is held in bf16
    llm=dict(type="HFCausalLM", pretrained=llm_dir, torch_dtype="bfloat16",
             lora=dict(r=16, alpha=32, dropout=0.05), freeze_base=True, gradient_checkpointing=True),
    traj_head=dict(type="TrajectoryTokenHead", num_tokens=6, horizon=6),
    use_ego_status=True,
    test_cfg=dict(
        max_new_tokens=32,
        family_max_new_tokens=dict(important_objects=160, notice_order=256, priority=96),
        repetition_stop=dict(max_period=8, min_repeats=3, min_span=12),
        batch_questions=True,
        share_prompt_cache=False,
        stream_temporal=True,
        count_flops_frames=2,
        pruning=dict(),
        speculative=None,
    ),
)
