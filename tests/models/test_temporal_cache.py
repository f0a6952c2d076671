import torch

from bevlm.models.temporal_cache import TemporalBEVCache
from bevlm.structures import EgoMotion


def _m(valid=True):
    return EgoMotion(torch.eye(4), valid)


def test_cache_hits_only_the_true_previous_frame():
    cache = TemporalBEVCache()
    prev, motion = cache.lookup(["A"], ["a0"], [_m()])
    assert prev is None and motion.valid.tolist() == [False]
    cache.update(["A", "B"], ["a0", "b0"], torch.stack([torch.ones(4, 2), 2 * torch.ones(4, 2)]))
    # batch of two scenes: A continues (hit), B skipped a frame (miss)
    prev, motion = cache.lookup(["A", "B"], ["a0", "b5"], [_m(), _m()])
    assert motion.valid.tolist() == [True, False]
    assert torch.equal(prev[0], torch.ones(4, 2)) and torch.equal(prev[1], torch.zeros(4, 2))


def test_scene_change_resets_and_invalid_motion_is_respected():
    cache = TemporalBEVCache()
    cache.update(["A"], ["a0"], torch.ones(1, 4, 2))
    # a new scene whose first frame has no prev token: no history
    prev, motion = cache.lookup(["C"], [""], [_m(False)])
    assert prev is None and not motion.valid.any()
    # right prev token but the data says the motion is invalid (e.g. unknown ego pose): no history
    prev, motion = cache.lookup(["A"], ["a0"], [_m(False)])
    assert prev is None
    cache.reset()
    assert cache.lookup(["A"], ["a0"], [_m()])[0] is None


def test_cache_is_bounded():
    cache = TemporalBEVCache(max_scenes=2)
    for i in range(5):
        cache.update([f"S{i}"], [f"t{i}"], torch.zeros(1, 1, 1))
    assert len(cache._store) == 2
