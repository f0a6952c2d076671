"""Actors of one scene and their motion: lane-following traffic, walkers, parked and static objects.

Vehicles (and the ego) follow lane paths with the Intelligent Driver Model
(Treiber, Hennecke & Helbing, "Congested traffic states in empirical observations
and microscopic simulations", Phys. Rev. E 2000): they keep a gap to whatever is
ahead in their lane corridor and stop at the stop line while their signal group
shows red or yellow. Walkers move at constant speed along sidewalks and wait at
the kerb of a crossing until their group turns green. Signal phases follow one
fixed cycle per scene with a random offset.

All poses are in the scene-local frame and are recorded every 0.5 s from the
first key frame to 3 s past the last one.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import FUTURE_STEPS, SIM_DT, WARMUP_S
from .layout import LANE_WIDTH, PARKING_WIDTH, SIDEWALK_WIDTH, Layout, Path

# signal cycle (s): main green, yellow, all red, cross green, yellow, all red
PHASES = (("main", "green", 12.0), ("main", "yellow", 3.0), ("all", "red", 2.0),
          ("cross", "green", 10.0), ("cross", "yellow", 3.0), ("all", "red", 2.0))
CYCLE_S = sum(p[2] for p in PHASES)
RECORD_EVERY = 5  # simulation steps per recorded pose (0.5 s)

# IDM parameters
IDM_ACC, IDM_DEC, IDM_HEADWAY, IDM_GAP = 1.5, 2.0, 1.2, 2.5

COLORS = {
    "white": (225, 225, 222), "black": (28, 28, 32), "gray": (120, 122, 126), "silver": (175, 178, 182),
    "red": (170, 30, 30), "blue": (35, 65, 150), "brown": (110, 75, 45), "green": (40, 110, 60),
    "yellow": (215, 180, 40), "orange": (230, 110, 20),
}
CAR_COLORS = ("white", "black", "gray", "silver", "red", "blue", "brown", "green")
SHIRT_COLORS = ("red", "blue", "green", "yellow", "white", "black", "gray", "orange")


def light_state(group: str, t: float, offset: float) -> str:
    """Signal state ('red'|'yellow'|'green') of ``group`` ('main'|'cross') at time ``t``."""
    u = (t + offset) % CYCLE_S
    for g, state, dur in PHASES:
        if u < dur:
            return state if g == group else "red"
        u -= dur
    return "red"


@dataclass
class Actor:
    """One object of the world (annotated or scenery).

    Attributes:
        kind: car | truck | bus | pedestrian | bicycle | motorcycle | barrier | cone |
            traffic_light | pole | lamp.
        category: nuScenes category name ('' for scenery).
        size: (length, width, height) in metres.
        color: RGB body colour; description: DriveLM visual description ("White sedan.").
        body: body style of cars ('sedan' | 'SUV' | 'van'), else ''.
        rider: cycles carry a rider; parked: parked vehicle.
        poses: ``[K, 4]`` (x, y, yaw, speed) per recorded time (scene-local frame).
        states: per recorded time traffic light state, else None.
        approach: the lane approach a traffic light governs (e.g. 'main+').
    """

    kind: str
    category: str
    size: tuple
    color: tuple
    description: str
    poses: np.ndarray
    body: str = ""
    rider: bool = False
    parked: bool = False
    z_bottom: float = 0.0
    states: list | None = None
    approach: str = ""
    annotated: bool = True
    uid: int = -1
    extra: dict = field(default_factory=dict)


@dataclass
class _Mover:
    actor_idx: int
    path: Path
    s: float
    v: float
    v_des: float
    length: float
    width: float
    stop_s: float | None = None
    group: str = ""
    walker: bool = False
    kerbs: tuple = ()  # walker: (s_enter, s_exit) of road crossings
    samples: tuple = ()  # path resampled every metre: (x [L], y [L], yaw [L])


@dataclass
class SceneSim:
    """Simulated scene: actors with recorded poses, the ego track and the signal offset."""

    actors: list
    ego: np.ndarray  # [K, 4] x, y, yaw, speed
    ego_path: Path
    maneuver: str  # 'straight' | 'left' | 'right'
    scenario: str  # 'intersection' | 'curve'
    light_offset: float
    ego_approach: str = "main+"
    ego_stop_s: float | None = None


def _vehicle(rng, kind: str, poses) -> Actor:
    if kind == "car":
        body = str(rng.choice(["sedan", "sedan", "SUV", "van"]))
        cname = str(rng.choice(CAR_COLORS))
        size = {"sedan": (4.5, 1.85, 1.5), "SUV": (4.7, 1.95, 1.8), "van": (5.1, 2.0, 2.1)}[body]
        return Actor("car", "vehicle.car", size, COLORS[cname], f"{cname.capitalize()} {body}.", poses, body=body)
    if kind == "truck":
        cname = str(rng.choice(["white", "blue", "red", "gray"]))
        return Actor("truck", "vehicle.truck", (7.5, 2.5, 3.2), COLORS[cname], f"{cname.capitalize()} truck.", poses)
    if kind == "bus":
        cname = str(rng.choice(["red", "white", "blue", "yellow"]))
        return Actor("bus", "vehicle.bus.rigid", (11.5, 2.55, 3.2), COLORS[cname], f"{cname.capitalize()} bus.",
                     poses)
    if kind == "bicycle":
        cname = str(rng.choice(SHIRT_COLORS))
        return Actor("bicycle", "vehicle.bicycle", (1.8, 0.6, 1.7), COLORS[cname],
                     f"Cyclist in {'an' if cname[0] in 'aeiou' else 'a'} {cname} jacket.", poses, rider=True)
    if kind == "motorcycle":
        cname = str(rng.choice(SHIRT_COLORS))
        return Actor("motorcycle", "vehicle.motorcycle", (2.1, 0.8, 1.5), COLORS[cname],
                     f"Motorcyclist in {'an' if cname[0] in 'aeiou' else 'a'} {cname} jacket.", poses, rider=True)
    raise ValueError(f"agents.py: unknown vehicle kind {kind!r}")


def _pedestrian(rng, poses) -> Actor:
    cname = str(rng.choice(SHIRT_COLORS))
    art = "an" if cname[0] in "aeiou" else "a"
    return Actor("pedestrian", "human.pedestrian.adult", (0.6, 0.6, 1.75), COLORS[cname],
                 f"Pedestrian in {art} {cname} shirt.", poses)


def _idm(v, v_des, gap, dv):
    s_star = IDM_GAP + max(0.0, v * IDM_HEADWAY + v * dv / (2 * np.sqrt(IDM_ACC * IDM_DEC)))
    return IDM_ACC * (1 - (v / max(v_des, 0.1)) ** 4 - (s_star / max(gap, 0.1)) ** 2)


def simulate_scene(lay: Layout, rng: np.random.Generator, n_frames: int) -> SceneSim:
    """Populate a layout and simulate it.

    Args:
        lay: the scene layout.
        rng: the scene's random generator.
        n_frames: key frames; poses are recorded at ``n_frames + FUTURE_STEPS`` times.

    Returns:
        :class:`SceneSim` with every actor's recorded poses.
    """
    ds = lay.drive_sign
    ix, iy = lay.intersection_xy
    scenario = "intersection" if rng.random() < 0.65 else "curve"
    maneuver = "straight"
    ego_lane = int(rng.integers(lay.main.n_lanes))
    near = "right" if ds < 0 else "left"
    if scenario == "intersection":
        maneuver = str(rng.choice(["straight", "left", "right"], p=[0.5, 0.25, 0.25]))
    if maneuver != "straight":
        is_near = maneuver == near
        lane_i = lay.main.n_lanes - 1 if is_near else 0
        to_i = lay.cross.n_lanes - 1 if is_near else 0
        to_dir = -1 if maneuver == "right" else 1
        ego_path = lay.turn("main", 1, lane_i, to_dir, to_i, 9.0 if is_near else 15.0)
        ego_lane = lane_i
    base = lay.lane("main", 1, ego_lane)
    if maneuver == "straight":
        ego_path = base
    s_int = float(base.project(np.array([[ix, iy]]))[0][0])
    if scenario == "intersection":
        s0 = s_int - rng.uniform(25.0, 95.0)
    else:
        s0 = lay.curve_start_s - rng.uniform(5.0, 45.0)
    ego_vdes = float(rng.choice([rng.uniform(3.0, 6.0), rng.uniform(6.0, 11.0), rng.uniform(11.0, 15.0)]))
    light_offset = float(rng.uniform(0.0, CYCLE_S))

    actors: list[Actor] = []
    movers: list[_Mover] = []
    ego_m = _Mover(-1, ego_path, s0, ego_vdes * rng.uniform(0.6, 1.0), ego_vdes, 4.7, 1.9,
                   lay.stop_s(base, "main"), "main")
    movers.append(ego_m)

    def add_lane_vehicle(path: Path, s: float, kind: str, road: str, approach_lane: Path) -> None:
        a = _vehicle(rng, kind, None)
        v_des = {"car": rng.uniform(8, 14), "truck": rng.uniform(7, 11), "bus": rng.uniform(6, 10),
                 "bicycle": rng.uniform(4, 6), "motorcycle": rng.uniform(9, 14)}[kind]
        actors.append(a)
        movers.append(_Mover(len(actors) - 1, path, s, v_des * rng.uniform(0.5, 1.0), v_des,
                             a.size[0], a.size[1], lay.stop_s(approach_lane, road), road))

    def kinds(n):
        return rng.choice(["car", "truck", "bus", "motorcycle", "bicycle"], size=n,
                          p=[0.7, 0.11, 0.07, 0.05, 0.07])

    # moving traffic on every lane of both roads
    for road, r in (("main", lay.main), ("cross", lay.cross)):
        for direction in (1, -1):
            for li in range(r.n_lanes):
                lane = lay.lane(road, direction, li)
                sc = float(lane.project(np.array([[ix, iy]]))[0][0])
                if road == "main" and direction == 1:
                    lo, hi = s0 - 70.0, s0 + 150.0
                else:
                    lo, hi = sc - 130.0, sc + 100.0
                s = lo + rng.uniform(0, 15)
                while s < hi:
                    same_as_ego = road == "main" and direction == 1 and li == ego_lane
                    if not (same_as_ego and abs(s - s0) < 14.0):
                        kind = str(kinds(1)[0])
                        if kind == "bicycle" and li != r.n_lanes - 1:
                            kind = "car"
                        path = lane
                        turn_ok = road == "cross" and li == r.n_lanes - 1 and s < sc - 20
                        if turn_ok and rng.random() < 0.3:
                            # near-side turn onto the main road: right turn keeps the sign of the
                            # direction on right-hand traffic, left turn flips it
                            to_dir = direction if ds < 0 else -direction
                            path = lay.turn(road, direction, li, to_dir, lay.main.n_lanes - 1, 9.0)
                        add_lane_vehicle(path, s, kind, road, lane)
                    s += rng.uniform(14.0, 45.0)

    # parked vehicles on parking strips
    for road, r in (("main", lay.main), ("cross", lay.cross)):
        if not r.parking:
            continue
        for side in (-1, 1):
            p = lay.edge_path(road, side, r.n_lanes * LANE_WIDTH + PARKING_WIDTH / 2)
            sc = float(p.project(np.array([[ix, iy]]))[0][0])
            lo, hi = (s0 - 60.0, s0 + 150.0) if road == "main" else (sc - 90.0, sc + 90.0)
            s = lo
            while s < hi:
                s += rng.uniform(6.0, 20.0)
                if abs(s - sc) < lay.cross.outer_half + lay.main.outer_half + 6.0:
                    continue
                if rng.random() < 0.5:
                    x, y, yaw = (float(v) for v in p.pose(s))
                    # parked along the traffic direction of that side
                    travel_fwd = (side == -1) == (ds < 0)
                    yaw = yaw if travel_fwd else yaw + np.pi
                    a = _vehicle(rng, str(rng.choice(["car", "car", "car", "truck"])), None)
                    a.parked = True
                    a.poses = np.array([[x, y, yaw + rng.normal(0, 0.03), 0.0]])
                    actors.append(a)
                    s += a.size[0]

    # walkers on the sidewalks (they cross the other road on its crosswalk)
    for road, r in (("main", lay.main), ("cross", lay.cross)):
        other = lay.cross if road == "main" else lay.main
        n = int(rng.integers(3, 9)) if road == "main" else int(rng.integers(1, 4))
        for _ in range(n):
            side = int(rng.choice([-1, 1]))
            direction = int(rng.choice([-1, 1]))
            p = lay.edge_path(road, side, r.road_half + SIDEWALK_WIDTH * 0.66 + rng.uniform(-0.4, 0.4))
            if direction < 0:
                p = p.reversed()
            sc = float(p.project(np.array([[ix, iy]]))[0][0])
            ref = float(p.project(np.array([ego_path.pose(s0)[:2]]))[0][0]) if road == "main" else sc
            s = ref + rng.uniform(-40.0, 90.0) * (1 if direction > 0 else -1) * (1 if road == "main" else 0.6)
            if abs(s - sc) < other.road_half + 1.0:
                s = sc - other.road_half - 2.0
            a = _pedestrian(rng, None)
            actors.append(a)
            standing = rng.random() < 0.35
            v = 0.0 if standing else float(rng.uniform(1.0, 1.6))
            movers.append(_Mover(len(actors) - 1, p, s, v, v, 0.6, 0.6, None, road, True,
                                 (sc - other.road_half - 0.3, sc + other.road_half + 0.3)))

    # static clutter: cones along a lane edge, barriers and parked bicycles on the sidewalk
    occupied = [tuple(a.poses[0, :2]) for a in actors if a.parked]

    def free(x, y, r_=2.0):
        return all(np.hypot(x - ox, y - oy) > r_ for ox, oy in occupied)

    def place_static(kind, category, size, color, desc, path, s, yaw_off=0.0, **kw):
        x, y, yaw = (float(v) for v in path.pose(s))
        if not free(x, y, max(size[0], 1.0)):
            return
        occupied.append((x, y))
        actors.append(Actor(kind, category, size, color, desc, np.array([[x, y, yaw + yaw_off, 0.0]]), **kw))

    s_ref = s0 + rng.uniform(15.0, 70.0)
    if rng.random() < 0.7:
        side = int(rng.choice([-1, 1]))
        p = lay.edge_path("main", side, lay.main.n_lanes * LANE_WIDTH + 0.6)
        for k in range(int(rng.integers(3, 7))):
            place_static("cone", "movable_object.trafficcone", (0.4, 0.4, 0.75), COLORS["orange"],
                         "Orange traffic cone.", p, s_ref + 2.5 * k)
    if rng.random() < 0.7:
        side = int(rng.choice([-1, 1]))
        p = lay.edge_path("main", side, lay.main.road_half + 0.5)
        s_b = s0 + rng.uniform(-30.0, 90.0)
        for k in range(int(rng.integers(2, 5))):
            place_static("barrier", "movable_object.barrier", (2.0, 0.4, 1.0), COLORS["red"],
                         "Red and white barrier.", p, s_b + 2.2 * k)
    for _ in range(int(rng.integers(0, 3))):
        side = int(rng.choice([-1, 1]))
        p = lay.edge_path("main", side, lay.main.road_half + 0.4)
        place_static("bicycle", "vehicle.bicycle", (1.8, 0.6, 1.1), COLORS[str(rng.choice(CAR_COLORS))],
                     "Parked bicycle.", p, s0 + rng.uniform(-30.0, 100.0), np.pi / 2, parked=True)

    # ------------------------------------------------------------------ simulate
    n_rec = n_frames + FUTURE_STEPS
    n_warm = int(round(WARMUP_S / SIM_DT))
    n_steps = n_warm + (n_rec - 1) * RECORD_EVERY + 1
    rec = {id(m): [] for m in movers}
    for m in movers:
        m.samples = m.path.pose(np.arange(0.0, m.path.length + 200.0, 1.0))
    for step in range(n_steps):
        t = (step - n_warm) * SIM_DT
        poses = np.array([[*(float(v) for v in m.path.pose(m.s)), m.v] for m in movers])  # [M, 4]
        if step >= n_warm and (step - n_warm) % RECORD_EVERY == 0:
            for m, p in zip(movers, poses):
                rec[id(m)].append(p.copy())
        acc = np.zeros(len(movers))
        for i, m in enumerate(movers):
            if m.walker:
                continue
            k0 = int(max(m.s, 0.0))
            sx, sy, _ = m.samples
            win = np.stack([sx[k0:k0 + 50], sy[k0:k0 + 50]], 1)  # [<=50, 2]
            others = np.delete(np.arange(len(movers)), i)
            d = np.linalg.norm(poses[others, None, :2] - win[None], axis=-1)  # [M-1, 50]
            j = d.argmin(1)
            widths = np.array([movers[o].width for o in others])
            hit = (d[np.arange(len(others)), j] < (m.width + widths) / 2 + 0.3) & (j > 0)
            gap, dv = 1e6, 0.0
            for o, jj in zip(others[hit], j[hit]):
                g = (k0 + jj) - m.s - (m.length + movers[o].length) / 2
                if g < gap:
                    vo = poses[o, 3] * np.cos(poses[o, 2] - poses[i, 2])
                    gap, dv = g, m.v - vo
            if m.stop_s is not None and m.group:
                state = light_state(m.group, t, light_offset)
                front = m.s + m.length / 2
                to_stop = m.stop_s - front
                if state != "green" and to_stop > -0.5 and to_stop > m.v ** 2 / (2 * 3.5) - 1.0:
                    if to_stop + 1.0 < gap:
                        gap, dv = max(to_stop, 0.05) + 1.0, m.v
            acc[i] = np.clip(_idm(m.v, m.v_des, gap, dv), -8.0, IDM_ACC)
        for i, m in enumerate(movers):
            if m.walker:
                if m.v_des > 0:
                    k_in = m.kerbs[0]
                    waiting = (k_in - 1.2 < m.s < k_in) and light_state(m.group, t, light_offset) != "green"
                    m.v = 0.0 if waiting else m.v_des
                m.s += m.v * SIM_DT
                continue
            v_new = max(0.0, m.v + acc[i] * SIM_DT)
            m.s += 0.5 * (m.v + v_new) * SIM_DT
            m.v = v_new
    for m in movers:
        arr = np.array(rec[id(m)])  # [K, 4]
        if m.actor_idx >= 0:
            actors[m.actor_idx].poses = arr
    ego = np.array(rec[id(ego_m)])

    # static poses repeat over time
    for a in actors:
        if len(a.poses) == 1:
            a.poses = np.repeat(a.poses, n_rec, axis=0)

    # signal heads (annotated) and their poles (scenery), street lamps (scenery)
    times = np.arange(n_rec) * 0.5
    for site in lay.lights:
        states = [light_state(site.group, float(t), light_offset) for t in times]
        head = Actor("traffic_light", "static_object.traffic_light", (0.4, 0.45, 1.1), (30, 30, 30),
                     "", np.repeat([[site.head_xy[0], site.head_xy[1], site.head_yaw, 0.0]], n_rec, 0),
                     z_bottom=4.6, states=states, approach=site.approach)
        actors.append(head)
        actors.append(Actor("pole", "", (0.2, 0.2, 5.8), (70, 72, 75), "", np.repeat(
            [[site.pole_xy[0], site.pole_xy[1], site.head_yaw, 0.0]], n_rec, 0), annotated=False,
            extra={"arm_to": site.head_xy}))
    for x, y in lay.lamps:
        actors.append(Actor("lamp", "", (0.2, 0.2, 7.0), (80, 80, 85), "",
                            np.repeat([[x, y, 0.0, 0.0]], n_rec, 0), annotated=False))
    for k, a in enumerate(actors):
        a.uid = k
    return SceneSim(actors, ego, ego_path, maneuver, scenario, light_offset, "main+", ego_m.stop_s)
