"""Multi-box shapes of every actor kind, so classes differ by silhouette and colour.

A shape is a list of :class:`Part` boxes and :class:`Decal` planar polygons, in the
actor frame: x forward, y left, z up, origin at the centre of the box's bottom face.
Decals (windows, lamps, lights) are drawn right after their actor when they face
the camera; emissive decals keep full brightness at night.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .agents import Actor

DARK = (25, 25, 28)
GLASS = (45, 58, 70)
SKIN = (200, 160, 130)
TROUSERS = (40, 45, 70)
WHITE = (235, 235, 235)
LAMP_ON = {"red": (255, 40, 30), "yellow": (255, 200, 30), "green": (40, 255, 110)}
LAMP_OFF = {"red": (70, 22, 20), "yellow": (70, 60, 18), "green": (15, 60, 30)}


@dataclass
class Part:
    """Box ``(cx, cy, z0)`` bottom-centre, size ``(l, w, h)``, flat colour."""

    cx: float
    cy: float
    z0: float
    l: float
    w: float
    h: float
    color: tuple
    emissive: bool = False


@dataclass
class Decal:
    """Planar polygon ``points [P, 3]`` with outward ``normal [3]``."""

    points: np.ndarray
    normal: np.ndarray
    color: tuple
    emissive: bool = False


def _rect_x(x: float, y0: float, y1: float, z0: float, z1: float, sign: float) -> Decal:
    """Rectangle on a face of constant x (front: sign=+1, rear: -1)."""
    pts = np.array([[x, y0, z0], [x, y1, z0], [x, y1, z1], [x, y0, z1]])
    return Decal(pts, np.array([sign, 0.0, 0.0]), GLASS)


def _rect_y(y: float, x0: float, x1: float, z0: float, z1: float, sign: float) -> Decal:
    pts = np.array([[x0, y, z0], [x1, y, z0], [x1, y, z1], [x0, y, z1]])
    return Decal(pts, np.array([0.0, sign, 0.0]), GLASS)


def _disc_x(x: float, y: float, z: float, r: float, color, emissive: bool) -> Decal:
    a = np.linspace(0, 2 * np.pi, 10, endpoint=False)
    pts = np.stack([np.full_like(a, x), y + r * np.cos(a), z + r * np.sin(a)], 1)
    return Decal(pts, np.array([1.0, 0.0, 0.0]), color, emissive)


def _wheels(l: float, w: float, r: float = 0.33) -> list:
    return [Part(sx * (l / 2 - 0.85), sy * (w / 2 - 0.14), 0.0, 2 * r, 0.28, 2 * r, DARK)
            for sx in (-1, 1) for sy in (-1, 1)]


def _lights(l: float, w: float, z: float, night: bool) -> list:
    out = []
    for sy in (-1, 1):
        y = sy * (w / 2 - 0.3)
        d = _rect_x(l / 2 + 0.01, y - 0.15, y + 0.15, z, z + 0.12, 1.0)
        d.color, d.emissive = ((255, 245, 210) if night else (200, 200, 190)), night
        out.append(d)
        d = _rect_x(-l / 2 - 0.01, y - 0.15, y + 0.15, z, z + 0.12, -1.0)
        d.color, d.emissive = ((255, 30, 30) if night else (150, 20, 20)), night
        out.append(d)
    return out


def build_shape(actor: Actor, t: int, night: bool) -> tuple:
    """Parts and decals of ``actor`` at recorded time index ``t``.

    Args:
        actor: the actor.
        t: recorded time index (selects the traffic light state).
        night: night lighting (lamps and vehicle lights are lit).

    Returns:
        (parts: list[Part], decals: list[Decal]).
    """
    l, w, h = actor.size
    c = actor.color
    k = actor.kind
    if k == "car":
        hb = {"sedan": 0.95, "SUV": 1.1, "van": 1.2}[actor.body]
        parts = _wheels(l, w) + [Part(0, 0, 0.3, l, w, hb - 0.3, c)]
        if actor.body == "van":
            parts.append(Part(-0.06 * l, 0, hb, 0.86 * l, w * 0.98, h - hb, c))
            dec = [_rect_x(0.37 * l + 0.01, -w * 0.42, w * 0.42, hb + 0.1, h - 0.15, 1.0)]
            dec += [_rect_y(s * w * 0.49 + s * 0.01, -0.4 * l, 0.3 * l, hb + 0.15, h - 0.2, s) for s in (-1, 1)]
        else:
            lc = (0.5 if actor.body == "sedan" else 0.62) * l
            xc = -0.06 * l
            parts += [Part(xc, 0, hb, lc, 0.88 * w, h - hb - 0.07, GLASS), Part(xc, 0, h - 0.07, lc, 0.88 * w, 0.07, c)]
            dec = []
        return parts, dec + _lights(l, w, 0.65, night)
    if k == "truck":
        cargo = (200, 200, 200) if c != (225, 225, 222) else (150, 150, 152)
        parts = _wheels(l, w, 0.45) + [Part(l / 2 - 1.0, 0, 0.45, 2.0, w, 2.5, c),
                                       Part(-1.1, 0, 0.6, l - 2.2, w, h - 0.6, cargo)]
        dec = [_rect_x(l / 2 + 0.01, -w * 0.42, w * 0.42, 1.8, 2.75, 1.0)]
        return parts, dec + _lights(l, w, 0.8, night)
    if k == "bus":
        parts = _wheels(l, w, 0.5) + [Part(0, 0, 0.35, l, w, h - 0.35, c)]
        dec = [_rect_y(s * (w / 2 + 0.01), -l / 2 + 0.6, l / 2 - 0.4, 1.5, 2.7, s) for s in (-1, 1)]
        dec.append(_rect_x(l / 2 + 0.01, -w * 0.45, w * 0.45, 1.3, 2.8, 1.0))
        return parts, dec + _lights(l, w, 0.7, night)
    if k == "pedestrian":
        return [Part(0, 0, 0, 0.28, 0.36, 0.85, TROUSERS), Part(0, 0, 0.85, 0.3, 0.5, 0.62, c),
                Part(0, 0, 1.5, 0.22, 0.2, 0.25, SKIN)], []
    if k == "bicycle":
        frame = [Part(0, 0, 0.05, 1.7, 0.1, 0.85 if actor.rider else 1.0, DARK)]
        if not actor.rider:
            return frame, []
        return frame + [Part(-0.1, 0, 0.9, 0.35, 0.45, 0.55, c), Part(-0.05, 0, 1.45, 0.22, 0.2, 0.25, SKIN)], []
    if k == "motorcycle":
        return [Part(0, 0, 0.2, 2.0, 0.5, 0.6, DARK), Part(-0.2, 0, 0.8, 0.4, 0.5, 0.5, c),
                Part(-0.15, 0, 1.28, 0.26, 0.26, 0.22, DARK)], []
    if k == "barrier":
        return [Part(-l / 2 + (i + 0.5) * l / 4, 0, 0, l / 4, w, h, c if i % 2 == 0 else WHITE) for i in range(4)], []
    if k == "cone":
        return [Part(0, 0, 0, 0.42, 0.42, 0.05, DARK), Part(0, 0, 0.05, 0.3, 0.3, 0.3, c),
                Part(0, 0, 0.35, 0.25, 0.25, 0.14, WHITE), Part(0, 0, 0.49, 0.17, 0.17, 0.26, c)], []
    if k == "traffic_light":
        state = actor.states[t]
        dec = []
        for name, z in (("red", 0.85), ("yellow", 0.55), ("green", 0.25)):
            on = name == state
            dec.append(_disc_x(l / 2 + 0.01, 0.0, z, 0.15, LAMP_ON[name] if on else LAMP_OFF[name], on))
        return [Part(0, 0, 0, l, w, h, c)], dec
    if k == "pole":
        # vertical pole plus an arm that reaches the signal head
        ax, ay = actor.extra["arm_to"]
        x0, y0, yaw = actor.poses[t, :3]
        dx, dy = ax - x0, ay - y0
        lx, ly = np.cos(-yaw) * dx - np.sin(-yaw) * dy, np.sin(-yaw) * dx + np.cos(-yaw) * dy
        n = max(2, int(np.hypot(lx, ly) / 0.6))
        arm = [Part(lx * (i + 0.5) / n, ly * (i + 0.5) / n, 5.6, 0.6, 0.6, 0.12, c) for i in range(n)]
        return [Part(0, 0, 0, l, w, h, c)] + arm, []
    if k == "lamp":
        head = Part(0, 0, h - 0.2, 0.7, 0.35, 0.2, (255, 240, 200) if night else (150, 150, 150), night)
        return [Part(0, 0, 0, l, w, h, c), head], []
    raise ValueError(f"shapes.py: no shape for actor kind {k!r}")
