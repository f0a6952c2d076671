# One adapter on the union vs per-domain adapters (same and equal total parameters), each tested
# on both domains' val splits. Needs data/mini_world_night (see configs/multi_domain/bev_vlm_union.py).
_day = ["test_dataloader.dataset.data_root='data/mini_world/'", "test_dataloader.dataset.domain='day'"]
_night = ["test_dataloader.dataset.data_root='data/mini_world_night/'", "test_dataloader.dataset.domain='night'"]
sweep = dict(
    name="multi_domain",
    configs=["configs/multi_domain/bev_vlm_union.py", "configs/multi_domain/bev_vlm_per-domain.py",
             "configs/multi_domain/bev_vlm_per-domain_equal-params.py"],
    steps=["train", "test"],
    test_options=["test_dataloader.dataset.frame_stride=4"],
    # tested with the lossless inference variant (prompt cache + batched speculative decoding:
    # answers identical to plain greedy decoding, checked in tests/tools/test_train_test_smoke.py)
    test_args=["--variant", "lossless"],
    test_sets=dict(day=_day, night=_night),
    columns=["day:drivelm/gpt_free_final", "day:drivelm/language_score", "day:drivelm/full_accuracy",
             "day:planning/L2_avg_stp3", "night:drivelm/gpt_free_final", "night:drivelm/language_score",
             "night:drivelm/full_accuracy", "night:planning/L2_avg_stp3"],
)
