"""Checkpoint policy: own training checkpoints load (resume works); no checkpoint can run code;
a checkpoint that does not fit the model stops with the keys named."""
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader
from torch import nn

from bevlm.engine.checkpoint import (CheckpointError, CheckpointMismatchError, UntrustedCheckpointError,
                                     load_checkpoint_file, load_model_weights, pickle_globals,
                                     to_plain_checkpoint)


def _mmengine_like_checkpoint():
    buf = HistoryBuffer()
    for v in (1.5, np.float64(0.5), 2.0):
        buf.update(v)
    return {"state_dict": {"w": torch.ones(2)},
            "message_hub": {"log_scalars": {"train/loss": buf}, "runtime_info": {"iter": np.int64(3)},
                            "resumed_keys": {"train/loss": True}},
            "meta": {"seed": np.int64(7), "iter": 3, "dataset_meta": {"classes": ("car",)}}}


def test_plain_training_checkpoint_loads_weights_only_and_restores_the_log_history(tmp_path):
    ckpt = _mmengine_like_checkpoint()
    history = ckpt["message_hub"]["log_scalars"]["train/loss"].data
    path = str(tmp_path / "ok.pth")
    torch.save(to_plain_checkpoint(ckpt), path)
    torch.load(path, weights_only=True)  # plain: torch's own safe loader takes it as it is
    loaded = CheckpointLoader.load_checkpoint(path, "cpu")  # the path mmengine's resume takes
    assert torch.equal(loaded["state_dict"]["w"], torch.ones(2))
    assert loaded["message_hub"]["runtime_info"]["iter"] == 3 and loaded["meta"]["seed"] == 7
    buf = loaded["message_hub"]["log_scalars"]["train/loss"]
    assert isinstance(buf, HistoryBuffer)
    for got, want in zip(buf.data, history):
        np.testing.assert_array_equal(got, want)


def test_non_plain_checkpoint_is_refused_without_fallback(tmp_path):
    path = str(tmp_path / "raw.pth")
    torch.save(_mmengine_like_checkpoint(), path)  # numpy scalars pickle through builtins.getattr
    with pytest.raises(UntrustedCheckpointError, match=r"raw\.pth: refusing to unpickle.*Fix"):
        load_checkpoint_file(path)


class _System:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


def _allowed_names_payload(marker) -> bytes:
    """``getattr(__import__('os'), 'system')('touch marker')`` with only ``builtins`` globals."""
    return (b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S'touch " + str(marker).encode()
            + b"'\ntR.")


def _zip_checkpoint(path, data_pkl: bytes):
    """A torch zip checkpoint whose data.pkl is ``data_pkl``."""
    torch.save({"w": torch.ones(1)}, path)
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    name = next(n for n in entries if n.endswith("data.pkl"))
    entries[name] = data_pkl
    with zipfile.ZipFile(path, "w") as z:
        for n, b in entries.items():
            z.writestr(n, b)


@pytest.mark.parametrize("kind", ["zip_os_system", "zip_allowed_names", "legacy_os_system"])
def test_hostile_checkpoints_never_run(tmp_path, kind):
    marker = tmp_path / "ran"
    path = str(tmp_path / f"{kind}.pth")
    if kind == "zip_os_system":
        torch.save({"state_dict": {}, "x": _System(f"touch {marker}")}, path)
        assert any("system" in g for g in pickle_globals(path))
    elif kind == "zip_allowed_names":
        _zip_checkpoint(path, _allowed_names_payload(marker))
    else:  # the pre-zip torch format
        torch.save({"x": _System(f"touch {marker}")}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match=rf"{kind}\.pth"):
        load_checkpoint_file(path)
    with pytest.raises(CheckpointError):
        CheckpointLoader.load_checkpoint(path, "cpu")
    assert not marker.exists()
    pickle.loads(_allowed_names_payload(marker))  # the payload is real: plain pickle runs it
    assert marker.exists()


@pytest.mark.parametrize("url", ["http://host/x.pth", "https://host/x.pth", "s3://bucket/x.pth",
                                 "open-mmlab://resnet50"])
def test_remote_checkpoints_are_refused(url):
    with pytest.raises(CheckpointError, match="remote checkpoints are refused.*download"):
        load_checkpoint_file(url)
    with pytest.raises(CheckpointError, match="remote checkpoints are refused"):
        CheckpointLoader.load_checkpoint(url, "cpu")


_RANDOM = [np.random.default_rng(seed).bytes(4096) for seed in range(6)]


@pytest.mark.parametrize("content,match", [(b"", "is empty"), (None, "not a readable torch checkpoint")]
                         + [(b, "not a readable torch checkpoint") for b in _RANDOM])
def test_broken_files_name_the_file(tmp_path, content, match):
    path = tmp_path / "broken.pth"
    if content is None:  # truncated
        torch.save({"w": torch.ones(1000)}, str(path))
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"broken\.pth.*{match}.*Fix"):
        load_checkpoint_file(str(path))
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint_file(str(tmp_path / "missing.pth"))


def test_mismatched_checkpoint_stops_with_keys_named_or_loads_partially(tmp_path):
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    other = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 2), nn.Linear(2, 2))
    path = str(tmp_path / "other.pth")
    torch.save({"state_dict": other.state_dict()}, path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match=r"other\.pth does not fit the model of cfg\.py: 2 unexpected keys "
                                                      r"\(first: \['2\.weight', '2\.bias'\]\); 3 shape mismatches.*Fix"):
        load_model_weights(model, path, "cfg.py")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched
    same = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    torch.save({"state_dict": {"module." + k: v for k, v in same.state_dict().items()}}, path)
    assert load_model_weights(model, path, "cfg.py") == ([], [])
    assert all(torch.equal(same.state_dict()[k], v) for k, v in model.state_dict().items())
    torch.save({"state_dict": {"0.weight": torch.zeros(3, 4)}}, path)
    missing, unexpected = load_model_weights(model, path, "cfg.py", allow_partial=True)
    assert missing == ["0.bias", "1.weight", "1.bias"] and unexpected == []
    assert torch.equal(model[0].weight, torch.zeros(3, 4))


def test_hook_saves_plain_and_stops_a_test_on_a_mismatched_checkpoint(tmp_path):
    from types import SimpleNamespace

    from mmengine.config import Config

    from bevlm.engine.checkpoint import PlainCheckpointHook

    ckpt = _mmengine_like_checkpoint()
    PlainCheckpointHook().before_save_checkpoint(None, ckpt)
    path = str(tmp_path / "saved.pth")
    torch.save(ckpt, path)
    torch.load(path, weights_only=True)  # what the hook wrote loads without any allow-list
    model = nn.Linear(2, 2)
    cfg_file = tmp_path / "x.py"
    cfg_file.write_text(f"load_from = {path!r}\n")
    runner = SimpleNamespace(model=model, _load_from=path, cfg=Config.fromfile(str(cfg_file)))
    PlainCheckpointHook().after_load_checkpoint(runner, load_checkpoint_file(path))  # not strict: training
    with pytest.raises(CheckpointMismatchError, match=r"saved\.pth does not fit the model of .*x\.py: "
                                                      r"2 keys missing.*\['weight', 'bias'\]\); 1 unexpected keys \(first: \['w'\]\)"):
        PlainCheckpointHook(strict_load=True).after_load_checkpoint(runner, load_checkpoint_file(path))


def _save_plain(path, step):
    torch.save(to_plain_checkpoint({"state_dict": {"w": torch.full((2,), float(step))}, "meta": {"iter": step}}), path)


def test_resume_falls_back_to_the_newest_readable_checkpoint(tmp_path):
    from bevlm.engine.checkpoint import find_resumable_checkpoint

    assert find_resumable_checkpoint(str(tmp_path)) is None  # nothing to resume: a fresh start
    for step in (2, 4):
        _save_plain(str(tmp_path / f"iter_{step}.pth"), step)
    (tmp_path / "iter_6.pth").write_bytes((tmp_path / "iter_4.pth").read_bytes()[:200])  # killed mid-save
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "iter_6.pth"))
    skipped = []
    assert find_resumable_checkpoint(str(tmp_path), log=skipped.append) == str(tmp_path / "iter_4.pth")
    assert len(skipped) == 1 and "iter_6.pth" in skipped[0]
    for step in (2, 4):
        (tmp_path / f"iter_{step}.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no readable checkpoint to resume from \(tried .*iter_6.*iter_4.*iter_2"):
        find_resumable_checkpoint(str(tmp_path), log=skipped.append)


def test_safe_checkpoint_hook_writes_atomically_and_deletes_the_old_one_only_after(tmp_path):
    from types import SimpleNamespace

    from mmengine.logging import MessageHub

    from bevlm.engine.checkpoint import SafeCheckpointHook

    class Runner(SimpleNamespace):
        fail = False

        def save_checkpoint(self, out_dir, filename, *args, **kwargs):
            path = os.path.join(out_dir, filename)
            assert filename.startswith(".tmp_")  # never written under its final name
            with open(path, "wb") as f:
                f.write(b"partial")
                if self.fail:
                    raise KeyboardInterrupt  # killed mid-save
            _save_plain(path, int(filename.split("_")[-1].split(".")[0]))

    work = str(tmp_path)
    runner = Runner(work_dir=work, message_hub=MessageHub.get_instance("safe_ckpt_test"))
    hook = SafeCheckpointHook(interval=1, by_epoch=False, max_keep_ckpts=2, out_dir=work)
    hook.out_dir, hook.file_backend = work, __import__("mmengine").fileio.get_file_backend(work)
    hook.keep_ckpt_ids = __import__("collections").deque(maxlen=2)  # as before_train sets it
    for step in (1, 2, 3):
        hook._save_checkpoint_with_step(runner, step, meta={})
    assert sorted(p for p in os.listdir(work) if p.endswith(".pth")) == ["iter_2.pth", "iter_3.pth"]
    assert open(os.path.join(work, "last_checkpoint")).read() == os.path.join(work, "iter_3.pth")
    runner.fail = True
    with pytest.raises(KeyboardInterrupt):
        hook._save_checkpoint_with_step(runner, 4, meta={})
    assert {"iter_2.pth", "iter_3.pth"} <= set(os.listdir(work)) and "iter_4.pth" not in os.listdir(work)
    assert open(os.path.join(work, "last_checkpoint")).read() == os.path.join(work, "iter_3.pth")
    assert load_checkpoint_file(os.path.join(work, "iter_3.pth"))["meta"]["iter"] == 3


class _WithFrozenHead(nn.Module):
    """A model with a part that only a checkpoint gives (like the frozen stage-1 detection head)."""

    def __init__(self) -> None:
        super().__init__()
        self.det_head, self.llm = nn.Linear(2, 3), nn.Linear(2, 2)
        self.weights_from_checkpoint = ("det_head.",)


def test_a_partial_load_must_hold_the_parts_the_model_keeps_frozen_from_it(tmp_path):
    from types import SimpleNamespace

    from mmengine.config import Config

    from bevlm.engine.checkpoint import PlainCheckpointHook, check_required_weights

    model = _WithFrozenHead()
    full = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("det_head.")}
    check_required_weights(model, full, "stage1.pth", "cfg.py")  # the head is there: the LLM may be missing
    check_required_weights(nn.Linear(2, 2), {}, "x.pth", "cfg.py")  # nothing required: nothing checked
    with pytest.raises(CheckpointMismatchError, match=r"stage1\.pth does not hold the det_head .* cfg\.py.*"
                                                      r"2 keys missing \(first: \['det_head\.weight', 'det_head\.bias'\]\)"
                                                      r".*model\.det_head=None model\.perception_text=None"):
        check_required_weights(model, {"llm.weight": torch.zeros(2, 2)}, "stage1.pth", "cfg.py")
    with pytest.raises(CheckpointMismatchError, match=r"1 shape mismatches .*det_head\.weight: checkpoint \(4, 2\)"):
        check_required_weights(model, dict(full, **{"det_head.weight": torch.zeros(4, 2)}), "stage1.pth", "cfg.py")
    # the hook: a training's load_from (not strict) is checked the same way, DDP's "module." prefix read
    cfg_file = tmp_path / "x.py"
    cfg_file.write_text("load_from = None\n")
    runner = SimpleNamespace(model=model, _load_from="stage1.pth", cfg=Config.fromfile(str(cfg_file)))
    hook = PlainCheckpointHook()
    with pytest.raises(CheckpointMismatchError, match="nothing was loaded.*configs/bev_det_pretrain.py"):
        hook.before_train(runner)  # no checkpoint at all: stop before the first iteration
    with pytest.raises(CheckpointMismatchError, match="keys missing"):
        hook.after_load_checkpoint(runner, {"state_dict": {"llm.weight": torch.zeros(2, 2)}})
    hook.after_load_checkpoint(runner, {"state_dict": {f"module.{k}": v for k, v in full.items()}})
    hook.before_train(runner)
    PlainCheckpointHook().before_train(SimpleNamespace(model=nn.Linear(2, 2), cfg=runner.cfg))  # nothing required


def test_the_default_model_requires_the_stage1_detection_head_from_its_checkpoint():
    """The default writes detections as text with a frozen head: its training must load that head."""
    from mmengine.config import Config

    from tests.conftest import REPO

    cfg = Config.fromfile(f"{REPO}/configs/bev_vlm.py")
    assert cfg.model.det_head is not None and cfg.load_from.endswith("bev_det_pretrain/iter_1000.pth")
    for name in ("no-pretrain", "blind", "camera", "camera-384"):  # nothing to load the head from / no BEV
        abl = Config.fromfile(f"{REPO}/configs/ablations/bev_vlm_{name}.py")
        assert abl.model.det_head is None and abl.model.perception_text is None, name
