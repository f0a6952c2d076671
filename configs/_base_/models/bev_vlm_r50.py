# Real-scale BEV-VLM (BEVFormer-tiny-like sizes): timm resnet50 + FPN (256 channels) ->
# BEVFormer-lite, 3 layers, 50x50 BEV over +-51.2 m -> pool + MLP (100 tokens) -> a Hugging Face
# causal LM under 3B from a local directory, LoRA on its attention projections, + ego token + 6
# trajectory tokens; everything else (heads, test-time settings) as in bev_vlm.py. Gradient
# checkpointing is on for backbone, encoder and LLM (same gradients, less activation memory:
# tests/models/test_grad_checkpointing.py).
# Weights come from local files only (docs/real_data.md says how to fetch them once):
#   checkpoints/resnet50_a1_in1k.safetensors, checkpoints/Qwen2.5-0.5B-Instruct/
_base_ = ["./bev_vlm.py"]
bev_h, bev_w, embed_dims = 50, 50, 256
pc_range = (-51.2, -51.2, -5.0, 51.2, 51.2, 3.0)
backbone_weights = "checkpoints/resnet50_a1_in1k.safetensors"
llm_dir = "checkpoints/Qwen2.5-0.5B-Instruct"
model = dict(
    img_backbone=dict(model_name="resnet50", out_indices=(2, 3), pretrained=backbone_weights,
                      gradient_checkpointing=True),
    img_neck=dict(in_channels=[512, 1024], out_channels=embed_dims),
    bev_encoder=dict(embed_dims=embed_dims, bev_h=bev_h, bev_w=bev_w, pc_range=pc_range, num_layers=3,
                     num_heads=8, ffn_dims=512, gradient_checkpointing=True),
    aux_head=dict(embed_dims=embed_dims, bev_h=bev_h, bev_w=bev_w, pc_range=pc_range),
    camera_tokens=dict(in_dims=embed_dims, tokens_per_cam=16),
    projector=dict(in_dims=embed_dims, bev_h=bev_h, bev_w=bev_w, out_h=10, out_w=10),
    # any causal LM under 3B from a local Hugging Face directory (Qwen2.5-0.5B / 1.5B, Llama-3.2-1B,
    # Phi-3.5-mini, ...): without target_modules LoRA takes the architecture's attention projections
    # (bevlm.models.llm.architectures.LORA_TARGETS); the frozen base is held in bf16
    llm=dict(pretrained=llm_dir, torch_dtype="bfloat16",
             lora=dict(_delete_=True, r=16, alpha=32, dropout=0.05), gradient_checkpointing=True),
)
