"""Generate the mini world: nuScenes-format database, rendered cameras and DriveLM QA.

Output under ``out_dir``::

    v1.0-mini/*.json                    13 nuScenes tables
    samples/CAM_*/<log>__CAM_X__<ts>.jpg camera key frames; samples/LIDAR_TOP/*.pcd.bin (a few points)
    maps/<token>.png                    drivable-area mask per scene (0.1 m / px)
    drivelm_train.json, drivelm_val.json DriveLM v1.1 QA (split by scene)
    world_gt.json                       extra ground truth per sample token (ego future, key objects, ...)
    world_summary.json                  counts, seconds, bytes

Frames: global = scene-local coordinates minus the map origin, so every map pixel
is at non-negative coordinates. The ego origin is the simulated vehicle position
on the ground; ego z = 0.
"""
from __future__ import annotations

import io
import logging
import os
import time

import numpy as np
from PIL import Image

from ..structures import CAMERA_NAMES
from .agents import simulate_scene
from .config import (LIDAR_EXTRINSICS, ANNOTATION_RANGE, FUTURE_STEPS, KEY_LIGHT_RANGE, KEY_MIN_AREA_FRACTION,
                     KEY_MIN_VISIBLE_FRACTION, KEY_RANGE, KEYFRAME_US, MAX_KEY_AGENTS, MIN_VISIBLE_AREA_FRACTION,
                     MOVING_SPEED, PERCEPTION_RANGE, WorldConfig, direction_of)
from .drivelm_qa import FrameFacts, KeyObject, ObjFacts, build_qa, in_moving_direction
from .layout import ASPHALT, MAP_MARGIN, WHITE, YELLOW, build_layout
from .nuscenes_writer import (NuScenesTables, make_token, matrix_quaternion, visibility_token, write_bytes_atomic,
                              write_json_atomic, yaw_quaternion)
from .render import GroundMap, Renderer, _box_corners

logger = logging.getLogger(__name__)
AGENT_CATEGORIES = ("vehicle.car", "vehicle.truck", "vehicle.bus.rigid", "human.pedestrian.adult",
                    "vehicle.bicycle", "vehicle.motorcycle")
BASE_TIMESTAMP_US = 1_700_000_000_000_000


def _wrap(a):
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def _attribute(a, speed: float) -> str | None:
    if a.category.startswith("vehicle.") and a.kind in ("bicycle", "motorcycle"):
        return "cycle.with_rider" if a.rider else "cycle.without_rider"
    if a.category.startswith("vehicle."):
        return "vehicle.parked" if a.parked else ("vehicle.moving" if speed >= MOVING_SPEED else "vehicle.stopped")
    if a.category.startswith("human."):
        return "pedestrian.moving" if speed >= MOVING_SPEED else "pedestrian.standing"
    if a.kind == "traffic_light":
        return None  # set per frame from the state
    return None


class _SceneWriter:
    """Generates and writes one scene into the shared tables."""

    def __init__(self, out_dir: str, tables: NuScenesTables, cfg: WorldConfig, seed: int, renderer: Renderer):
        self.out, self.tables, self.cfg, self.seed, self.renderer = out_dir, tables, cfg, seed, renderer
        W, H = cfg.image_size
        self.area = W * H

    def run(self, idx: int, tick) -> tuple:
        cfg, seed, T = self.cfg, self.seed, self.tables
        F = int(cfg.frames_per_scene)
        rng = np.random.default_rng([seed, idx])
        lay = build_layout(rng, -1 if cfg.traffic_side == "right" else 1)
        sim = simulate_scene(lay, rng, F)
        ego = sim.ego  # [F + 6, 4]
        x0 = float(np.floor(ego[:, 0].min() - MAP_MARGIN))
        y0 = float(np.floor(ego[:, 1].min() - MAP_MARGIN))
        w = float(ego[:, 0].max() + MAP_MARGIN - x0)
        h = float(ego[:, 1].max() + MAP_MARGIN - y0)
        labels = lay.rasterize(x0, y0, w, h)
        noise = rng.uniform(-0.07, 0.07, (labels.shape[0] // 8 + 1, labels.shape[1] // 8 + 1))
        gm = GroundMap(labels, x0, y0, noise, np.array(lay.lamps).reshape(-1, 2))

        scene_tok = make_token(seed, "scene", idx)
        log_tok = make_token(seed, "log", idx)
        map_tok = make_token(seed, "map", idx)
        logname = f"mw{seed % 1000:03d}-2024-01-01-{10 + idx // 60:02d}-{idx % 60:02d}-00+0000"
        T.add("log", {"token": log_tok, "logfile": logname, "vehicle": "mw-ego",
                      "date_captured": "2024-01-01", "location": f"mini-world-{seed}-{idx}"})
        drivable = np.isin(labels, (ASPHALT, WHITE, YELLOW)).astype(np.uint8) * 255
        buf = io.BytesIO()
        Image.fromarray(drivable[::-1]).save(buf, format="PNG", optimize=False)
        os.makedirs(os.path.join(self.out, "maps"), exist_ok=True)
        write_bytes_atomic(os.path.join(self.out, "maps", f"{map_tok}.png"), buf.getvalue())
        T.add("map", {"token": map_tok, "log_tokens": [log_tok], "category": "semantic_prior",
                      "filename": f"maps/{map_tok}.png"})

        cs_tok = {}
        for cam in self.renderer.cams:
            cs_tok[cam.name] = make_token(seed, "calib", idx, cam.name)
            T.add("calibrated_sensor", {
                "token": cs_tok[cam.name], "sensor_token": T.sensor_token(cam.name),
                "translation": [float(v) for v in cam.cam2ego[:3, 3]],
                "rotation": matrix_quaternion(cam.cam2ego[:3, :3]),
                "camera_intrinsic": [[float(v) for v in row] for row in cam.K]})
        cs_tok["LIDAR_TOP"] = make_token(seed, "calib", idx, "LIDAR_TOP")
        lidar_t, lidar_q = LIDAR_EXTRINSICS[cfg.lidar_extrinsic]
        T.add("calibrated_sensor", {"token": cs_tok["LIDAR_TOP"], "sensor_token": T.sensor_token("LIDAR_TOP"),
                                    "translation": list(lidar_t), "rotation": list(lidar_q),
                                    "camera_intrinsic": []})

        samples, sd_chain = [], {ch: [] for ch in (*CAMERA_NAMES, "LIDAR_TOP")}
        ann_chain, inst_tok = {}, {}
        frames, gt = {}, {}
        ego_s = sim.ego_path.project(ego[:, :2])[0]
        base_ts = BASE_TIMESTAMP_US + idx * 3_600_000_000
        stopped_any = False
        for k in range(F):
            ts = base_ts + k * KEYFRAME_US
            s_tok = make_token(seed, "sample", idx, k)
            samples.append(T.add("sample", {"token": s_tok, "timestamp": ts, "scene_token": scene_tok}))
            ex, ey, eyaw, ev = ego[k]
            stopped_any |= ev < MOVING_SPEED
            images, stats = self.renderer.render(gm, ego[k], sim.actors, k)
            paths = {}
            for cam, img in zip(self.renderer.cams, images):
                fname = f"samples/{cam.name}/{logname}__{cam.name}__{ts}.jpg"
                os.makedirs(os.path.join(self.out, "samples", cam.name), exist_ok=True)
                b = io.BytesIO()
                Image.fromarray(img).save(b, format="JPEG", quality=int(cfg.jpeg_quality))
                write_bytes_atomic(os.path.join(self.out, fname), b.getvalue())
                paths[cam.name] = fname
                self._sample_data(idx, k, cam.name, s_tok, ts, cs_tok[cam.name], fname, ego[k], x0, y0, sd_chain,
                                  "jpg", cfg.image_size)
            lid = f"samples/LIDAR_TOP/{logname}__LIDAR_TOP__{ts}.pcd.bin"
            os.makedirs(os.path.join(self.out, "samples", "LIDAR_TOP"), exist_ok=True)
            a_ = np.linspace(0, 2 * np.pi, 32, endpoint=False)
            pts = np.stack([10 * np.cos(a_), 10 * np.sin(a_), np.zeros(32), np.full(32, 10.0), np.zeros(32)], 1)
            write_bytes_atomic(os.path.join(self.out, lid), pts.astype(np.float32).tobytes())
            self._sample_data(idx, k, "LIDAR_TOP", s_tok, ts, cs_tok["LIDAR_TOP"], lid, ego[k], x0, y0, sd_chain,
                              "pcd", None)

            # ---- annotations and per-object facts
            c, s = np.cos(eyaw), np.sin(eyaw)
            facts, best = [], {}
            for a in sim.actors:
                if not a.annotated:
                    continue
                x, y, yaw, v = a.poses[k]
                dx, dy = x - ex, y - ey
                lx, ly = c * dx + s * dy, -s * dx + c * dy  # ego frame
                if np.hypot(lx, ly) > ANNOTATION_RANGE:
                    continue
                vis = [(st.get(a.uid, (0, 0)), cam.name) for st, cam in zip(stats, self.renderer.cams)]
                vis_px = sum(p[0][0] for p in vis)
                unocc = sum(p[0][1] for p in vis)
                (bv, bu), bcam = max(vis, key=lambda p: p[0][0])
                attr = (f"traffic_light.{a.states[k]}" if a.kind == "traffic_light" else _attribute(a, v))
                if a.uid not in inst_tok:
                    inst_tok[a.uid] = make_token(seed, "instance", idx, a.uid)
                    ann_chain[a.uid] = []
                ann_tok = make_token(seed, "ann", idx, k, a.uid)
                l_, w_, h_ = a.size
                ann_chain[a.uid].append(T.add("sample_annotation", {
                    "token": ann_tok, "sample_token": s_tok, "instance_token": inst_tok[a.uid],
                    "visibility_token": visibility_token(vis_px / unocc if unocc else 0.0),
                    "attribute_tokens": [T.attribute_token(attr)] if attr else [],
                    "translation": [float(x - x0), float(y - y0), float(a.z_bottom + h_ / 2)],
                    "size": [float(w_), float(l_), float(h_)], "rotation": yaw_quaternion(float(yaw)),
                    "velocity": [float(v * np.cos(yaw)), float(v * np.sin(yaw))],
                    "num_lidar_pts": int(vis_px), "num_radar_pts": 0}))
                fut = a.poses[k + 1:k + 1 + FUTURE_STEPS]
                perceived = vis_px >= MIN_VISIBLE_AREA_FRACTION * self.area and np.hypot(lx, ly) <= PERCEPTION_RANGE
                o = ObjFacts(ann_tok, a.category, attr, float(lx), float(ly),
                             direction_of(float(np.degrees(np.arctan2(ly, lx)))), bool(perceived),
                             a.description if a.kind != "traffic_light" else f"{a.states[k].capitalize()} light.",
                             a.states[k] if a.states else None, float(v),
                             float(np.degrees(_wrap(fut[-1, 2] - yaw))), float(fut[:, 3].mean()))
                facts.append(o)
                best[ann_tok] = (a, bcam, bv, bu)

            # ---- ego future and governing light
            R = np.array([[c, s], [-s, c]])
            fut = ego[k + 1:k + 1 + FUTURE_STEPS]
            traj = (fut[:, :2] - ego[k, :2]) @ R.T  # [6, 2] ego frame
            gov = None
            if sim.ego_stop_s is not None and ego_s[k] + 2.3 < sim.ego_stop_s:
                for o in facts:
                    a = best[o.ann][0]
                    if a.kind == "traffic_light" and a.approach == sim.ego_approach and o.dist <= KEY_LIGHT_RANGE:
                        gov = o.ann
            ff = FrameFacts(float(ev), traj, fut[:, 3].copy(), _wrap(fut[:, 2] - eyaw), gov, facts)
            ff.keys = self._key_objects(ff, best, ego[k], k)
            qa, fam_counts = build_qa(ff, np.random.default_rng([seed, idx, k, 7]))
            frames[s_tok] = {
                "key_object_infos": {ko.tag: {"Category": ko.category, "Status": ko.status,
                                              "Visual_description": ko.facts.description, "2d_bbox": ko.bbox}
                                     for ko in ff.keys},
                "QA": qa,
                "image_paths": {ch: f"../nuscenes/{paths[ch]}" for ch in CAMERA_NAMES}}
            gt[s_tok] = {
                "scene_token": scene_tok, "frame_index": k, "timestamp": ts,
                "ego_speed": float(ev), "ego_future_traj": traj.tolist(),
                "ego_future_speeds": fut[:, 3].tolist(), "ego_future_yaw": _wrap(fut[:, 2] - eyaw).tolist(),
                "governing_light": gov, "maneuver": sim.maneuver, "scenario": sim.scenario,
                "perceived": {o.ann: {"cam": best[o.ann][1], "visible_px": best[o.ann][2]}
                              for o in facts if o.perceived},
                "key_objects": {ko.tag: {"ann": ko.facts.ann, "cam": ko.cam, "speed": ko.facts.speed,
                                         "future": (best[ko.facts.ann][0].poses[k + 1:k + 1 + FUTURE_STEPS, :3]
                                                    - np.array([x0, y0, 0.0])).tolist(),
                                         "future_speeds": best[ko.facts.ann][0].poses[
                                             k + 1:k + 1 + FUTURE_STEPS, 3].tolist(),
                                         "visible_fraction": best[ko.facts.ann][2] / max(best[ko.facts.ann][3], 1)}
                                for ko in ff.keys},
                "family_counts": fam_counts}
            tick()

        NuScenesTables.link(samples)
        for chain in sd_chain.values():
            NuScenesTables.link(chain)
        for uid, chain in ann_chain.items():
            NuScenesTables.link(chain)
            a = sim.actors[uid]
            T.add("instance", {"token": inst_tok[uid], "category_token": T.category_token(a.category),
                               "nbr_annotations": len(chain), "first_annotation_token": chain[0]["token"],
                               "last_annotation_token": chain[-1]["token"]})
        if sim.maneuver != "straight":
            desc = f"The ego vehicle approaches the intersection and turns {sim.maneuver} onto the cross road."
        elif sim.scenario == "curve":
            desc = "The ego vehicle follows the curve of the current road."
        elif stopped_any:
            desc = "The ego vehicle proceeds along the current road, coming to a halt at the traffic light intersection."
        else:
            desc = "The ego vehicle proceeds through the intersection, continuing along the current roadway."
        T.add("scene", {"token": scene_tok, "log_token": log_tok, "nbr_samples": F,
                        "first_sample_token": samples[0]["token"], "last_sample_token": samples[-1]["token"],
                        "name": f"scene-{idx + 1:04d}", "description": desc})
        return scene_tok, {"scene_description": desc, "key_frames": frames}, gt

    def _sample_data(self, idx, k, ch, s_tok, ts, cs, fname, pose, x0, y0, chain, fmt, size) -> None:
        T = self.tables
        ep_tok = make_token(self.seed, "ego_pose", idx, k, ch)
        T.add("ego_pose", {"token": ep_tok, "timestamp": ts, "rotation": yaw_quaternion(float(pose[2])),
                           "translation": [float(pose[0] - x0), float(pose[1] - y0), 0.0]})
        chain[ch].append(T.add("sample_data", {
            "token": make_token(self.seed, "sample_data", idx, k, ch), "sample_token": s_tok,
            "ego_pose_token": ep_tok, "calibrated_sensor_token": cs, "timestamp": ts, "fileformat": fmt,
            "is_key_frame": True, "height": int(size[1]) if size else 0, "width": int(size[0]) if size else 0,
            "filename": fname}))

    def _key_objects(self, ff: FrameFacts, best: dict, ego_pose: np.ndarray, k: int) -> list:
        """Pick 2-5 key objects: visible agents in/near the ego path, nearest first, plus the governing light.

        An agent needs ``KEY_MIN_VISIBLE_FRACTION`` of its pixels visible (so an object hidden
        behind another is never chosen), ``KEY_MIN_AREA_FRACTION`` of the image area, its box
        fully in front of its camera and its projected centre inside the image.
        """
        cams = {c.name: c for c in self.renderer.cams}
        cands = []
        for o in ff.objects:
            a, cam_name, vis, unocc = best[o.ann]
            if vis == 0 or unocc == 0 or vis / unocc < KEY_MIN_VISIBLE_FRACTION:
                continue
            if o.is_light:
                if o.ann != ff.governing_light or vis < MIN_VISIBLE_AREA_FRACTION * self.area:
                    continue
            elif o.category not in AGENT_CATEGORIES or o.dist > KEY_RANGE or (a.kind == "bicycle" and not a.rider):
                continue
            geo = self._project(a, k, cams[cam_name], ego_pose)
            if geo is not None:
                cands.append((o, cam_name, vis, geo))
        agents = [c for c in cands if not c[0].is_light]
        lights = [c for c in cands if c[0].is_light][:1]
        chosen = sorted([c for c in agents if c[2] >= KEY_MIN_AREA_FRACTION * self.area],
                        key=lambda c: (not in_moving_direction(c[0], ff), c[0].dist))[:MAX_KEY_AGENTS]
        if len(chosen) + len(lights) < 2:
            weak = sorted([c for c in agents if c not in chosen], key=lambda c: c[0].dist)
            chosen += weak[:2 - len(chosen) - len(lights)]
        return [KeyObject(f"<c{i + 1},{cam_name},{u:.1f},{v:.1f}>", o, cam_name, bbox)
                for i, (o, cam_name, vis, (u, v, bbox)) in enumerate(chosen + lights)]

    @staticmethod
    def _project(a, k: int, cam, ego_pose: np.ndarray) -> tuple | None:
        """Projected 3D box centre ``(u, v)`` and corner bbox clipped to the image, or None.

        None when a box corner is less than 0.5 m in front of the camera or the centre
        projects outside the image.
        """
        ex, ey, eyaw = ego_pose[:3]
        x, y, yaw = a.poses[k, :3]
        c, s = np.cos(eyaw), np.sin(eyaw)
        lx, ly = c * (x - ex) + s * (y - ey), -s * (x - ex) + c * (y - ey)
        l_, w_, h_ = a.size
        zc = a.z_bottom + h_ / 2
        pts = np.vstack([_box_corners(lx, ly, zc, l_, w_, h_, yaw - eyaw), [[lx, ly, zc]]])  # [9, 3] ego
        ego2cam = np.linalg.inv(cam.cam2ego)
        pc = pts @ ego2cam[:3, :3].T + ego2cam[:3, 3]  # [9, 3] camera frame
        if (pc[:, 2] < 0.5).any():
            return None
        uvw = pc @ cam.K.T
        uv = uvw[:, :2] / uvw[:, 2:3]  # [9, 2]
        u, v = uv[8]
        if not (0.0 <= u < cam.width and 0.0 <= v < cam.height):
            return None
        bbox = [round(float(np.clip(uv[:8, 0].min(), 0, cam.width)), 1),
                round(float(np.clip(uv[:8, 1].min(), 0, cam.height)), 1),
                round(float(np.clip(uv[:8, 0].max(), 0, cam.width)), 1),
                round(float(np.clip(uv[:8, 1].max(), 0, cam.height)), 1)]
        return float(u), float(v), bbox


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def _scene_job(job: tuple) -> tuple:
    """One scene in a worker process: its own tables, the records it added returned in order."""
    out_dir, cfg, seed, idx = job
    tables = NuScenesTables(seed)
    start = {name: len(recs) for name, recs in tables.t.items()}
    writer = _SceneWriter(out_dir, tables, cfg, seed, Renderer(tuple(cfg.image_size), cfg.lighting, cfg.rig))
    scene_tok, entry, gt = writer.run(idx, lambda: None)
    return scene_tok, entry, gt, {name: recs[start[name]:] for name, recs in tables.t.items()}


def _scenes(out_dir: str, num_scenes: int, seed: int, cfg: WorldConfig, tables: NuScenesTables, workers: int,
            tick, frames: int):
    """Yield ``(scene_token, drivelm entry, gt)`` in scene order, each scene generated by
    :func:`_scene_job` (in a process pool when ``workers > 1``) and its table records appended in
    scene order: the files are the same bytes for any number of workers (every token and random
    stream depends on the scene index only)."""
    import contextlib
    import multiprocessing as mp

    jobs = [(out_dir, cfg, seed, i) for i in range(num_scenes)]
    with contextlib.ExitStack() as stack:
        results = map(_scene_job, jobs)
        if workers > 1 and num_scenes > 1:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            results = stack.enter_context(ctx.Pool(min(workers, num_scenes))).imap(_scene_job, jobs)
        for scene_tok, entry, gt, added in results:
            for name, recs in added.items():
                tables.t[name].extend(recs)
            for _ in range(frames):
                tick()
            yield scene_tok, entry, gt


def generate_world(out_dir: str, num_scenes: int = 12, seed: int = 0, config: WorldConfig | None = None,
                   progress: bool = True, workers: int = 1) -> dict:
    """Generate a procedural nuScenes-format world with DriveLM QA.

    Args:
        out_dir: output folder (created; existing files of the same names are replaced).
        num_scenes: number of scenes (one log and map each).
        seed: world seed; the same seed gives the same bytes.
        config: :class:`WorldConfig` (defaults when None).
        progress: show a tqdm bar over key frames.
        workers: processes generating scenes in parallel (the output is the same bytes for any
            number; 0 = one per CPU core).

    Returns:
        Summary dict: counts (scenes, frames, images, annotations, instances, QA per stage
        and per family), split scene names, seconds and bytes on disk. Also written to
        ``out_dir/world_summary.json``.
    """
    cfg = config or WorldConfig()
    cfg.validate()
    if int(num_scenes) < 1:
        raise ValueError(f"generate_world: num_scenes={num_scenes}; use at least 1")
    t0 = time.time()
    os.makedirs(out_dir, exist_ok=True)
    tables = NuScenesTables(seed)
    workers = int(workers) if int(workers) > 0 else (os.cpu_count() or 1)
    total = num_scenes * int(cfg.frames_per_scene)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, desc="mini world", unit="frame")
    tick = (lambda: bar.update(1)) if bar is not None else (lambda: None)
    n_val = int(round(num_scenes * float(cfg.val_fraction)))
    if cfg.val_fraction > 0 and num_scenes >= 2:
        n_val = min(max(1, n_val), num_scenes - 1)
    else:
        n_val = 0
    splits = {"train": {}, "val": {}}
    world_gt = {}
    names = {"train": [], "val": []}
    scenes = _scenes(out_dir, num_scenes, seed, cfg, tables, workers, tick, int(cfg.frames_per_scene))
    for i, (scene_tok, entry, gt) in enumerate(scenes):
        split = "val" if i >= num_scenes - n_val else "train"
        splits[split][scene_tok] = entry
        names[split].append(f"scene-{i + 1:04d}")
        world_gt.update(gt)
    if bar is not None:
        bar.close()
    tables.write(os.path.join(out_dir, cfg.version))
    for split in ("train", "val"):
        write_json_atomic(os.path.join(out_dir, f"drivelm_{split}.json"), splits[split], indent=2)
    write_json_atomic(os.path.join(out_dir, "world_gt.json"), world_gt)

    qa_stage = {s: 0 for s in ("perception", "prediction", "planning", "behavior")}
    qa_family = {}
    for split in splits.values():
        for sc in split.values():
            for fr in sc["key_frames"].values():
                for st, items in fr["QA"].items():
                    qa_stage[st] += len(items)
    for g in world_gt.values():
        for name, n in g["family_counts"].items():
            qa_family[name] = qa_family.get(name, 0) + n
    summary = {
        "seed": seed, "scenes": num_scenes, "frames": total, "images": total * len(CAMERA_NAMES),
        "annotations": len(tables.t["sample_annotation"]), "instances": len(tables.t["instance"]),
        "key_objects": sum(len(g["key_objects"]) for g in world_gt.values()),
        "qa_total": sum(qa_stage.values()), "qa_per_stage": qa_stage, "qa_per_family": qa_family,
        "splits": names, "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
        "seconds": round(time.time() - t0, 2),
    }
    summary["bytes"] = _dir_bytes(out_dir)
    write_json_atomic(os.path.join(out_dir, "world_summary.json"), summary, indent=2)
    logger.info("mini world: %d scenes, %d frames, %d QA in %.1f s", num_scenes, total, summary["qa_total"],
                summary["seconds"])
    return summary
