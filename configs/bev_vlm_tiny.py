# Smoke-test recipe: the full pipeline at toy sizes (random tiny Llama, 8x8 BEV, 64x36 images).
# Trains in seconds on a CPU; used by the tests and for quick debugging:
#   python tools/create_data.py world --out data/tiny_world --scenes 2 --frames 6 --image-size 160 90
#   python tools/train.py configs/bev_vlm_tiny.py --cfg-options data_root=data/tiny_world/
_base_ = ["./bev_vlm.py"]
# tiny_config: a random tiny Llama built by `build_tiny_llama`, which bevlm.testing registers
# (the package never imports it)
custom_imports = dict(imports=["bevlm.testing"], allow_failed_imports=False)

bev_h, bev_w, embed_dims = 8, 8, 32
pc_range = (-32.0, -32.0, -3.0, 32.0, 32.0, 3.0)
img_size = (64, 36)
data_root = "data/tiny_world/"
load_from = None  # trains from scratch (no stage-1 checkpoint)

model = dict(
    # no detections as text: nothing loads a stage-1 head here (tests that need it build one:
    # tests/models/test_perception_text.py)
    det_head=None, perception_text=None,
    # no plan line: the tiny random tokenizer spells it in more than the default's 48 tokens (tests that
    # need it build it: tests/models/test_plan_text.py)
    plan_text=None,
    img_neck=dict(out_channels=embed_dims),
    bev_encoder=dict(embed_dims=embed_dims, bev_h=bev_h, bev_w=bev_w, num_layers=1, num_points=2,
                     num_z_anchors=2, ffn_dims=64),
    aux_head=dict(embed_dims=embed_dims, bev_h=bev_h, bev_w=bev_w),
    camera_tokens=dict(in_dims=embed_dims, tokens_per_cam=1),
    projector=dict(in_dims=embed_dims, bev_h=bev_h, bev_w=bev_w, out_h=2, out_w=2),
    llm=dict(
        pretrained=None,
        tiny_config=dict(vocab_size=600, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                         pad_token_id=3),
        lora=dict(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])),
    # offsets randomly initialised: the tests of what the trajectory reads (LLM states, answers, ego
    # status) need a readout that depends on its inputs from the first step; zero_init_offsets has
    # its own tests (tests/models/test_traj_head.py)
    traj_head=dict(zero_init_offsets=False),
    test_cfg=dict(max_new_tokens=8),
)
pipeline = [
    dict(type="LoadMultiViewImages"),
    dict(type="ResizeMultiViewImages", size=img_size),
    dict(type="PackDriveInputs"),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(ann_file="infos/bevlm_infos_train.pkl", data_root=data_root,
                 pipeline=pipeline, qa_per_sample=4))
test_dataloader = dict(
    num_workers=0,
    dataset=dict(ann_file="infos/bevlm_infos_val.pkl", data_root=data_root,
                 pipeline=pipeline, max_frames=2, frame_stride=1))
train_cfg = dict(max_iters=2)
param_scheduler = [dict(type="ConstantLR", factor=1.0, by_epoch=False, begin=0, end=2)]
default_hooks = dict(checkpoint=dict(interval=1), logger=dict(interval=1))
custom_hooks = [dict(type="ParamChecksumHook")]  # per-rank weight checksum (DDP test)
