"""The default test split: every val frame streamed in scene and time order, every 3rd one scored, each
scored frame with its whole history."""
import os
import random

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import DefaultSampler
from mmengine.registry import init_default_scope

from bevlm.datasets.converters import write_pickle_atomic
from bevlm.datasets.transforms.formatting import _motion
from bevlm.models.temporal_cache import TemporalBEVCache
from bevlm.registry import DATASETS
from tests.conftest import REPO, make_world

init_default_scope("bevlm")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """4 scenes x 5 frames at 64x36, two of them val (the default test split reads the val infos)."""
    return make_world(str(tmp_path_factory.mktemp("history_world")), num_scenes=4, frames=5, image_size=(64, 36))


def _test_dataset(config: str, world: str, ann_file: str | None = None):
    cfg = Config.fromfile(os.path.join(REPO, config))
    ds_cfg = cfg.test_dataloader.dataset.to_dict()
    ds_cfg.update(data_root=f"{world}/", ann_file=ann_file or f"{world}/infos/bevlm_infos_val.pkl")
    return cfg, DATASETS.build(ds_cfg)


def _test_order(ds):
    """Frame infos in the order the default test loader yields them (DefaultSampler, no shuffle)."""
    return [ds.get_data_info(i)["queue"] for i in DefaultSampler(ds, shuffle=False)]


def _streamed_history(queues):
    """Stream the frames through a TemporalBEVCache as BEVVLM.encode_bev does; the 'BEV' stored
    is the number of earlier frames chained into it, so each frame's value is its streamed history."""
    cache, depths = TemporalBEVCache(), []
    for queue in queues:
        cur = queue[-1]
        prev_bev, motion = cache.lookup([cur["scene_token"]], [cur.get("prev", "")], [_motion(cur)])
        depth = int(prev_bev[0, 0, 0]) + 1 if bool(motion.valid[0]) else 0
        cache.update([cur["scene_token"]], [cur["token"]], torch.full((1, 1, 1), float(depth)))
        depths.append(depth)
    return depths


def test_default_test_split_streams_every_val_frame_and_scores_every_third(world):
    cfg, ds = _test_dataset("configs/bev_vlm.py", world)
    d = cfg.test_dataloader.dataset
    assert d.frame_stride == 3 and d.stream_skipped and d.qa_select == "test"
    assert cfg.test_dataloader.sampler == dict(type="DefaultSampler", shuffle=False)
    qa_frames = [f for f in ds.frames if f.get("drivelm") is not None]
    order = _test_order(ds)
    assert len(order) == len(qa_frames) == 10  # every val frame (2 scenes x 5) is streamed
    scored = [i for i in range(len(ds)) if not ds.data_list[i].get("history_only")]
    assert scored == [0, 3, 6, 9]  # every 3rd frame of the stream is scored, with its questions
    assert all(ds.data_list[i]["qa"] for i in scored)
    assert all(not ds.data_list[i]["qa"] and len(order[i]) == 1 for i in range(len(ds)) if i not in scored)
    scenes = [q[-1]["scene_token"] for q in order]
    assert len({s for s in scenes}) == 2 and scenes == sorted(scenes, key=scenes.index)  # contiguous
    for a, b in zip(order, order[1:]):
        if a[-1]["scene_token"] == b[-1]["scene_token"]:
            assert b[-1]["timestamp"] > a[-1]["timestamp"] and b[-1]["prev"] == a[-1]["token"]
    # the model sees which items are history only
    assert [bool(ds[i]["data_samples"].history_only) for i in range(len(ds))] == [i not in scored for i in range(10)]


def test_streaming_model_has_its_whole_history_for_every_frame(world):
    _, ds = _test_dataset("configs/bev_vlm.py", world)
    order = _test_order(ds)
    depths = _streamed_history(order)
    assert depths == [q[-1]["frame_idx"] for q in order] == [0, 1, 2, 3, 4] * 2
    # so a model trained on a queue of T frames sees >= T-1 history frames after the first T-1
    for t in (2, 4, 8):
        assert all(d >= t - 1 for d, q in zip(depths, order) if q[-1]["frame_idx"] >= t - 1)
    # the BEV-level queue ablations stream at test time (their T only shapes training)
    for config in ("configs/ablations/bev_vlm_queue-4.py", "configs/ablations/bev_vlm_queue-8.py"):
        model = Config.fromfile(os.path.join(REPO, config)).model
        assert model.get("temporal_fusion", "bev") == "bev" and model.get("stream_temporal", True)
        assert (model.get("test_cfg") or {}).get("stream_temporal", True)


def test_a_shuffled_info_file_still_streams_in_order(world, tmp_path):
    import pickle

    with open(f"{world}/infos/bevlm_infos_val.pkl", "rb") as f:
        data = pickle.load(f)
    random.Random(0).shuffle(data["data_list"])
    path = str(tmp_path / "shuffled.pkl")
    write_pickle_atomic(data, path)
    _, ds = _test_dataset("configs/bev_vlm.py", world, ann_file=path)
    order = _test_order(ds)
    assert _streamed_history(order) == [q[-1]["frame_idx"] for q in order]
    assert sorted(_streamed_history(order)) == sorted([0, 1, 2, 3, 4] * 2)


def test_frame_tokens_model_loads_a_full_queue_at_test_time(world):
    cfg, ds = _test_dataset("configs/ablations/bev_vlm_frame-tokens-4.py", world)
    t = cfg.model.num_frames
    assert t == 4 and cfg.test_dataloader.dataset.queue_length == t == cfg.train_dataloader.dataset.queue_length
    for i, queue in enumerate(_test_order(ds)):
        if ds.data_list[i].get("history_only"):  # streamed, not scored: a frame-tokens model skips it
            continue
        k = queue[-1]["frame_idx"]
        assert len(queue) == min(k + 1, t)
        assert len({q["scene_token"] for q in queue}) == 1
        assert [q["frame_idx"] for q in queue] == list(range(k + 1 - len(queue), k + 1))
        assert all(b["prev"] == a["token"] for a, b in zip(queue, queue[1:]))


def test_a_questions_file_streams_the_frames_it_does_not_ask_about(world, tmp_path):
    """The challenge's questions cover some key frames of a scene: the others are streamed as history
    only (not asked), so each asked frame has its whole history."""
    import json

    from bevlm.datasets.drivelm_io import load_drivelm
    from bevlm.evaluation.drivelm_files import strip_answers
    from bevlm.evaluation.drivelm_testset import build_test_eval

    questions = strip_answers(build_test_eval(load_drivelm(f"{world}/drivelm_val.json"), seed=0))
    for scene in questions.values():  # keep every 2nd key frame of each scene
        frames = sorted(scene["key_frames"])
        for k in frames[1::2]:
            del scene["key_frames"][k]
    path = tmp_path / "questions.json"
    path.write_text(json.dumps(questions))
    asked = {k for s in questions.values() for k in s["key_frames"]}
    cfg, ds = _test_dataset("configs/bev_vlm.py", world)
    ds_cfg = cfg.test_dataloader.dataset.to_dict()
    ds_cfg.update(data_root=f"{world}/", ann_file=f"{world}/infos/bevlm_infos_val.pkl", questions_file=str(path))
    ds = DATASETS.build(ds_cfg)
    order = _test_order(ds)
    assert len(order) == 10 and _streamed_history(order) == [q[-1]["frame_idx"] for q in order]
    scored = {order[i][-1]["token"] for i in range(len(ds)) if not ds.data_list[i].get("history_only")}
    assert scored == asked and 0 < len(asked) < 10
    ds_cfg.update(stream_skipped=False)
    assert len(DATASETS.build(ds_cfg)) == len(asked)


def test_key_frames_without_qa_are_streamed_as_history(world, tmp_path):
    """Real DriveLM annotates a subset of nuScenes key frames: under require_qa the others are not
    scored, but streamed as history only, so the annotated frames keep their whole history."""
    import pickle

    with open(f"{world}/infos/bevlm_infos_val.pkl", "rb") as f:
        data = pickle.load(f)
    for info in data["data_list"]:
        if info["frame_idx"] % 2:
            info["drivelm"] = None
    path = str(tmp_path / "sparse_qa.pkl")
    write_pickle_atomic(data, path)
    cfg = Config.fromfile(os.path.join(REPO, "configs/bev_vlm.py"))
    ds_cfg = cfg.test_dataloader.dataset.to_dict()
    ds_cfg.update(data_root=f"{world}/", ann_file=path, frame_stride=1)
    ds = DATASETS.build(ds_cfg)
    order = _test_order(ds)
    assert len(order) == 10 and _streamed_history(order) == [q[-1]["frame_idx"] for q in order]
    scored = [q[-1]["frame_idx"] for i, q in enumerate(order) if not ds.data_list[i].get("history_only")]
    assert scored == [0, 2, 4] * 2
    ds_cfg.update(stream_skipped=False)
    assert len(DATASETS.build(ds_cfg)) == 6
