# The default recipe against the one it replaced on 2026-12-05 (configs/ablations/bev_vlm_r1.py: the BEV
# tokens alone in the prefix, multiple-choice questions trained as option list + letter). The default
# adds the stage-1 detector's nearest road users as text after the visual tokens and trains the
# free-form answers of the questions the test asks as multiple choice. Both trained with 3 seeds and
# tested on the default split (48 scored frames in 9 val scenes, 384 questions, lossless decoding); the
# summary pairs each seed of the default with the same seed of r1 (scenes, then frames within them,
# resampled). This sweep is the home of the default's seeded runs: the other sweeps reuse them.
sweep = dict(
    name="recipe",
    configs=["configs/ablations/bev_vlm_r1.py", "configs/bev_vlm.py"],
    steps=["train", "test"],
    seeds=[0, 1, 2],
    resamples=2000,
    test_args=["--variant", "lossless"],
    # r1's trainings are the seeded default runs of that time (work dirs moved to work_dirs/sweeps_r1/;
    # their records: docs/results/world36_r1-default/runs/trajectory/); seed 0 of the default is the
    # main job's training (tools/run_main.sh). Both checked key by key before any reuse.
    reuse={"bev_vlm_r1": "work_dirs/sweeps_r1/trajectory/bev_vlm", "bev_vlm": "work_dirs/bev_vlm"},
    columns=["drivelm/gpt_free_final", "drivelm/accuracy", "drivelm/family/behavior", "drivelm/language_score",
             "drivelm/CIDEr", "drivelm/match_f1", "drivelm/full_accuracy", "planning/L2_avg_stp3",
             "planning/collision_avg_stp3", "efficiency/prefix_tokens", "efficiency/frame_s"],
    pareto=("efficiency/frame_s", "drivelm/gpt_free_final"),
)
