"""Streaming temporal state: the previous BEV of each scene, kept between test frames."""
from __future__ import annotations

import torch

from bevlm.structures import EgoMotion


class TemporalBEVCache:
    """Previous BEV per scene for streaming inference (BEVFormer's ``prev_bev``, made explicit).

    A sample may reuse the cached BEV only if the cache holds the BEV of *its* previous key
    frame (``prev_token``); anything else (a new scene, a skipped frame, a shuffled order) falls
    back to no history. Correct with batch > 1 and several scenes interleaved.
    """

    def __init__(self, max_scenes: int = 64) -> None:
        self.max_scenes = max_scenes
        self._store: dict[str, tuple[str, torch.Tensor]] = {}

    def reset(self) -> None:
        self._store.clear()

    def latest(self, scene_token: str) -> tuple[str, torch.Tensor] | None:
        """``(frame_token, bev [L, C])`` stored last for the scene, or None."""
        return self._store.get(scene_token)

    def holds(self, scene_token: str, frame_token: str) -> bool:
        """Whether the cache holds the BEV of ``frame_token`` as its scene's latest."""
        hit = self._store.get(scene_token)
        return hit is not None and bool(frame_token) and hit[0] == frame_token

    def lookup(self, scene_tokens: list[str], prev_tokens: list[str],
               motions: list[EgoMotion]) -> tuple[torch.Tensor | None, EgoMotion]:
        """Previous BEVs ``[B, L, C]`` (zeros where absent; None if no sample has one) and the
        batched motion whose ``valid`` marks the samples that have their previous BEV."""
        hits = []
        for scene, prev_tok, motion in zip(scene_tokens, prev_tokens, motions):
            hit = self._store.get(scene)
            ok = hit is not None and bool(prev_tok) and hit[0] == prev_tok and bool(motion.valid)
            hits.append(hit[1] if ok else None)
        batched = EgoMotion.stack(motions)
        batched.valid = torch.tensor([h is not None for h in hits])
        found = [h for h in hits if h is not None]
        if not found:
            return None, batched
        return torch.stack([h if h is not None else torch.zeros_like(found[0]) for h in hits]), batched

    def update(self, scene_tokens: list[str], frame_tokens: list[str], bev: torch.Tensor) -> None:
        """Store ``bev [B, L, C]`` as the latest BEV of each sample's scene."""
        for b, (scene, tok) in enumerate(zip(scene_tokens, frame_tokens)):
            self._store.pop(scene, None)
            self._store[scene] = (tok, bev[b].detach())
        while len(self._store) > self.max_scenes:  # drop the least recently updated scene
            self._store.pop(next(iter(self._store)))
