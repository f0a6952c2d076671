# Real-scale stage 2 with a larger LLM, sharded by FSDP (mmengine's FlexibleRunner; docs/real_data.md):
# Qwen2.5-1.5B-Instruct from a local directory, the rest as configs/nuscenes/bev_vlm_r50_qwen2.5-0.5b.py.
#   bash tools/dist_train.sh configs/nuscenes/bev_vlm_r50_qwen2.5-1.5b_fsdp.py 8
#   python tools/test.py configs/nuscenes/bev_vlm_r50_qwen2.5-1.5b_fsdp.py work_dirs/.../iter_20000.pth
# Each decoder block of the LLM is its own FSDP unit (bevlm.engine.dist.decoder_layer_wrap_policy):
# parameters, gradients and optimiser state are sharded over the processes and one block at a time
# is gathered. FSDP keeps one dtype per sharded block, so the LLM is held in fp32 (sharded, 1/N of
# it per GPU) and computes in bf16 under the AmpOptimWrapper's autocast; tools/train.py switches the
# optim wrapper to its FSDP version (gradient clipping by the norm of the whole sharded gradient).
# Checkpoints are saved whole on rank 0 ("full" state dict), so tools/test.py loads them without FSDP.
# Not yet run on GPUs: memory and time per iteration are not measured (CPU test:
# tests/tools/test_train_test_smoke.py::test_fsdp_two_processes_train_and_test).
_base_ = ["./bev_vlm_r50_qwen2.5-0.5b.py"]
llm_dir = "checkpoints/Qwen2.5-1.5B-Instruct"
model = dict(llm=dict(pretrained=llm_dir, torch_dtype="float32"))
strategy = dict(
    type="FSDPStrategy",
    state_dict_cfg="full",
    model_wrapper=dict(type="MMFullyShardedDataParallel", use_orig_params=True,
                       auto_wrap_policy=dict(type="decoder_layer_wrap_policy")),
)
work_dir = "work_dirs/bev_vlm_r50_qwen2.5-1.5b_fsdp"
