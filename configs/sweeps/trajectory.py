# The trajectory-token head of the default (the ego status extrapolated by a kinematic model, CTRA, plus
# learned offsets from the LLM readout and a direct ego-status path, the offsets starting at zero)
# against: the earlier default, learned offsets alone (no-kinematic-prior); the head without the
# direct ego-status path and without the prior (no-ego-prior, the default before that); no ego status at
# all (no-ego); the head placed after the perception and prediction answers (traj-after-qa); decoded text
# waypoints with and without the ego token (traj-text, traj-text_no-ego); the kinematic prior with
# randomly initialised offset layers (kinematic-prior), and that with the head at ten times the learning
# rate (kinematic-prior_traj-lr10); no ego status with the trajectory loss at a tenth of its weight
# (no-ego_traj-w0.1: does the trajectory gradient on the shared weights cause the no-ego QA drop?).
sweep = dict(
    name="trajectory",
    configs=["configs/bev_vlm.py", "configs/ablations/bev_vlm_no-kinematic-prior.py",
             "configs/ablations/bev_vlm_no-ego-prior.py",
             "configs/ablations/bev_vlm_no-ego.py", "configs/ablations/bev_vlm_traj-after-qa.py",
             "configs/ablations/bev_vlm_traj-text.py", "configs/ablations/bev_vlm_traj-text_no-ego.py",
             "configs/ablations/bev_vlm_kinematic-prior.py",
             "configs/ablations/bev_vlm_kinematic-prior_traj-lr10.py",
             "configs/ablations/bev_vlm_no-ego_traj-w0.1.py"],
    steps=["train", "test"],
    # the default split (every 3rd val frame scored, all streamed: 48 frames in 9 scenes), 3 trainings per config; the
    # summary pairs each run with the first one (seed-pooled cluster bootstrap, 95 %)
    seeds=[0, 1, 2],
    resamples=2000,
    # tested with the lossless inference variant (prompt cache + batched speculative decoding:
    # answers identical to plain greedy decoding, checked in tests/tools/test_train_test_smoke.py)
    test_args=["--variant", "lossless"],
    # the head without the ego path is the earlier default, trained by the perception_first sweep:
    # reused (checked key by key)
    reuse={"bev_vlm_no-ego-prior": "work_dirs/sweeps/perception_first/bev_vlm",
           "bev_vlm": "work_dirs/sweeps/recipe_r3/bev_vlm"},
    columns=["planning/L2_1s_stp3", "planning/L2_2s_stp3", "planning/L2_3s_stp3", "planning/L2_avg_stp3",
             "planning/collision_avg_stp3", "efficiency/traj_s", "efficiency/traj_tokens_per_frame",
             "drivelm/gpt_free_final", "drivelm/accuracy", "drivelm/language_score", "drivelm/match_f1",
             "drivelm/full_accuracy"],
    pareto=("efficiency/traj_s", "planning/L2_avg_stp3"),
)
