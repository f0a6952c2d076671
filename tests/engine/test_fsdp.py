"""FSDP on CPU (gloo, 2 processes): one optimiser step with gradient clipping equals the
single-process step on the whole batch, and the wrap policy shards one unit per decoder block."""
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from bevlm.engine.dist import FSDPOptimWrapper, decoder_layer_wrap_policy, prepare_fsdp

pytestmark = pytest.mark.slow

MAX_NORM = 0.05  # far below the gradient norm: the clipping coefficient matters


class ToyDecoderLayer(nn.Module):
    def __init__(self, dims: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dims, 2 * dims), nn.Linear(2 * dims, dims)

    def forward(self, x):
        return x + self.fc2(torch.tanh(self.fc1(x)))


class ToyLM(nn.Module):
    """A frozen input projection (like a LoRA base) and two trainable decoder blocks."""

    def __init__(self, dims: int = 16) -> None:
        super().__init__()
        self.inp = nn.Linear(dims, dims)
        self.inp.requires_grad_(False)
        self.layers = nn.ModuleList([ToyDecoderLayer(dims) for _ in range(2)])
        self.out = nn.Linear(dims, 1)

    def forward(self, x):
        h = self.inp(x)
        for layer in self.layers:
            h = layer(h)
        return self.out(h).pow(2).mean()


def _reference(x_all):
    torch.manual_seed(0)
    model = ToyLM()
    loss = sum(model(x) for x in x_all) / len(x_all)  # DDP / FSDP average the ranks' gradients
    loss.backward()
    params = [p for p in model.parameters() if p.requires_grad]
    norm = float(torch.nn.utils.clip_grad_norm_(params, MAX_NORM))
    torch.optim.SGD(params, lr=0.5).step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}, norm


def _worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from mmengine.logging import MessageHub
    from mmengine.model.wrappers import MMFullyShardedDataParallel
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    MessageHub.get_instance("fsdp_test")
    x_all = [torch.randn(4, 16, generator=torch.Generator().manual_seed(10 + r)) for r in range(2)]
    ref, ref_norm = _reference(x_all)
    torch.manual_seed(0)
    model = MMFullyShardedDataParallel(ToyLM(), device_id="cpu", auto_wrap_policy=decoder_layer_wrap_policy,
                                       use_orig_params=True)
    units = sum(isinstance(m, FSDP) for m in model.modules())
    params = [p for p in model.parameters() if p.requires_grad]
    wrapper = FSDPOptimWrapper(torch.optim.SGD(params, lr=0.5), clip_grad=dict(max_norm=MAX_NORM))
    wrapper.update_params(model(x_all[rank]))
    norm = float(MessageHub.get_current_instance().get_scalar("train/grad_norm").current())
    with FSDP.summon_full_params(model, writeback=False):
        got = {n.replace("_fsdp_wrapped_module.", ""): p.detach().clone() for n, p in model.named_parameters()}
    err = max(float((got[n] - ref[n]).abs().max()) for n in ref)
    if rank == 0:
        with open(out, "w") as f:
            json.dump(dict(units=units, err=err, norm=norm, ref_norm=ref_norm, keys_match=set(got) == set(ref)), f)
    dist.barrier()  # neither rank tears down while the other still talks
    dist.destroy_process_group()
    # Leave without running C++ static destructors: gloo's background threads can still be
    # joinable at interpreter exit, and their destructor then aborts the process ("terminate
    # called without an active exception") after the work is done and the result written.
    os._exit(0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fsdp_step_with_clipping_equals_the_single_process_step(tmp_path):
    out = str(tmp_path / "fsdp.json")
    mp.start_processes(_worker, args=(_free_port(), out), nprocs=2, join=True, start_method="spawn")
    with open(out) as f:
        r = json.load(f)
    assert r["units"] == 3  # the root and one unit per decoder block
    assert r["keys_match"]
    assert r["ref_norm"] > 10 * MAX_NORM  # the clipping is active
    assert abs(r["norm"] - r["ref_norm"]) <= 1e-5 * r["ref_norm"]  # the norm of the whole gradient
    assert r["err"] <= 1e-6, r


def test_prepare_fsdp_switches_the_optim_wrapper_or_names_the_fix():
    from mmengine.config import Config

    cfg = Config(dict(strategy=dict(type="FSDPStrategy"), optim_wrapper=dict(type="AmpOptimWrapper")))
    assert prepare_fsdp(cfg) and cfg.optim_wrapper.type == "FSDPAmpOptimWrapper"
    cfg = Config(dict(optim_wrapper=dict(type="OptimWrapper")))
    assert not prepare_fsdp(cfg) and cfg.optim_wrapper.type == "OptimWrapper"  # no strategy: untouched
    cfg = Config(dict(strategy=dict(type="FSDPStrategy"), optim_wrapper=dict(type="MyWrapper")))
    with pytest.raises(ValueError, match="OptimWrapper or AmpOptimWrapper"):
        prepare_fsdp(cfg)
    cfg = Config(dict(strategy=dict(type="FSDPStrategy"), optim_wrapper=dict(type="OptimWrapper"),
                      model=dict(llm=dict(torch_dtype="bfloat16"))))
    with pytest.raises(ValueError, match="torch_dtype='float32'"):
        prepare_fsdp(cfg)
    assert decoder_layer_wrap_policy(ToyDecoderLayer(4), recurse=False, nonwrapped_numel=0)
    assert not decoder_layer_wrap_policy(nn.Linear(4, 4), recurse=False, nonwrapped_numel=0)


@pytest.mark.parametrize("norm_type", [2.0, float("inf")])
def test_sharded_clip_equals_torch_clip_in_one_process(norm_type):
    from bevlm.engine.dist import sharded_clip_grad_norm_

    torch.manual_seed(0)
    a = [nn.Parameter(torch.randn(5)) for _ in range(3)]
    b = [nn.Parameter(p.detach().clone()) for p in a]
    for p, q in zip(a, b):
        p.grad = torch.randn(5)
        q.grad = p.grad.clone()
    got, ref = sharded_clip_grad_norm_(a, 0.1, norm_type), torch.nn.utils.clip_grad_norm_(b, 0.1, norm_type)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=0)
    for p, q in zip(a, b):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-8)
