"""Camera renderer of the mini world (numpy + PIL, CPU).

Per camera and key frame:
  1. sky: a vertical gradient on the elevation of each pixel ray;
  2. ground: every pixel ray that points down is intersected with the plane z=0
     (ray casting; the hit points are fixed in the ego frame for a level rig, so
     they are precomputed once), moved to the scene frame with the ego pose and
     looked up in the label raster of :mod:`.layout`; colours fade to haze with
     distance;
  3. objects: multi-box shapes drawn face by face with the painter's algorithm
     (actors far to near, faces far to near inside an actor, back faces culled,
     polygons clipped at the near plane), written at the same time into an
     ID buffer. Visible pixels per actor come from the final ID buffer; the
     unoccluded pixel count from drawing the actor alone into a scratch mask, so
     ``visible / unoccluded`` is the visible fraction used to reject occluded
     key objects.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..structures import CAMERA_NAMES, camera_rig
from .layout import MAP_RES, ASPHALT, GRASS, SIDEWALK, WHITE, YELLOW
from .shapes import build_shape

NEAR = 0.1
MAX_DRAW_DIST = 110.0
FOG_START, FOG_END = 45.0, 125.0
SUN = np.array([0.35, 0.45, 0.82]) / np.linalg.norm([0.35, 0.45, 0.82])

# box faces as corner indices (corner bits: x sign, y sign, z sign) and outward normals
_CORNERS = np.array([[sx, sy, sz] for sx in (-0.5, 0.5) for sy in (-0.5, 0.5) for sz in (-0.5, 0.5)])
_FACES = (((4, 5, 7, 6), (1, 0, 0)), ((0, 2, 3, 1), (-1, 0, 0)), ((2, 6, 7, 3), (0, 1, 0)),
          ((0, 1, 5, 4), (0, -1, 0)), ((1, 3, 7, 5), (0, 0, 1)), ((0, 4, 6, 2), (0, 0, -1)))

_PALETTE = {
    "day": {GRASS: (78, 112, 58), SIDEWALK: (158, 154, 146), ASPHALT: (82, 84, 88), WHITE: (228, 228, 224),
            YELLOW: (222, 180, 50), "sky_lo": (205, 218, 232), "sky_hi": (105, 148, 208), "haze": (196, 206, 216),
            "ambient": 0.55, "diffuse": 0.5},
    "night": {GRASS: (14, 20, 12), SIDEWALK: (34, 33, 32), ASPHALT: (20, 21, 23), WHITE: (70, 70, 68),
              YELLOW: (68, 56, 18), "sky_lo": (22, 24, 38), "sky_hi": (4, 5, 12), "haze": (18, 19, 28),
              "ambient": 0.22, "diffuse": 0.08},
}


@dataclass
class Camera:
    """One camera of the rig with its precomputed sky and ground rays."""

    name: str
    K: np.ndarray  # [3, 3]
    cam2ego: np.ndarray  # [4, 4]
    width: int
    height: int
    ground: np.ndarray  # [H, W] bool, ray hits the ground within range
    ground_ego: np.ndarray  # [G, 2] hit points in the ego frame
    ground_dist: np.ndarray  # [G]
    sky_t: np.ndarray  # [H, W] 0 at the horizon .. 1 up


def build_cameras(image_size: tuple, rig: str = "nuscenes") -> list:
    """Cameras of the rig ``rig`` (:data:`bevlm.structures.CAMERA_RIGS`) at ``image_size`` = (W, H)."""
    W, H = image_size
    rig = camera_rig(rig, image_size)
    cams = []
    for name in CAMERA_NAMES:
        K, T = rig[name]["cam2img"], rig[name]["cam2ego"]
        u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
        pix = np.stack([u, v, np.ones_like(u)], -1)  # [H, W, 3]
        d_cam = pix @ np.linalg.inv(K).T
        d_ego = d_cam @ T[:3, :3].T  # [H, W, 3]
        d_ego /= np.linalg.norm(d_ego, axis=-1, keepdims=True)
        t = -T[2, 3] / np.minimum(d_ego[..., 2], -1e-6)
        hit = T[:3, 3][None, None, :2] + t[..., None] * d_ego[..., :2]
        ground = (d_ego[..., 2] < -1e-3) & (t < FOG_END * 1.2)
        dist = np.linalg.norm(hit, axis=-1)
        cams.append(Camera(name, K, T, W, H, ground, hit[ground], dist[ground],
                           np.clip(d_ego[..., 2] * 2.5, 0.0, 1.0)))
    return cams


@dataclass
class GroundMap:
    """Label raster of the scene plus a coarse texture noise, origin ``(x0, y0)``."""

    labels: np.ndarray  # [Hm, Wm] uint8
    x0: float
    y0: float
    noise: np.ndarray  # [Hm // 8 + 1, Wm // 8 + 1] float
    lamps: np.ndarray  # [L, 2] street lamp positions (night light pools)


def _box_corners(cx, cy, cz, l, w, h, yaw) -> np.ndarray:
    """8 corners ``[8, 3]`` of a yawed box centred at (cx, cy, cz)."""
    local = _CORNERS * np.array([l, w, h])
    c, s = np.cos(yaw), np.sin(yaw)
    R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    return local @ R.T + np.array([cx, cy, cz])


def _clip_near(poly: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman clip of a camera-frame polygon ``[P, 3]`` against z >= NEAR."""
    out = []
    n = len(poly)
    for i in range(n):
        a, b = poly[i], poly[(i + 1) % n]
        ina, inb = a[2] >= NEAR, b[2] >= NEAR
        if ina:
            out.append(a)
        if ina != inb:
            t = (NEAR - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out)


def _shade(color, normal_world: np.ndarray, pal: dict, fog: float, emissive: bool) -> tuple:
    col = np.asarray(color, dtype=np.float64)
    if not emissive:
        lam = max(0.0, float(normal_world @ SUN))
        col = col * (pal["ambient"] + pal["diffuse"] * lam + (0.08 if normal_world[2] > 0.5 else 0.0))
    col = col * (1 - fog) + np.asarray(pal["haze"], dtype=np.float64) * fog
    return tuple(int(v) for v in np.clip(col, 0, 255))


class Renderer:
    """Renders the six cameras of one key frame.

    Args:
        image_size: (W, H) of the output images.
        lighting: 'day' | 'night'.
        rig: camera rig name (:data:`bevlm.structures.CAMERA_RIGS`).
    """

    def __init__(self, image_size: tuple, lighting: str, rig: str = "nuscenes"):
        self.cams = build_cameras(image_size, rig)
        self.pal = _PALETTE[lighting]
        self.night = lighting == "night"
        lut = np.zeros((8, 3))
        for k in (GRASS, SIDEWALK, ASPHALT, WHITE, YELLOW):
            lut[k] = self.pal[k]
        self.lut = lut
        lo, hi = np.array(self.pal["sky_lo"], float), np.array(self.pal["sky_hi"], float)
        self.sky = [lo[None, None] * (1 - c.sky_t[..., None]) + hi[None, None] * c.sky_t[..., None]
                    for c in self.cams]
        # headlight pool on the ground ahead of the ego (ego frame, static)
        self.headlight = []
        for c in self.cams:
            x, y = c.ground_ego[:, 0], c.ground_ego[:, 1]
            pool = np.where((x > 2.0) & (np.abs(y) < 0.45 * x + 1.0), np.exp(-x / 22.0), 0.0)
            self.headlight.append(pool * 1.6)

    def _ground(self, cam_i: int, gm: GroundMap, ego_pose: np.ndarray) -> np.ndarray:
        cam = self.cams[cam_i]
        ex, ey, eyaw = ego_pose[:3]
        c, s = np.cos(eyaw), np.sin(eyaw)
        gx = ex + c * cam.ground_ego[:, 0] - s * cam.ground_ego[:, 1]
        gy = ey + s * cam.ground_ego[:, 0] + c * cam.ground_ego[:, 1]
        ix = ((gx - gm.x0) / MAP_RES).astype(np.int64)
        iy = ((gy - gm.y0) / MAP_RES).astype(np.int64)
        Hm, Wm = gm.labels.shape
        inside = (ix >= 0) & (ix < Wm) & (iy >= 0) & (iy < Hm)
        lab = np.full(len(gx), GRASS, dtype=np.int64)
        lab[inside] = gm.labels[iy[inside], ix[inside]]
        col = self.lut[lab]
        noise = np.zeros(len(gx))
        noise[inside] = gm.noise[iy[inside] // 8, ix[inside] // 8]
        col = col * (1.0 + noise[:, None])
        if self.night:
            light = self.headlight[cam_i].copy()
            if len(gm.lamps):
                near = gm.lamps[np.hypot(gm.lamps[:, 0] - ex, gm.lamps[:, 1] - ey) < 60.0]
                for lx, ly in near:
                    light += 2.2 * np.exp(-((gx - lx) ** 2 + (gy - ly) ** 2) / (2 * 5.0 ** 2))
            col = col * (1.0 + light[:, None] * np.array([1.0, 0.92, 0.75]))
        fog = np.clip((cam.ground_dist - FOG_START) / (FOG_END - FOG_START), 0.0, 1.0)[:, None]
        return col * (1 - fog) + np.asarray(self.pal["haze"], float)[None] * fog

    def render(self, gm: GroundMap, ego_pose: np.ndarray, actors: list, t: int) -> tuple:
        """Render all cameras.

        Args:
            gm: the scene's ground map.
            ego_pose: (x, y, yaw, speed) of the ego in the scene frame.
            actors: every :class:`~bevlm.world.agents.Actor` of the scene.
            t: recorded time index.

        Returns:
            (images: list of ``[H, W, 3]`` uint8, stats: list per camera of
            ``{uid: (visible_px, unoccluded_px)}``).
        """
        ex, ey, eyaw = ego_pose[:3]
        c, s = np.cos(eyaw), np.sin(eyaw)
        ego2scene = np.array([[c, -s, 0, ex], [s, c, 0, ey], [0, 0, 1, 0], [0, 0, 0, 1.0]])
        scene2ego = np.linalg.inv(ego2scene)
        # world-frame geometry of every nearby actor (computed once for all cameras)
        geo = []
        for a in actors:
            x, y, yaw = a.poses[t, :3]
            if np.hypot(x - ex, y - ey) > MAX_DRAW_DIST:
                continue
            parts, decals = build_shape(a, t, self.night)
            cy_, sy_ = np.cos(yaw), np.sin(yaw)
            Rz = np.array([[cy_, -sy_, 0], [sy_, cy_, 0], [0, 0, 1.0]])
            origin = np.array([x, y, a.z_bottom])
            boxes = [(_box_corners(*(Rz @ np.array([p.cx, p.cy, 0.0]) + origin)[:2],
                                   a.z_bottom + p.z0 + p.h / 2, p.l, p.w, p.h, yaw), p.color, p.emissive)
                     for p in parts]
            decs = [(d.points @ Rz.T + origin, Rz @ d.normal, d.color, d.emissive) for d in decals]
            geo.append((a, np.array([x, y, a.z_bottom + a.size[2] / 2]), boxes, decs))

        images, stats = [], []
        for ci, cam in enumerate(self.cams):
            img = self.sky[ci].copy()
            img[cam.ground] = self._ground(ci, gm, ego_pose)
            pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
            draw = ImageDraw.Draw(pil)
            ids = Image.new("I", (cam.width, cam.height), 0)
            draw_id = ImageDraw.Draw(ids)
            scratch = Image.new("L", (cam.width, cam.height), 0)
            draw_s = ImageDraw.Draw(scratch)
            scene2cam = np.linalg.inv(cam.cam2ego) @ scene2ego  # [4, 4]
            R, tr = scene2cam[:3, :3], scene2cam[:3, 3]
            cam_pos = ego2scene[:3, :3] @ cam.cam2ego[:3, 3] + ego2scene[:3, 3]
            order = []
            for g in geo:
                pc = R @ g[1] + tr
                rad = 0.5 * float(np.linalg.norm(g[0].size)) + 6.0
                if pc[2] < -rad:
                    continue
                order.append((float(np.linalg.norm(g[1] - cam_pos)), g))
            order.sort(key=lambda o: -o[0])
            unocc = {}
            for dist, (a, _, boxes, decs) in order:
                fog = float(np.clip((dist - FOG_START) / (FOG_END - FOG_START), 0.0, 1.0))
                faces = []
                for corners, color, emissive in boxes:
                    cc = corners @ R.T + tr  # [8, 3] camera frame
                    if (cc[:, 2] < NEAR).all():
                        continue
                    rot = self._rot(corners)
                    for idx, nrm in _FACES:
                        poly = cc[list(idx)]
                        n_world = rot @ np.array(nrm, float)
                        center = poly.mean(0)
                        if (R @ n_world) @ center >= 0:  # back face
                            continue
                        faces.append((float(np.linalg.norm(center)), poly, n_world, color, emissive))
                for d_pts, d_n, d_col, d_em in decs:
                    pc = d_pts @ R.T + tr
                    if (R @ d_n) @ pc.mean(0) >= 0:
                        continue
                    faces.append((None, pc, d_n, d_col, d_em))
                # faces far to near, decals last (they lie on the outer surface)
                box_faces = sorted([f for f in faces if f[0] is not None], key=lambda f: -f[0])
                drawn = False
                bbox = [cam.width, cam.height, 0, 0]
                for _, poly, n_world, color, emissive in box_faces + [f for f in faces if f[0] is None]:
                    if (poly[:, 2] < NEAR).any():
                        poly = _clip_near(poly)
                        if len(poly) < 3:
                            continue
                    uv = poly[:, :2] / poly[:, 2:3] * np.array([cam.K[0, 0], cam.K[1, 1]]) + cam.K[:2, 2]
                    if (uv[:, 0].max() < 0 or uv[:, 0].min() >= cam.width or uv[:, 1].max() < 0
                            or uv[:, 1].min() >= cam.height):
                        continue
                    pts = [tuple(p) for p in uv]
                    fill = _shade(color, n_world, self.pal, fog, emissive)
                    draw.polygon(pts, fill=fill)
                    if a.annotated:
                        draw_id.polygon(pts, fill=a.uid + 1)
                        draw_s.polygon(pts, fill=255)
                        bbox = [min(bbox[0], uv[:, 0].min()), min(bbox[1], uv[:, 1].min()),
                                max(bbox[2], uv[:, 0].max()), max(bbox[3], uv[:, 1].max())]
                        drawn = True
                    else:
                        draw_id.polygon(pts, fill=0)
                if drawn:
                    x0, y0 = max(0, int(bbox[0]) - 1), max(0, int(bbox[1]) - 1)
                    x1, y1 = min(cam.width, int(bbox[2]) + 2), min(cam.height, int(bbox[3]) + 2)
                    region = np.asarray(scratch)[y0:y1, x0:x1]
                    unocc[a.uid] = int((region > 0).sum())
                    draw_s.rectangle([x0, y0, x1, y1], fill=0)
            counts = np.bincount(np.asarray(ids).ravel(), minlength=1)
            stats.append({uid: (int(counts[uid + 1]) if uid + 1 < len(counts) else 0, n)
                          for uid, n in unocc.items() if n > 0})
            images.append(np.asarray(pil))
        return images, stats

    @staticmethod
    def _rot(corners: np.ndarray) -> np.ndarray:
        """Rotation of a box from its corners (columns: box x, y, z axes in the world)."""
        ex = corners[4] - corners[0]
        ey = corners[2] - corners[0]
        ez = corners[1] - corners[0]
        return np.stack([ex / np.linalg.norm(ex), ey / np.linalg.norm(ey), ez / np.linalg.norm(ez)], 1)
