# The perception-first recipe (issue: stage 1 = configs/bev_det_pretrain.py, then the BEV-VLM from
# its checkpoint): stage 2 with the pretrained vision side at 0.1x the learning rate (the main
# recipe, the reference), with it frozen, without pretraining (random vision side, the earlier
# recipe), and with 36 learned prompt tokens (what the random vision side's nearly constant tokens
# amount to; docs/research/perception_first.md). Needs work_dirs/bev_det_pretrain/iter_1000.pth (tools/run_main.sh, or
# `python tools/train.py configs/bev_det_pretrain.py`). Tested on the default split (every 3rd
# val frame scored, all streamed: 48 frames in 9 scenes) with the lossless variant (answers identical to greedy decoding).
#   python tools/sweep.py configs/sweeps/perception_first.py --results-dir docs/results
sweep = dict(
    name="perception_first",
    configs=["configs/bev_vlm.py", "configs/ablations/bev_vlm_frozen-encoder.py",
             "configs/ablations/bev_vlm_no-pretrain.py", "configs/ablations/bev_vlm_prompt-36.py"],
    steps=["train", "test"],
    seeds=[0, 1, 2],
    resamples=2000,
    test_args=["--variant", "lossless"],
    columns=["drivelm/gpt_free_final", "drivelm/accuracy", "drivelm/language_score", "drivelm/Bleu_1",
             "drivelm/ROUGE_L", "drivelm/CIDEr", "drivelm/match_f1", "drivelm/full_accuracy",
             "planning/L2_avg_stp3", "planning/collision_avg_stp3", "efficiency/frame_s"],
    pareto=("efficiency/frame_s", "drivelm/gpt_free_final"),
)
