"""Procedural road layout of one scene: a main road with an intersection and a curve.

Layout (scene-local frame, metres, x east, y north):
  * the main road starts at (0, 0) heading +x, runs straight through an
    intersection centred at arc length ``MAIN_INTERSECTION_S``, keeps straight for
    a while, bends with an arc (left or right) and runs straight again;
  * a straight cross road meets it at right angles at the intersection;
  * each road has 1 or 2 lanes per direction, an optional parking strip and a
    sidewalk on both sides; the layout is drawn into a label raster at 0.1 m
    (grass / sidewalk / asphalt / white paint / yellow paint) that the renderer
    ray-casts into and whose drivable part becomes the nuScenes map mask.

Traffic side: with ``drive_sign = -1`` (drive on the right) a lane of the road's
forward direction lies to the right of the centreline; ``+1`` mirrors everything.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

LANE_WIDTH = 3.5
PARKING_WIDTH = 2.5
SHOULDER = 0.5
SIDEWALK_WIDTH = 3.0
CROSSWALK_WIDTH = 3.0
#: Raster resolution (m / cell). nuScenes map masks are stored at 0.1 m.
MAP_RES = 0.1
#: Raster margin around the ego trajectory (m); the renderer fogs out ground beyond ~120 m.
MAP_MARGIN = 130.0
MAIN_INTERSECTION_S = 250.0

# raster labels
GRASS, SIDEWALK, ASPHALT, WHITE, YELLOW = 0, 1, 2, 3, 4


class Path:
    """A 2D polyline parametrised by arc length.

    Args:
        points: ``[N, 2]`` vertices (m), consecutive vertices distinct.
    """

    def __init__(self, points: np.ndarray):
        self.points = np.asarray(points, dtype=np.float64)
        seg = np.diff(self.points, axis=0)  # [N-1, 2]
        seglen = np.linalg.norm(seg, axis=1)
        self.s = np.concatenate([[0.0], np.cumsum(seglen)])  # [N]
        self.seg_yaw = np.arctan2(seg[:, 1], seg[:, 0])  # [N-1]
        self.length = float(self.s[-1])

    def pose(self, s) -> tuple:
        """Position and heading at arc length ``s`` (array-like; linear extrapolation past the ends).

        Returns:
            (x, y, yaw) arrays shaped like ``s``.
        """
        s = np.asarray(s, dtype=np.float64)
        i = np.clip(np.searchsorted(self.s, s, side="right") - 1, 0, len(self.seg_yaw) - 1)
        yaw = self.seg_yaw[i]
        ds = s - self.s[i]
        x = self.points[i, 0] + ds * np.cos(yaw)
        y = self.points[i, 1] + ds * np.sin(yaw)
        return x, y, yaw

    def offset(self, d: float) -> "Path":
        """Path shifted by ``d`` metres to the left (negative: right) of its direction."""
        # average the unit tangents of neighbouring segments (safe near +-pi)
        tang = np.stack([np.cos(self.seg_yaw), np.sin(self.seg_yaw)], 1)  # [N-1, 2]
        vt = np.concatenate([tang[:1], tang[:-1] + tang[1:], tang[-1:]])
        vt /= np.linalg.norm(vt, axis=1, keepdims=True)
        normal = np.stack([-vt[:, 1], vt[:, 0]], 1)  # left normal [N, 2]
        return Path(self.points + d * normal)

    def reversed(self) -> "Path":
        return Path(self.points[::-1].copy())

    def project(self, xy: np.ndarray) -> tuple:
        """Arc length and signed lateral offset (left +) of points ``[M, 2]`` on this path."""
        a = self.points[:-1]  # [N-1, 2]
        d = np.diff(self.points, axis=0)
        L2 = np.maximum((d ** 2).sum(1), 1e-9)
        rel = xy[:, None, :] - a[None]  # [M, N-1, 2]
        t = np.clip((rel * d[None]).sum(-1) / L2[None], 0.0, 1.0)  # [M, N-1]
        closest = a[None] + t[..., None] * d[None]
        dist = np.linalg.norm(xy[:, None, :] - closest, axis=-1)
        j = dist.argmin(1)
        m = np.arange(len(xy))
        s = self.s[j] + t[m, j] * np.sqrt(L2[j])
        cross = d[j, 0] * rel[m, j, 1] - d[j, 1] * rel[m, j, 0]
        return s, np.sign(cross) * dist[m, j]


def straight(p0, yaw: float, length: float, step: float = 1.0) -> np.ndarray:
    n = max(2, int(np.ceil(length / step)) + 1)
    t = np.linspace(0.0, length, n)
    return np.stack([p0[0] + t * np.cos(yaw), p0[1] + t * np.sin(yaw)], 1)


def arc(p0, yaw: float, radius: float, angle: float, step: float = 1.0) -> np.ndarray:
    """Circular arc starting at ``p0`` with heading ``yaw``; ``angle`` > 0 turns left."""
    n = max(2, int(np.ceil(abs(angle) * radius / step)) + 1)
    a = np.linspace(0.0, angle, n)
    sgn = np.sign(angle)
    cx = p0[0] - sgn * radius * np.sin(yaw)
    cy = p0[1] + sgn * radius * np.cos(yaw)
    ang = yaw - sgn * np.pi / 2 + a
    return np.stack([cx + radius * np.cos(ang), cy + radius * np.sin(ang)], 1)


def join(*parts: np.ndarray) -> np.ndarray:
    out = [parts[0]]
    for p in parts[1:]:
        out.append(p[1:])
    return np.concatenate(out)


def fillet_path(a_pts: np.ndarray, a_end_s: float, b_pts: np.ndarray, b_start_s: float, radius: float) -> Path:
    """Turn from straight lane ``a`` onto straight lane ``b`` with a circular fillet.

    Args:
        a_pts / b_pts: the two lanes as polylines whose relevant parts are straight.
        a_end_s: arc length on ``a`` of the (virtual) corner; b_start_s the same on ``b``.
        radius: fillet radius (m); the tangent points lie ``radius`` before/after the corner
            for a right-angle turn.
    """
    pa, pb = Path(a_pts), Path(b_pts)
    ax, ay, ayaw = pa.pose(a_end_s - radius)
    dyaw = np.arctan2(np.sin(pb.seg_yaw[0] - ayaw), np.cos(pb.seg_yaw[0] - ayaw))
    keep_a = pa.points[pa.s < a_end_s - radius]
    corner_arc = arc((float(ax), float(ay)), float(ayaw), radius, float(dyaw), step=0.5)
    keep_b = pb.points[pb.s > b_start_s + radius]
    return Path(np.concatenate([keep_a, corner_arc, keep_b]))


@dataclass
class Road:
    """One road: centreline, lanes per direction, optional parking strip."""

    center: Path
    n_lanes: int
    parking: bool

    @property
    def road_half(self) -> float:
        return self.n_lanes * LANE_WIDTH + (PARKING_WIDTH if self.parking else SHOULDER)

    @property
    def outer_half(self) -> float:
        return self.road_half + SIDEWALK_WIDTH


@dataclass
class TrafficLightSite:
    """Where one signal head stands and which approach it governs."""

    group: str  # 'main' or 'cross' (signal phase group)
    approach: str  # e.g. 'main+' (traffic on the main road in its forward direction)
    head_xy: tuple
    head_yaw: float  # the head's front face looks along this heading (towards traffic)
    pole_xy: tuple


@dataclass
class Layout:
    """Road network of one scene plus the derived paths used by the traffic simulation."""

    main: Road
    cross: Road
    drive_sign: int
    intersection_xy: tuple
    curve_start_s: float
    lights: list = field(default_factory=list)
    lamps: list = field(default_factory=list)

    # ----------------------------------------------------------------- lanes
    def lane(self, road: str, direction: int, index: int) -> Path:
        """Lane path of ``road`` ('main'|'cross'), travel ``direction`` (+1 along, -1 against)."""
        r = self.main if road == "main" else self.cross
        off = self.drive_sign * direction * (index + 0.5) * LANE_WIDTH
        p = r.center.offset(off)
        return p if direction > 0 else p.reversed()

    def edge_path(self, road: str, side: int, dist: float) -> Path:
        """Path parallel to the centreline at ``side * dist`` (side +1 = left of forward direction)."""
        r = self.main if road == "main" else self.cross
        return r.center.offset(side * dist)

    def stop_s(self, path: Path, road: str) -> float:
        """Arc length on a lane ``path`` of ``road`` where it must stop for the intersection signal."""
        other = self.cross if road == "main" else self.main
        s_c, _ = path.project(np.array([self.intersection_xy]))
        return float(s_c[0]) - other.outer_half - 1.0

    def turn(self, road: str, direction: int, index: int, to_dir: int, to_index: int, radius: float) -> Path:
        """Lane path that turns at the intersection from ``road`` onto the other road."""
        other = "cross" if road == "main" else "main"
        a = self.lane(road, direction, index)
        b = self.lane(other, to_dir, to_index)
        # corner = intersection of the two lane lines
        ix, iy = self.intersection_xy
        sa, la = a.project(np.array([[ix, iy]]))
        sb, lb = b.project(np.array([[ix, iy]]))
        # the corner lies on line a at the lateral offset of lane b (and vice versa)
        corner_a = float(sa[0]) - self.sign_along(b, a) * float(lb[0])
        corner_b = float(sb[0]) - self.sign_along(a, b) * float(la[0])
        return fillet_path(a.points, corner_a, b.points, corner_b, radius)

    @staticmethod
    def sign_along(p: Path, q: Path) -> float:
        """Sign of the left normal of ``p`` projected on the direction of ``q`` (+1/-1)."""
        yp, yq = p.seg_yaw[len(p.seg_yaw) // 2], q.seg_yaw[len(q.seg_yaw) // 2]
        nx, ny = -np.sin(yp), np.cos(yp)
        return float(np.sign(nx * np.cos(yq) + ny * np.sin(yq)))

    # ----------------------------------------------------------------- raster
    def rasterize(self, x0: float, y0: float, width_m: float, height_m: float) -> np.ndarray:
        """Label raster ``[H, W]`` uint8 covering ``[x0, x0+width_m] x [y0, y0+height_m]``.

        Row ``i`` holds y = y0 + (i + 0.5) * MAP_RES (y grows with the row index).
        """
        W, H = int(np.ceil(width_m / MAP_RES)), int(np.ceil(height_m / MAP_RES))
        img = Image.new("L", (W, H), GRASS)
        draw = ImageDraw.Draw(img)

        def px(pts):
            return [((x - x0) / MAP_RES, (y - y0) / MAP_RES) for x, y in pts]

        def line(pts, value, width_m_):
            draw.line(px(pts), fill=value, width=max(1, int(round(width_m_ / MAP_RES))), joint="curve")

        def band(path: Path, half: float, value):
            left, right = path.offset(half).points, path.offset(-half).points
            draw.polygon(px(np.concatenate([left, right[::-1]])), fill=value)

        roads = (self.main, self.cross)
        for r in roads:
            band(r.center, r.outer_half, SIDEWALK)
        for r in roads:
            band(r.center, r.road_half, ASPHALT)
        for r in roads:
            self._markings(r, line)
        # clear the intersection box, then crosswalks and stop lines
        ix, iy = self.intersection_xy
        hx, hy = self.cross.road_half, self.main.road_half
        draw.polygon(px([(ix - hx, iy - hy), (ix + hx, iy - hy), (ix + hx, iy + hy), (ix - hx, iy + hy)]),
                     fill=ASPHALT)
        self._crosswalks(draw, px)
        return np.asarray(img)

    def _markings(self, r: Road, line) -> None:
        ix, iy = self.intersection_xy
        other = self.cross if r is self.main else self.main
        keep_out = other.outer_half + CROSSWALK_WIDTH

        def dashed(path: Path, on: float, off: float, value, w):
            s = 0.0
            while s < path.length:
                ss = np.linspace(s, min(s + on, path.length), 4)
                x, y, _ = path.pose(ss)
                pts = np.stack([x, y], 1)
                if np.min(np.hypot(pts[:, 0] - ix, pts[:, 1] - iy)) > keep_out:
                    line(pts, value, w)
                s += on + off

        dashed(r.center.offset(0.15), 2.0, 0.0, YELLOW, 0.15)
        dashed(r.center.offset(-0.15), 2.0, 0.0, YELLOW, 0.15)
        for side in (-1, 1):
            for k in range(1, r.n_lanes):
                dashed(r.center.offset(side * k * LANE_WIDTH), 3.0, 6.0, WHITE, 0.15)
            dashed(r.center.offset(side * r.n_lanes * LANE_WIDTH), 2.0, 0.0, WHITE, 0.2)

    def _crosswalks(self, draw, px) -> None:
        ix, iy = self.intersection_xy
        for r, other in ((self.main, self.cross), (self.cross, self.main)):
            s_c, _ = r.center.project(np.array([[ix, iy]]))
            for sgn in (-1, 1):
                d0 = other.road_half + 0.5
                x, y, yaw = r.center.pose(float(s_c[0]) + sgn * (d0 + CROSSWALK_WIDTH / 2))
                c, s = np.cos(yaw), np.sin(yaw)
                # zebra stripes parallel to the road, spanning its asphalt width
                k = -r.road_half + 0.25
                while k < r.road_half - 0.25:
                    cx, cy = x - s * k, y + c * k
                    hl, hw = CROSSWALK_WIDTH / 2, 0.25
                    quad = [(cx + c * hl - s * hw, cy + s * hl + c * hw), (cx - c * hl - s * hw, cy - s * hl + c * hw),
                            (cx - c * hl + s * hw, cy - s * hl - c * hw), (cx + c * hl + s * hw, cy + s * hl - c * hw)]
                    draw.polygon(px(quad), fill=WHITE)
                    k += 1.0
                # stop line across the approaching lanes (the lanes heading towards the centre)
                xs, ys, _ = r.center.pose(float(s_c[0]) + sgn * (d0 + CROSSWALK_WIDTH + 0.6))
                lat_dir = -sgn * self.drive_sign  # side of the approaching lanes
                a = (xs, ys)
                b = (xs - s * lat_dir * r.n_lanes * LANE_WIDTH, ys + c * lat_dir * r.n_lanes * LANE_WIDTH)
                draw.line(px([a, b]), fill=WHITE, width=max(1, int(0.4 / MAP_RES)))


def build_layout(rng: np.random.Generator, drive_sign: int) -> Layout:
    """Sample one scene layout.

    Args:
        rng: the scene's random generator.
        drive_sign: -1 to drive on the right, +1 to drive on the left.

    Returns:
        A :class:`Layout` (roads, intersection, traffic light sites, street lamps).
    """
    main_lanes = int(rng.choice([1, 2], p=[0.45, 0.55]))
    cross_lanes = int(rng.choice([1, 2], p=[0.6, 0.4]))
    main_parking, cross_parking = bool(rng.random() < 0.6), bool(rng.random() < 0.5)
    cross_half = cross_lanes * LANE_WIDTH + (PARKING_WIDTH if cross_parking else SHOULDER) + SIDEWALK_WIDTH
    straight_after = float(cross_half + rng.uniform(45.0, 70.0))
    radius = float(rng.uniform(45.0, 110.0))
    angle = float(np.deg2rad(rng.uniform(25.0, 70.0)) * rng.choice([-1.0, 1.0]))
    a = straight((0.0, 0.0), 0.0, MAIN_INTERSECTION_S + straight_after)
    b = arc(tuple(a[-1]), 0.0, radius, angle)
    c = straight(tuple(b[-1]), angle, 300.0)
    main = Road(Path(join(a, b, c)), main_lanes, main_parking)
    ix, iy = MAIN_INTERSECTION_S, 0.0
    cross = Road(Path(straight((ix, iy - 250.0), np.pi / 2, 500.0)), cross_lanes, cross_parking)
    lay = Layout(main, cross, drive_sign, (ix, iy), MAIN_INTERSECTION_S + straight_after)

    # one signal head per approach, on the far side of the intersection, hanging over
    # the outer lane of the approaching traffic
    for road, group in (("main", "main"), ("cross", "cross")):
        r = main if road == "main" else cross
        other = cross if road == "main" else main
        for direction in (1, -1):
            lane = lay.lane(road, direction, 0)
            s_c, _ = lane.project(np.array([[ix, iy]]))
            s_far = float(s_c[0]) + other.outer_half + 1.0
            x, y, yaw = (float(v) for v in lane.pose(s_far))
            # outward (kerb side) unit vector of this lane
            side = -1 if drive_sign < 0 else 1
            nx, ny = -np.sin(yaw) * side, np.cos(yaw) * side
            over = (r.n_lanes - 0.5) * LANE_WIDTH + 0.5
            head = (x + nx * 0.6 * LANE_WIDTH * (r.n_lanes - 1), y + ny * 0.6 * LANE_WIDTH * (r.n_lanes - 1))
            pole = (x + nx * (over + (PARKING_WIDTH if r.parking else SHOULDER) - 0.2),
                    y + ny * (over + (PARKING_WIDTH if r.parking else SHOULDER) - 0.2))
            lay.lights.append(TrafficLightSite(group, f"{road}{'+' if direction > 0 else '-'}",
                                               head, float(yaw + np.pi), pole))
    # street lamps along the main road sidewalks every ~30 m
    for side in (-1, 1):
        p = main.center.offset(side * (main.road_half + 0.6))
        for s in np.arange(10.0 + 15.0 * (side > 0), p.length, 30.0):
            x, y, _ = p.pose(s)
            if np.hypot(x - ix, y - iy) > cross_half + 4:
                lay.lamps.append((float(x), float(y)))
    return lay
