"""tools/grad_sources.py: hand-checked summaries, and per-loss gradients that add up to the total's."""
import math

import pytest
import torch

from tools.grad_sources import group_of, summarise


def test_group_of():
    assert group_of("llm.lm.base_model.model.layers.0.q_proj.lora_A.default.weight") == "llm.lora"
    assert group_of("llm.lm.model.embed_tokens.weight") == "llm.other"
    assert group_of("projector.0.weight") == "projector" and group_of("traj_head.queries") == "traj_head"


def test_summarise_hand_computed():
    grads = {"loss_lm": {"llm.x.lora_A.w": torch.tensor([3.0, 0.0]), "projector.w": torch.tensor([1.0])},
             "loss_traj": {"llm.x.lora_A.w": torch.tensor([0.0, 4.0]), "projector.w": torch.tensor([-2.0]),
                           "traj_head.w": torch.tensor([2.0, 2.0])}}
    out = summarise(grads, ("loss_lm", "loss_traj"))
    lora = out["llm.lora"]
    assert lora["norm"] == {"loss_lm": 3.0, "loss_traj": 4.0} and lora["cosine"] == 0.0
    assert lora["share"]["loss_lm"] == pytest.approx(9 / 25) and lora["share"]["loss_traj"] == pytest.approx(16 / 25)
    assert out["projector"]["cosine"] == pytest.approx(-1.0)
    assert out["traj_head"]["norm"] == {"loss_traj": pytest.approx(math.sqrt(8))} and "cosine" not in out["traj_head"]


def test_loss_gradients_add_up(monkeypatch):
    """The per-loss gradients of a small model sum to the gradient of the summed loss (and frames add)."""
    from tools.grad_sources import loss_gradients

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.enc = torch.nn.Linear(3, 4)
            self.head = torch.nn.Linear(4, 1)

        def data_preprocessor(self, batch, training):
            return {"x": torch.stack(batch)}

        def forward(self, x, mode):
            h = self.enc(x)
            return {"loss_a": h.pow(2).mean(), "loss_b": self.head(h).abs().mean(), "acc": h.detach().mean()}

    model = Tiny()
    frames = [torch.randn(3) for _ in range(3)]
    grads, values = loss_gradients(model, frames, [0, 2])
    assert set(grads) == {"loss_a", "loss_b"} and "head.weight" not in grads["loss_a"]
    model.zero_grad()
    for i in (0, 2):
        out = model(torch.stack([frames[i]]), "loss")
        (out["loss_a"] + out["loss_b"]).backward()
    for name, p in model.named_parameters():
        total = sum(g[name] for g in grads.values() if name in g)
        assert torch.allclose(total, p.grad, atol=1e-6), name
    assert values["loss_a"] == pytest.approx(sum(float(model(torch.stack([frames[i]]), "loss")["loss_a"].detach())
                                                 for i in (0, 2)) / 2)
