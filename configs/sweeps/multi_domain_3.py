# Three domains (day / night left-hand traffic / wide-high camera rig): one adapter on the union vs
# per-domain adapters (same rank, and about equal total parameters), each tested on every domain's
# val split. Needs data/mini_world_night and data/mini_world_wide (see
# configs/multi_domain/bev_vlm_union-3.py).
_sets = dict(day=("data/mini_world/", "day"), night=("data/mini_world_night/", "night"),
             wide=("data/mini_world_wide/", "wide"))
sweep = dict(
    name="multi_domain_3",
    configs=["configs/multi_domain/bev_vlm_union-3.py", "configs/multi_domain/bev_vlm_per-domain-3.py",
             "configs/multi_domain/bev_vlm_per-domain-3_equal-params.py"],
    steps=["train", "test"],
    test_options=["test_dataloader.dataset.frame_stride=4"],
    # tested with the lossless inference variant (answers identical to plain greedy decoding)
    test_args=["--variant", "lossless"],
    test_sets={name: [f"test_dataloader.dataset.data_root='{root}'", f"test_dataloader.dataset.domain='{domain}'"]
               for name, (root, domain) in _sets.items()},
    columns=[f"{name}:{key}" for name in _sets
             for key in ("drivelm/gpt_free_final", "drivelm/language_score", "drivelm/full_accuracy",
                         "planning/L2_avg_stp3")],
)
