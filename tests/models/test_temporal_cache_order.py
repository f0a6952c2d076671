"""What ``TemporalBEVCache`` keeps and evicts, observed only through its public methods.

Contract (``projects/bevlm/models/temporal_cache.py``): one entry per scene, the BEV of the
scene's last updated frame; beyond ``max_scenes`` the least recently *updated* scene is dropped
(lookups do not refresh it); a lookup yields a scene's BEV only for the sample whose
``prev_token`` is that stored frame and whose motion is valid; ``reset`` forgets everything.
"""
import torch

from bevlm.models.temporal_cache import TemporalBEVCache
from bevlm.structures import EgoMotion


def _bev(value: float, length: int = 3, channels: int = 2) -> torch.Tensor:
    return torch.full((1, length, channels), float(value))


def _motion(valid: bool = True, dx: float = 0.0) -> EgoMotion:
    m = torch.eye(4)
    m[0, 3] = dx
    return EgoMotion(m, valid)


def _scenes(cache: TemporalBEVCache, names) -> list[str]:
    return [s for s in names if cache.latest(s) is not None]


def test_latest_frame_replaces_the_previous_one_of_its_scene():
    cache = TemporalBEVCache(max_scenes=4)
    cache.update(["A"], ["a0"], _bev(1))
    cache.update(["A"], ["a1"], _bev(2))
    token, bev = cache.latest("A")
    assert token == "a1" and torch.equal(bev, _bev(2)[0])
    assert cache.holds("A", "a1") and not cache.holds("A", "a0")
    # only the true previous frame hits: a1 -> a2 reuses, a stale a0 -> a1 pair does not
    prev, motion = cache.lookup(["A"], ["a1"], [_motion()])
    assert motion.valid.tolist() == [True] and torch.equal(prev[0], _bev(2)[0])
    prev, motion = cache.lookup(["A"], ["a0"], [_motion()])
    assert prev is None and motion.valid.tolist() == [False]


def test_eviction_drops_the_least_recently_updated_scene_in_order():
    cache = TemporalBEVCache(max_scenes=3)
    names = ["A", "B", "C", "D", "E"]
    for i, s in enumerate(["A", "B", "C"]):
        cache.update([s], [f"{s.lower()}0"], _bev(i))
    assert _scenes(cache, names) == ["A", "B", "C"]
    cache.update(["A"], ["a1"], _bev(9))  # A becomes the most recently updated
    cache.update(["D"], ["d0"], _bev(3))  # over capacity: B (oldest update) goes, not A
    assert _scenes(cache, names) == ["A", "C", "D"]
    cache.update(["E"], ["e0"], _bev(4))  # then C
    assert _scenes(cache, names) == ["A", "D", "E"]
    cache.update(["B"], ["b1"], _bev(5))  # then A (its update a1 is now the oldest)
    assert _scenes(cache, names) == ["B", "D", "E"]
    assert cache.latest("B")[0] == "b1"


def test_lookups_do_not_refresh_a_scene():
    cache = TemporalBEVCache(max_scenes=2)
    cache.update(["A"], ["a0"], _bev(1))
    cache.update(["B"], ["b0"], _bev(2))
    for _ in range(3):  # A is read (and hit) repeatedly, but not updated
        assert cache.lookup(["A"], ["a0"], [_motion()])[0] is not None
        assert cache.holds("A", "a0")
    cache.update(["C"], ["c0"], _bev(3))
    assert _scenes(cache, ["A", "B", "C"]) == ["B", "C"]


def test_batch_update_over_capacity_keeps_the_last_samples_of_the_batch():
    cache = TemporalBEVCache(max_scenes=2)
    bev = torch.stack([_bev(v)[0] for v in (1, 2, 3)])  # [3, L, C]
    cache.update(["A", "B", "C"], ["a0", "b0", "c0"], bev)
    assert _scenes(cache, ["A", "B", "C"]) == ["B", "C"]
    assert torch.equal(cache.latest("B")[1], bev[1]) and torch.equal(cache.latest("C")[1], bev[2])
    # the same scene twice in one batch: the later sample is the scene's latest
    cache.update(["B", "B"], ["b1", "b2"], bev[:2])
    assert cache.latest("B")[0] == "b2" and torch.equal(cache.latest("B")[1], bev[1])


def test_lookup_batches_hits_and_misses_in_sample_order():
    cache = TemporalBEVCache()
    cache.update(["A", "B"], ["a3", "b7"], torch.stack([_bev(1)[0], _bev(2)[0]]))
    scenes = ["B", "A", "C", "A", "B"]
    prev_tokens = ["b7", "a2", "", "a3", "b7"]  # hit, skipped frame, new scene, hit, hit w/ invalid motion
    motions = [_motion(dx=1.0), _motion(), _motion(False), _motion(dx=2.0), _motion(False)]
    prev, motion = cache.lookup(scenes, prev_tokens, motions)
    assert motion.valid.tolist() == [True, False, False, True, False]
    assert prev.shape == (5, 3, 2)
    assert torch.equal(prev[0], _bev(2)[0]) and torch.equal(prev[3], _bev(1)[0])
    assert torch.equal(prev[[1, 2, 4]], torch.zeros(3, 3, 2))
    # the motions are batched in order too
    assert motion.prev2curr[:, 0, 3].tolist() == [1.0, 0.0, 0.0, 2.0, 0.0]
    # an empty token never matches, even if a stored frame token were empty
    cache.update(["E"], [""], _bev(5))
    assert not cache.holds("E", "")
    assert cache.lookup(["E"], [""], [_motion()])[0] is None


def test_stored_bev_is_detached_and_reset_forgets_everything():
    cache = TemporalBEVCache()
    bev = _bev(1).requires_grad_(True) * 2  # [1, L, C] inside a graph
    cache.update(["A"], ["a0"], bev)
    assert not cache.latest("A")[1].requires_grad
    cache.reset()
    assert cache.latest("A") is None and not cache.holds("A", "a0")
    assert cache.lookup(["A"], ["a0"], [_motion()])[0] is None
    cache.update(["A"], ["a1"], _bev(3))  # usable again after a reset
    assert cache.holds("A", "a1")
