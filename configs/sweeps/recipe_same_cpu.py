# The plan-line default against r2 (configs/ablations/bev_vlm_r2.py) with both trainings on one CPU.
# The sweep recipe_r3 (configs/sweeps/recipe.py) paired the default's seeds, trained on a 2-core
# AMD EPYC with AVX2 only, with r2's seeds of 2026-12-05/06, trained on an AVX-512 machine: the same
# seed trains a different model on another CPU, so those pairs mix the recipe with the machine. Here r2
# is trained again on the CPU that trained the default's seeds (reused from recipe_r3, checked key by
# key), and compared with that seed of the default; its own record against r2's record of the same
# seed from the other CPU (docs/results/runs/recipe/bev_vlm/seedN) measures what the machine alone moves.
#   python tools/sweep.py configs/sweeps/recipe_same_cpu.py --seeds 0 --records docs/results/runs
sweep = dict(
    name="recipe_same_cpu",
    configs=["configs/ablations/bev_vlm_r2.py", "configs/bev_vlm.py"],
    steps=["train", "test"],
    seeds=[0, 1, 2],
    resamples=2000,
    test_args=["--variant", "lossless"],
    reuse={"bev_vlm": "work_dirs/sweeps/recipe_r3/bev_vlm"},
    columns=["drivelm/gpt_free_final", "drivelm/accuracy", "drivelm/family/behavior",
             "drivelm/language_score", "drivelm/match_f1", "drivelm/full_accuracy",
             "planning/L2_avg_stp3", "planning/collision_avg_stp3", "efficiency/frame_s"],
)
