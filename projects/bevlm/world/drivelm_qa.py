"""DriveLM v1.1 question/answer graph of one key frame, computed from ground truth.

Question strings and answer phrasings copy the real DriveLM-nuScenes v1.1 data
(see docs/drivelm_spec.md section 2). Every answer is a deterministic rule of the
ground truth (objects, attributes, ego future); :data:`FAMILIES` lists every
family with its stage and question template so tests can iterate over them.

c-tags ``<cN,CAM,x,y>`` give the projected 3D box centre in the *stored* image
pixel frame of camera CAM (e.g. 320x180), one decimal. To compare with DriveLM's
1600x900 convention multiply x by ``1600 / W`` and y by ``900 / H``.

Directions use the azimuth sectors of :func:`bevlm.world.config.direction_of`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import (CONSIDER_RANGE, FAST_MAX, MOVING_SPEED, NORMAL_MAX, PATH_HALF_WIDTH, SLIGHT_MAX_DEG,
                     SLOW_MAX, SPEED_CHANGE, STRAIGHT_MAX_DEG, TURN_DEG)

DIRECTIONS = ("front", "front left", "front right", "back", "back left", "back right")
IMPORTANT_Q = ("What are the important objects in the current scene? Those objects will be considered for "
               "the future reasoning and driving decision.")
NOTICE_Q = ("What object should the ego vehicle notice first when the ego vehicle is getting to the next "
            "possible location? What is the state of the object that is first noticed by the ego vehicle and "
            "what action should the ego vehicle take? What object should the ego vehicle notice second when the "
            "ego vehicle is getting to the next possible location? What is the state of the object perceived by "
            "the ego vehicle as second and what action should the ego vehicle take? What object should the ego "
            "vehicle notice third? What is the state of the object perceived by the ego vehicle as third and "
            "what action should the ego vehicle take?")
#: count class of each nuScenes category (traffic lights are not counted)
COUNT_CLASS = {"vehicle.car": "car", "vehicle.truck": "truck", "vehicle.bus.rigid": "bus",
               "human.pedestrian.adult": "pedestrian", "vehicle.bicycle": "bicycle",
               "vehicle.motorcycle": "motorcycle", "movable_object.barrier": "barrier",
               "movable_object.trafficcone": "traffic cone"}
STATUS_WORD = {"vehicle.moving": "moving", "vehicle.parked": "parked", "vehicle.stopped": "stopped",
               "pedestrian.moving": "moving", "pedestrian.standing": "standing"}
STATUS_ORDER = ("moving", "stopped", "parked", "standing")
#: "Are there {X} ...": X -> (count class, required attribute or None)
ARE_THERE = {"barriers": ("barrier", None), "traffic cones": ("traffic cone", None),
             "moving cars": ("car", "vehicle.moving"), "parked cars": ("car", "vehicle.parked"),
             "stopped cars": ("car", "vehicle.stopped"), "moving trucks": ("truck", "vehicle.moving"),
             "parked trucks": ("truck", "vehicle.parked"), "moving buses": ("bus", "vehicle.moving"),
             "stopped buses": ("bus", "vehicle.stopped"), "standing pedestrians": ("pedestrian", "pedestrian.standing"),
             "moving pedestrians": ("pedestrian", "pedestrian.moving"),
             "bicycles with riders": ("bicycle", "cycle.with_rider"),
             "bicycles without riders": ("bicycle", "cycle.without_rider"),
             "motorcycles with riders": ("motorcycle", "cycle.with_rider")}
NUM = {1: "one", 2: "two", 3: "three"}
ORDINALS = ("Firstly", "Secondly", "Thirdly", "Fourthly", "Fifthly")
#: ego longitudinal intent -> phrases used by the planning / notice answers
EGO_ACTIONS = {
    "stationary": {"notice": "remain stationary", "act": "remain stationary",
                   "safe": ["keep stationary"], "danger": ["accelerate and go ahead", "back up"]},
    "stop": {"notice": "decelerate gradually until it comes to a stop", "act": "brake gently to a stop",
             "safe": ["brake gently to a stop", "decelerate gradually without braking"],
             "danger": ["accelerate and go ahead", "back up"]},
    "decelerate": {"notice": "slow down and go ahead", "act": "decelerate gradually without braking",
                   "safe": ["decelerate gradually without braking", "brake gently to a stop"],
                   "danger": ["accelerate and go ahead", "back up"]},
    "accelerate": {"notice": "accelerate and go ahead", "act": "accelerate and go ahead",
                   "safe": ["accelerate and go ahead", "keep going at the same speed"],
                   "danger": ["brake suddenly", "back up"]},
    "keep": {"notice": "keep going ahead at the same speed", "act": "keep going at the same speed",
             "safe": ["keep going at the same speed", "decelerate gradually without braking"],
             "danger": ["brake suddenly", "back up"]},
}


@dataclass
class ObjFacts:
    """Ground truth of one annotated object at one key frame (ego frame positions)."""

    ann: str
    category: str
    attribute: str | None
    x: float
    y: float
    direction: str
    perceived: bool
    description: str = ""
    light_state: str | None = None
    speed: float = 0.0
    future_yaw_change_deg: float = 0.0  # heading change over the 3 s future
    future_mean_speed: float = 0.0

    @property
    def dist(self) -> float:
        return float(np.hypot(self.x, self.y))

    @property
    def is_light(self) -> bool:
        return self.category == "static_object.traffic_light"


@dataclass
class KeyObject:
    tag: str
    facts: ObjFacts
    cam: str
    bbox: list

    @property
    def category(self) -> str:
        if self.facts.is_light:
            return "Traffic element"
        return "Pedestrian" if self.facts.category.startswith("human") else "Vehicle"

    @property
    def status(self) -> str | None:
        if self.facts.is_light:
            return None
        return "Moving" if self.facts.speed >= MOVING_SPEED else "Stationary"


@dataclass
class FrameFacts:
    """Everything the QA rules read for one key frame."""

    ego_speed: float
    ego_future_traj: np.ndarray  # [6, 2] ego frame
    ego_future_speeds: np.ndarray  # [6]
    ego_future_yaw: np.ndarray  # [6] heading change (rad)
    governing_light: str | None
    objects: list
    keys: list = field(default_factory=list)


# ------------------------------------------------------------------ classification rules
def ego_speed_class(f: FrameFacts) -> str:
    v = float(np.mean(f.ego_future_speeds))
    if v < MOVING_SPEED:
        return "not moving"
    if v < SLOW_MAX:
        return "driving slowly"
    if v < NORMAL_MAX:
        return "driving with normal speed"
    return "driving fast" if v < FAST_MAX else "driving very fast"


def ego_steer_class(f: FrameFacts) -> str:
    if ego_speed_class(f) == "not moving":
        return "going straight"
    d = float(np.rad2deg(f.ego_future_yaw[-1]))
    side = "left" if d > 0 else "right"
    if abs(d) < STRAIGHT_MAX_DEG:
        return "going straight"
    return f"slightly steering to the {side}" if abs(d) < SLIGHT_MAX_DEG else f"steering to the {side}"


def ego_action(f: FrameFacts) -> str:
    v0, v3 = f.ego_speed, float(f.ego_future_speeds[-1])
    if max(v0, v3) < MOVING_SPEED:
        return "stationary"
    if v3 < MOVING_SPEED:
        return "stop"
    if v3 < v0 - SPEED_CHANGE:
        return "decelerate"
    return "accelerate" if v3 > v0 + SPEED_CHANGE else "keep"


def moving_status(o: ObjFacts) -> str:
    if o.future_mean_speed < MOVING_SPEED:
        return "Stopped."
    if o.future_yaw_change_deg > TURN_DEG:
        return "Turn left."
    return "Turn right." if o.future_yaw_change_deg < -TURN_DEG else "Going ahead."


def in_moving_direction(o: ObjFacts, f: FrameFacts) -> bool:
    if o.is_light:
        return o.ann == f.governing_light
    pts = np.concatenate([[[0.0, 0.0]], f.ego_future_traj])
    if np.linalg.norm(np.diff(pts, axis=0), axis=1).sum() < 5.0:
        pts = np.array([[0.0, 0.0], [10.0, 0.0]])
    a, d = pts[:-1], np.diff(pts, axis=0)
    t = np.clip(((np.array([o.x, o.y]) - a) * d).sum(1) / np.maximum((d ** 2).sum(1), 1e-9), 0, 1)
    dist = np.linalg.norm(a + t[:, None] * d - np.array([o.x, o.y]), axis=1).min()
    return bool(o.x > 0 and dist < PATH_HALF_WIDTH)


def priority(f: FrameFacts) -> list:
    return sorted(f.keys, key=lambda k: (not in_moving_direction(k.facts, f), k.facts.dist))


# ------------------------------------------------------------------ phrasing helpers
def _list(items: list) -> str:
    if len(items) == 1:
        return items[0]
    if len(items) == 2:
        return f"{items[0]} and {items[1]}"
    return ", ".join(items[:-1]) + f", and {items[-1]}"


def _actions(items: list) -> str:
    s = items[0] if len(items) == 1 else (f"{items[0]}, {items[1]}" if len(items) == 2
                                           else ", ".join(items[:-1]) + f", and {items[-1]}")
    return s[0].upper() + s[1:] + "."


def _plural(c: str) -> str:
    return c + "es" if c.endswith("s") else c + "s"


def _num(n: int) -> str:
    return NUM.get(n, "many")


def _lower_first(desc: str) -> str:
    d = desc.rstrip(".")
    return d[0].lower() + d[1:]


def _where(direction: str) -> str:
    return {"front": "in front of the ego car", "back": "behind the ego car"}.get(
        direction, f"to the {direction} of the ego car")


def counted(f: FrameFacts, direction: str) -> list:
    return [o for o in f.objects if o.perceived and o.category in COUNT_CLASS and o.direction == direction]


# ------------------------------------------------------------------ families
def important_objects(f: FrameFacts, rng) -> list:
    parts = [f"a {_lower_first(k.facts.description)} to the {k.facts.direction} of the ego vehicle" for k in f.keys]
    tags = [k.tag for k in f.keys]
    if len(tags) == 1:
        return [(IMPORTANT_Q, f"There is {parts[0]}. The ID of this object is {tags[0]}.")]
    return [(IMPORTANT_Q, f"There is {_list(parts)}. The IDs of these objects are {_list(tags)}.")]


def objects_in_direction(f: FrameFacts, rng) -> list:
    out = []
    for d in DIRECTIONS:
        objs = sorted(counted(f, d), key=lambda o: o.dist)
        if not objs:
            continue
        classes = []
        for o in objs:
            if COUNT_CLASS[o.category] not in classes:
                classes.append(COUNT_CLASS[o.category])
        n = {c: sum(COUNT_CLASS[o.category] == c for o in objs) for c in classes}
        items = [f"{_num(n[c])} {c if n[c] == 1 else _plural(c)}" for c in classes]
        verb = "There is" if n[classes[0]] == 1 else "There are"
        out.append((f"What are objects to the {d} of the ego car?", f"{verb} {_list(items)} {_where(d)}."))
    return out


def status_in_direction(f: FrameFacts, rng) -> list:
    out = []
    for d in DIRECTIONS:
        objs = counted(f, d)
        for c in ("car", "truck", "bus", "pedestrian"):
            group = [o for o in objs if COUNT_CLASS[o.category] == c and o.attribute in STATUS_WORD]
            if not group:
                continue
            n = len(group)
            q = (f"What is the status of the {c} that is to the {d} of the ego car?" if n == 1 else
                 f"What is the status of the {_plural(c)} that are to the {d} of the ego car?")
            words = [STATUS_WORD[o.attribute] for o in group]
            counts = sorted({w: words.count(w) for w in words}.items(),
                            key=lambda kv: (-kv[1], STATUS_ORDER.index(kv[0])))
            if n == 1:
                a = (f"The pedestrian to the {d} of the ego car is {words[0]}." if c == "pedestrian"
                     else f"One {c} is {words[0]}.")
            elif len(counts) == 1:
                a = f"{_num(n).capitalize()} {_plural(c)} are {words[0]}."
            else:
                (w1, c1), rest = counts[0], counts[1:]
                first = (f"One of the {_plural(c)} is {w1}" if c1 == 1 else
                         f"Many {_plural(c)} are {w1}" if c1 > 3 else
                         f"{_num(c1).capitalize()} of the {_plural(c)} are {w1}")
                clauses = [first] + [f"{_num(k)} {'is' if k == 1 else 'are'} {w}" for w, k in rest]
                a = (", and ".join(clauses) if len(clauses) == 2
                     else ", ".join(clauses[:-1]) + ", and " + clauses[-1]) + "."
            out.append((q, a))
    return out


def are_there(f: FrameFacts, rng) -> list:
    yes, no = [], []
    for d in DIRECTIONS:
        objs = counted(f, d)
        for x, (c, attr) in ARE_THERE.items():
            hit = any(COUNT_CLASS[o.category] == c and (attr is None or o.attribute == attr) for o in objs)
            (yes if hit else no).append((f"Are there {x} to the {d} of the ego car?", "Yes." if hit else "No."))
    pick_y = [yes[i] for i in sorted(rng.choice(len(yes), min(4, len(yes)), replace=False))] if yes else []
    pick_n = [no[i] for i in sorted(rng.choice(len(no), min(3, len(no)), replace=False))] if no else []
    return pick_y + pick_n


def object_status(f: FrameFacts, rng) -> list:
    out = []
    for k in f.keys:
        if not k.facts.is_light:
            out.append((f"What is the observed status of object {k.tag}?", f"{k.status}."))
            out.append((f"What is the moving status of object {k.tag}?", moving_status(k.facts)))
    return out


def visual_description(f: FrameFacts, rng) -> list:
    return [(f"What is the visual description of {k.tag}?", k.facts.description) for k in f.keys]


def prediction_per_object(f: FrameFacts, rng) -> list:
    out = []
    for k in f.keys:
        o = k.facts
        sign = o.is_light or o.category in ("movable_object.barrier", "movable_object.trafficcone")
        out.append((f"Is {k.tag} a traffic sign or a road barrier?", "Yes." if sign else "No."))
        out.append((f"Would {k.tag} be in the moving direction of the ego vehicle?",
                    "Yes." if in_moving_direction(o, f) else "No."))
        if not o.is_light:
            ms = moving_status(o)
            fs = {"Stopped.": "Stationary.", "Going ahead.": "Keep going straight."}.get(ms, ms)
            out.append((f"What is the future state of {k.tag}?", fs))
    return out


def notice_order(f: FrameFacts, rng) -> list:
    act = EGO_ACTIONS[ego_action(f)]["notice"]
    sents = []
    for i, k in enumerate(priority(f)):
        if k.facts.is_light:
            state = "a traffic sign"
        else:
            state = {"Stopped.": "stationary", "Going ahead.": "going ahead", "Turn left.": "turning left",
                     "Turn right.": "turning right", "Back up.": "backing up"}[moving_status(k.facts)]
        sents.append(f"{ORDINALS[i]} notice that {k.tag}. The object is {state}, so the ego vehicle should {act}.")
    return [(NOTICE_Q, " ".join(sents))]


def planning_per_object(f: FrameFacts, rng) -> list:
    out = []
    action = ego_action(f)
    for k in f.keys:
        o = k.facts
        if o.is_light and o.ann == f.governing_light:
            reason = "to follow the traffic rules"
        elif in_moving_direction(o, f) and action in ("stationary", "stop", "decelerate"):
            reason = "to maintain a safe distance"
        else:
            reason = "that there is no safety issue"
        out.append((f"What actions could the ego vehicle take based on {k.tag}? Why take this action and what's "
                    f"the probability?", f"The action is to {EGO_ACTIONS[action]['act']}. The reason is {reason}, "
                                         f"which has a high probability."))
        out.append((f"What actions taken by the ego vehicle can lead to a collision with {k.tag}?",
                    collision_action(o)))
        out.append((f"Is {k.tag} an object that the ego vehicle should consider in the current scene?",
                    "Yes." if in_moving_direction(o, f) or o.dist < CONSIDER_RANGE else "No."))
    return out


def collision_action(o: ObjFacts) -> str:
    none = "No such action will lead to a collision."
    if o.is_light or o.dist > 30.0:
        return none
    if abs(o.y) < PATH_HALF_WIDTH:
        return "Accelerate and go straight." if o.x > 0 else "Back up."
    if o.x <= 0:
        return none
    side = "left" if o.y > 0 else "right"
    return f"Moderate {side} turn." if o.x > abs(o.y) else f"Sharp {side} turn."


def planning_scene(f: FrameFacts, rng) -> list:
    light = next((o for o in f.objects if o.ann == f.governing_light), None)
    signal = f"{light.light_state.capitalize()} light." if light is not None else "None."
    steer = ego_steer_class(f)
    if ego_speed_class(f) == "not moving":
        target = "Stationary."
    elif steer.startswith("steering to the"):
        target = f"Turn {steer.split()[-1]}."
    else:
        target = "Go straight."
    safe, danger = ego_safe_dangerous(f)
    tags = ", ".join(k.tag for k in priority(f))
    return [("What is the traffic signal that the ego vehicle should pay attention to?", signal),
            ("What is the target action of the ego vehicle?", target),
            ("In this scenario, what are safe actions to take for the ego vehicle?", _actions(safe)),
            ("In this scenario, what are dangerous actions to take for the ego vehicle?", _actions(danger)),
            ("What is the priority of the objects that the ego vehicle should consider?(in descending order)",
             f"{tags}.")]


def ego_safe_dangerous(f: FrameFacts) -> tuple[list, list]:
    """The safe and the dangerous actions of the scene-planning answers: those of the ego's action
    (:func:`ego_action`), plus turning to the side it steers to (safe) and the other (dangerous)."""
    act = EGO_ACTIONS[ego_action(f)]
    safe, danger = list(act["safe"]), list(act["danger"])
    steer = ego_steer_class(f)
    if steer.endswith("left") and "not moving" != ego_speed_class(f):
        safe.append("turn left")
        danger.append("turn right")
    elif steer.endswith("right") and "not moving" != ego_speed_class(f):
        safe.append("turn right")
        danger.append("turn left")
    return safe, danger


def safe_actions_answer(f: FrameFacts) -> str:
    """The answer to "what are safe actions to take for the ego vehicle?"."""
    return _actions(ego_safe_dangerous(f)[0])


def behavior_answer(f: FrameFacts) -> str:
    """The answer to "Predict the behavior of the ego vehicle."."""
    return f"The ego vehicle is {ego_steer_class(f)}. The ego vehicle is {ego_speed_class(f)}."


def facts_from_waypoints(ego_speed: float, waypoints, step_s: float = 0.5) -> FrameFacts:
    """:class:`FrameFacts` of the ego only (no objects), read from ``[H, 2]`` waypoints (x forward,
    y left, metres, ``step_s`` apart, first one ``step_s`` after now) and the current speed.

    Speed and heading of each step come from the segment before its waypoint (finite differences);
    the last step's are extrapolated linearly by half a step, from the segment's midpoint to the
    waypoint's time, where the world's rules read them.
    """
    wp = np.asarray(waypoints, dtype=float).reshape(-1, 2)
    if wp.shape[0] < 2:
        raise ValueError(f"facts_from_waypoints needs at least 2 waypoints, got {wp.shape[0]}")
    seg = np.diff(np.concatenate([np.zeros((1, 2)), wp]), axis=0)
    speeds = np.linalg.norm(seg, axis=1) / step_s
    yaw = np.arctan2(seg[:, 1], seg[:, 0])
    speeds[-1] += (speeds[-1] - speeds[-2]) / 2
    yaw[-1] += (yaw[-1] - yaw[-2]) / 2
    return FrameFacts(ego_speed=float(ego_speed), ego_future_traj=wp, ego_future_speeds=speeds,
                      ego_future_yaw=yaw, governing_light=None, objects=[])


def behavior(f: FrameFacts, rng) -> list:
    return [("Predict the behavior of the ego vehicle.", behavior_answer(f))]


@dataclass(frozen=True)
class QAFamily:
    """One family of questions: its stage, question templates and answer rule."""

    stage: str
    templates: tuple
    rule: object


#: Every QA family in output order (within a stage, families appear in this order).
FAMILIES = {
    "important_objects": QAFamily("perception", (IMPORTANT_Q,), important_objects),
    "objects_in_direction": QAFamily("perception", ("What are objects to the {DIR} of the ego car?",),
                                     objects_in_direction),
    "status_in_direction": QAFamily("perception", ("What is the status of the {CLS} that is to the {DIR} of "
                                                   "the ego car?", "What is the status of the {CLS} that are "
                                                   "to the {DIR} of the ego car?"), status_in_direction),
    "are_there": QAFamily("perception", ("Are there {X} to the {DIR} of the ego car?",), are_there),
    "object_status": QAFamily("perception", ("What is the observed status of object <OBJ>?",
                                             "What is the moving status of object <OBJ>?"), object_status),
    "visual_description": QAFamily("perception", ("What is the visual description of <OBJ>?",),
                                   visual_description),
    "prediction_per_object": QAFamily("prediction", ("Is <OBJ> a traffic sign or a road barrier?",
                                                     "Would <OBJ> be in the moving direction of the ego vehicle?",
                                                     "What is the future state of <OBJ>?"), prediction_per_object),
    "notice_order": QAFamily("prediction", (NOTICE_Q,), notice_order),
    "planning_per_object": QAFamily("planning", (
        "What actions could the ego vehicle take based on <OBJ>? Why take this action and what's the probability?",
        "What actions taken by the ego vehicle can lead to a collision with <OBJ>?",
        "Is <OBJ> an object that the ego vehicle should consider in the current scene?"), planning_per_object),
    "planning_scene": QAFamily("planning", (
        "What is the traffic signal that the ego vehicle should pay attention to?",
        "What is the target action of the ego vehicle?",
        "In this scenario, what are safe actions to take for the ego vehicle?",
        "In this scenario, what are dangerous actions to take for the ego vehicle?",
        "What is the priority of the objects that the ego vehicle should consider?(in descending order)"),
        planning_scene),
    "behavior": QAFamily("behavior", ("Predict the behavior of the ego vehicle.",), behavior),
}


def build_qa(f: FrameFacts, rng: np.random.Generator) -> tuple:
    """QA graph of one frame.

    Args:
        f: the frame's ground truth (with ``keys`` set).
        rng: generator for the sampled yes/no questions.

    Returns:
        (qa: {stage: [{"Q","A","C","con_up","con_down","cluster","layer"}]},
        families: {family name: number of QA}).
    """
    qa = {s: [] for s in ("perception", "prediction", "planning", "behavior")}
    counts = {}
    for name, fam in FAMILIES.items():
        items = fam.rule(f, rng)
        counts[name] = len(items)
        for q, a in items:
            qa[fam.stage].append({"Q": q, "A": a, "C": None, "con_up": None, "con_down": None,
                                  "cluster": None, "layer": None})
    return qa, counts


def behavior_universe() -> list:
    """The 21 answers of the official ``rule_based2`` options (5 steering x 4 speeds + not moving)."""
    steer = ("going straight", "slightly steering to the left", "slightly steering to the right",
             "steering to the left", "steering to the right")
    speed = ("driving slowly", "driving with normal speed", "driving fast", "driving very fast")
    out = [f"The ego vehicle is {s}. The ego vehicle is {v}." for s in steer for v in speed]
    return out + ["The ego vehicle is going straight. The ego vehicle is not moving."]
