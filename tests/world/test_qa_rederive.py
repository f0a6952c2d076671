"""Every generated DriveLM answer is re-derived here from the devkit boxes/attributes plus world_gt.json.

The rules are re-implemented independently of ``bevlm.world.drivelm_qa``; only the named
thresholds are shared (``bevlm.world.config``).
"""
import math
import re

import numpy as np
from pyquaternion import Quaternion

from bevlm.world import FAMILIES
from bevlm.world import config as C

NUMW = {1: "one", 2: "two", 3: "three"}
CLS = {"vehicle.car": "car", "vehicle.truck": "truck", "vehicle.bus.rigid": "bus",
       "human.pedestrian.adult": "pedestrian", "vehicle.bicycle": "bicycle", "vehicle.motorcycle": "motorcycle",
       "movable_object.barrier": "barrier", "movable_object.trafficcone": "traffic cone"}
PL = {"bus": "buses"}


def direction(x, y):
    az = math.degrees(math.atan2(y, x))
    if -27.5 <= az <= 27.5:
        return "front"
    if 27.5 < az <= 82.5:
        return "front left"
    if 82.5 < az <= 145:
        return "back left"
    if -82.5 <= az < -27.5:
        return "front right"
    if -145 <= az < -82.5:
        return "back right"
    return "back"


def where(d):
    return {"front": "in front of the ego car", "back": "behind the ego car"}.get(d, f"to the {d} of the ego car")


def oxford(items):
    if len(items) == 1:
        return items[0]
    if len(items) == 2:
        return f"{items[0]} and {items[1]}"
    return ", ".join(items[:-1]) + ", and " + items[-1]


def frame_objects(nusc, sample_token):
    """Objects of a sample from the devkit: ego-frame centre, category, attribute, yaw."""
    sample = nusc.get("sample", sample_token)
    sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    pose = nusc.get("ego_pose", sd["ego_pose_token"])
    q_inv = Quaternion(pose["rotation"]).inverse
    out = {}
    for tok in sample["anns"]:
        ann = nusc.get("sample_annotation", tok)
        box = nusc.get_box(tok)
        box.translate(-np.array(pose["translation"]))
        box.rotate(q_inv)
        attrs = [nusc.get("attribute", a)["name"] for a in ann["attribute_tokens"]]
        out[tok] = {"x": box.center[0], "y": box.center[1], "cat": ann["category_name"],
                    "attr": attrs[0] if attrs else None, "yaw": Quaternion(ann["rotation"]).yaw_pitch_roll[0]}
    return out


class Rederive:
    def __init__(self, nusc, gt, sample_token, frame):
        self.g = gt[sample_token]
        self.objs = frame_objects(nusc, sample_token)
        self.tags = list(frame["key_object_infos"])
        self.info = frame["key_object_infos"]
        self.key = {t: self.g["key_objects"][t] for t in self.tags}

    # ---- ego
    def speed_class(self):
        v = np.mean(self.g["ego_future_speeds"])
        if v < C.MOVING_SPEED:
            return "not moving"
        return ("driving slowly" if v < C.SLOW_MAX else "driving with normal speed" if v < C.NORMAL_MAX
                else "driving fast" if v < C.FAST_MAX else "driving very fast")

    def steer(self):
        if self.speed_class() == "not moving":
            return "going straight"
        d = math.degrees(self.g["ego_future_yaw"][-1])
        side = "left" if d > 0 else "right"
        if abs(d) < C.STRAIGHT_MAX_DEG:
            return "going straight"
        return f"slightly steering to the {side}" if abs(d) < C.SLIGHT_MAX_DEG else f"steering to the {side}"

    def action(self):
        v0, v3 = self.g["ego_speed"], self.g["ego_future_speeds"][-1]
        if max(v0, v3) < C.MOVING_SPEED:
            return "stationary"
        if v3 < C.MOVING_SPEED:
            return "stop"
        return "decelerate" if v3 < v0 - C.SPEED_CHANGE else "accelerate" if v3 > v0 + C.SPEED_CHANGE else "keep"

    # ---- objects
    def obj(self, tag):
        return self.objs[self.key[tag]["ann"]]

    def is_light(self, tag):
        return self.obj(tag)["cat"] == "static_object.traffic_light"

    def dist(self, tag):
        o = self.obj(tag)
        return math.hypot(o["x"], o["y"])

    def motion(self, tag):
        k = self.key[tag]
        if np.mean(k["future_speeds"]) < C.MOVING_SPEED:
            return "Stopped."
        dyaw = math.degrees((k["future"][-1][2] - self.obj(tag)["yaw"] + math.pi) % (2 * math.pi) - math.pi)
        return "Turn left." if dyaw > C.TURN_DEG else "Turn right." if dyaw < -C.TURN_DEG else "Going ahead."

    def in_path(self, tag):
        if self.is_light(tag):
            return self.key[tag]["ann"] == self.g["governing_light"]
        o = self.obj(tag)
        pts = np.array([[0.0, 0.0]] + self.g["ego_future_traj"])
        if np.linalg.norm(np.diff(pts, axis=0), axis=1).sum() < 5.0:
            pts = np.array([[0.0, 0.0], [10.0, 0.0]])
        best = min(self._seg_dist(np.array([o["x"], o["y"]]), a, b) for a, b in zip(pts[:-1], pts[1:]))
        return o["x"] > 0 and best < C.PATH_HALF_WIDTH

    @staticmethod
    def _seg_dist(p, a, b):
        d = b - a
        t = np.clip(np.dot(p - a, d) / max(np.dot(d, d), 1e-9), 0, 1)
        return np.linalg.norm(a + t * d - p)

    def priority(self):
        return sorted(self.tags, key=lambda t: (not self.in_path(t), self.dist(t)))

    def counted(self, d):
        out = []
        for tok in self.g["perceived"]:
            o = self.objs[tok]
            if o["cat"] in CLS and direction(o["x"], o["y"]) == d and math.hypot(o["x"], o["y"]) <= C.PERCEPTION_RANGE:
                out.append(o)
        return out


def expected(r: Rederive, q: str):
    """The answer the ground truth implies for question ``q`` (None if the family is unknown)."""
    tagre = r"(<c\d+,CAM_[A-Z_]+,[\d.]+,[\d.]+>)"
    if q.startswith("What are the important objects"):
        descs = []
        for t in r.tags:
            o = r.obj(t)
            d = r.info[t]["Visual_description"].rstrip(".")
            descs.append(f"a {d[0].lower() + d[1:]} to the {direction(o['x'], o['y'])} of the ego vehicle")
        if len(r.tags) == 1:
            return f"There is {descs[0]}. The ID of this object is {r.tags[0]}."
        return f"There is {oxford(descs)}. The IDs of these objects are {oxford(r.tags)}."
    m = re.fullmatch(r"What are objects to the (.+) of the ego car\?", q)
    if m:
        objs = sorted(r.counted(m.group(1)), key=lambda o: math.hypot(o["x"], o["y"]))
        classes = list(dict.fromkeys(CLS[o["cat"]] for o in objs))
        n = {c: sum(CLS[o["cat"]] == c for o in objs) for c in classes}
        items = [f"{NUMW.get(n[c], 'many')} {c if n[c] == 1 else PL.get(c, c + 's')}" for c in classes]
        return f"{'There is' if n[classes[0]] == 1 else 'There are'} {oxford(items)} {where(m.group(1))}."
    m = re.fullmatch(r"What is the status of the (\w+) that (?:is|are) to the (.+) of the ego car\?", q)
    if m:
        plural = m.group(1) if m.group(1) in ("cars", "trucks", "buses", "pedestrians") else None
        c = {"buses": "bus"}.get(m.group(1), m.group(1).rstrip("s")) if plural else m.group(1)
        words = [{"vehicle.moving": "moving", "vehicle.parked": "parked", "vehicle.stopped": "stopped",
                  "pedestrian.moving": "moving", "pedestrian.standing": "standing"}[o["attr"]]
                 for o in r.counted(m.group(2)) if CLS[o["cat"]] == c]
        pl = PL.get(c, c + "s")
        if len(words) == 1:
            assert not plural
            return (f"The pedestrian to the {m.group(2)} of the ego car is {words[0]}." if c == "pedestrian"
                    else f"One {c} is {words[0]}.")
        order = ["moving", "stopped", "parked", "standing"]
        groups = sorted(((w, words.count(w)) for w in set(words)), key=lambda g: (-g[1], order.index(g[0])))
        if len(groups) == 1:
            return f"{NUMW.get(len(words), 'many').capitalize()} {pl} are {words[0]}."
        w1, c1 = groups[0]
        first = (f"One of the {pl} is {w1}" if c1 == 1 else f"Many {pl} are {w1}" if c1 > 3
                 else f"{NUMW[c1].capitalize()} of the {pl} are {w1}")
        rest = [f"{NUMW.get(k, 'many')} {'is' if k == 1 else 'are'} {w}" for w, k in groups[1:]]
        clauses = [first] + rest
        return (clauses[0] + ", and " + clauses[1] if len(clauses) == 2
                else ", ".join(clauses[:-1]) + ", and " + clauses[-1]) + "."
    m = re.fullmatch(r"Are there (.+) to the (.+) of the ego car\?", q)
    if m:
        x = m.group(1)
        words = x.split()
        if x in ("barriers", "traffic cones"):
            c, attr = x[:-1], None
        elif "riders" in x:
            c = words[0].rstrip("s")
            attr = "cycle.with_rider" if "with riders" in x else "cycle.without_rider"
        else:
            c = {"buses": "bus"}.get(words[1], words[1].rstrip("s"))
            attr = ("pedestrian." if c == "pedestrian" else "vehicle.") + words[0]
        hit = any(CLS[o["cat"]] == c and (attr is None or o["attr"] == attr) for o in r.counted(m.group(2)))
        return "Yes." if hit else "No."
    m = re.fullmatch(r"What is the observed status of object " + tagre + r"\?", q)
    if m:
        return "Moving." if r.key[m.group(1)]["speed"] >= C.MOVING_SPEED else "Stationary."
    m = re.fullmatch(r"What is the moving status of object " + tagre + r"\?", q)
    if m:
        return r.motion(m.group(1))
    m = re.fullmatch(r"What is the visual description of " + tagre + r"\?", q)
    if m:
        t = m.group(1)
        if r.is_light(t):
            return r.obj(t)["attr"].split(".")[1].capitalize() + " light."
        return r.info[t]["Visual_description"]
    m = re.fullmatch(r"Is " + tagre + r" a traffic sign or a road barrier\?", q)
    if m:
        return "Yes." if r.obj(m.group(1))["cat"] in ("static_object.traffic_light", "movable_object.barrier",
                                                      "movable_object.trafficcone") else "No."
    m = re.fullmatch(r"Would " + tagre + r" be in the moving direction of the ego vehicle\?", q)
    if m:
        return "Yes." if r.in_path(m.group(1)) else "No."
    m = re.fullmatch(r"What is the future state of " + tagre + r"\?", q)
    if m:
        return {"Stopped.": "Stationary.", "Going ahead.": "Keep going straight."}.get(r.motion(m.group(1)),
                                                                                        r.motion(m.group(1)))
    act = {"stationary": ("remain stationary", "remain stationary"),
           "stop": ("decelerate gradually until it comes to a stop", "brake gently to a stop"),
           "decelerate": ("slow down and go ahead", "decelerate gradually without braking"),
           "accelerate": ("accelerate and go ahead", "accelerate and go ahead"),
           "keep": ("keep going ahead at the same speed", "keep going at the same speed")}[r.action()]
    if q.startswith("What object should the ego vehicle notice first"):
        ords = ["Firstly", "Secondly", "Thirdly", "Fourthly", "Fifthly"]
        st = {"Stopped.": "stationary", "Going ahead.": "going ahead", "Turn left.": "turning left",
              "Turn right.": "turning right"}
        return " ".join(f"{ords[i]} notice that {t}. The object is "
                        f"{'a traffic sign' if r.is_light(t) else st[r.motion(t)]}, so the ego vehicle should "
                        f"{act[0]}." for i, t in enumerate(r.priority()))
    m = re.fullmatch(r"What actions could the ego vehicle take based on " + tagre + r"\? Why take this action "
                     r"and what's the probability\?", q)
    if m:
        t = m.group(1)
        if r.is_light(t) and r.key[t]["ann"] == r.g["governing_light"]:
            reason = "to follow the traffic rules"
        elif r.in_path(t) and r.action() in ("stationary", "stop", "decelerate"):
            reason = "to maintain a safe distance"
        else:
            reason = "that there is no safety issue"
        return f"The action is to {act[1]}. The reason is {reason}, which has a high probability."
    m = re.fullmatch(r"What actions taken by the ego vehicle can lead to a collision with " + tagre + r"\?", q)
    if m:
        t = m.group(1)
        o = r.obj(t)
        if r.is_light(t) or r.dist(t) > 30 or (abs(o["y"]) >= C.PATH_HALF_WIDTH and o["x"] <= 0):
            return "No such action will lead to a collision."
        if abs(o["y"]) < C.PATH_HALF_WIDTH:
            return "Accelerate and go straight." if o["x"] > 0 else "Back up."
        side = "left" if o["y"] > 0 else "right"
        return f"{'Moderate' if o['x'] > abs(o['y']) else 'Sharp'} {side} turn."
    m = re.fullmatch(r"Is " + tagre + r" an object that the ego vehicle should consider in the current scene\?", q)
    if m:
        return "Yes." if r.in_path(m.group(1)) or r.dist(m.group(1)) < C.CONSIDER_RANGE else "No."
    if q == "What is the traffic signal that the ego vehicle should pay attention to?":
        g = r.g["governing_light"]
        return "None." if g is None else r.objs[g]["attr"].split(".")[1].capitalize() + " light."
    if q == "What is the target action of the ego vehicle?":
        s = r.steer()
        if r.speed_class() == "not moving":
            return "Stationary."
        return f"Turn {s.split()[-1]}." if s.startswith("steering") else "Go straight."
    if q.startswith("In this scenario, what are"):
        safe = {"stationary": ["keep stationary"], "stop": ["brake gently to a stop", "decelerate gradually without braking"],
                "decelerate": ["decelerate gradually without braking", "brake gently to a stop"],
                "accelerate": ["accelerate and go ahead", "keep going at the same speed"],
                "keep": ["keep going at the same speed", "decelerate gradually without braking"]}[r.action()]
        danger = (["accelerate and go ahead", "back up"] if r.action() in ("stationary", "stop", "decelerate")
                  else ["brake suddenly", "back up"])
        s = r.steer()
        if r.speed_class() != "not moving" and s != "going straight":
            side = s.split()[-1]
            safe.append(f"turn {side}")
            danger.append(f"turn {'right' if side == 'left' else 'left'}")
        items = safe if "safe" in q else danger
        txt = f"{items[0]}, {items[1]}" if len(items) == 2 else ", ".join(items[:-1]) + ", and " + items[-1]
        return txt[0].upper() + txt[1:] + "."
    if q.startswith("What is the priority of the objects"):
        return ", ".join(r.priority()) + "."
    if q == "Predict the behavior of the ego vehicle.":
        return f"The ego vehicle is {r.steer()}. The ego vehicle is {r.speed_class()}."
    return None


def test_every_answer_rederived_from_ground_truth(world, nusc):
    seen = set()
    n = 0
    for scene in world["drivelm"].values():
        for tok, fr in scene["key_frames"].items():
            r = Rederive(nusc, world["gt"], tok, fr)
            for stage, items in fr["QA"].items():
                for qa in items:
                    exp = expected(r, qa["Q"])
                    assert exp is not None, f"no re-derivation rule for question {qa['Q']!r}"
                    assert qa["A"] == exp, (stage, qa["Q"], qa["A"], exp)
                    n += 1
                    for name, fam in FAMILIES.items():
                        for t in fam.templates:
                            pat = re.escape(t).replace(re.escape("<OBJ>"), "<[^>]+>")
                            for slot in ("\\{DIR\\}", "\\{CLS\\}", "\\{X\\}"):
                                pat = pat.replace(slot, ".+")
                            if re.fullmatch(pat, qa["Q"]):
                                seen.add(name)
    assert n > 500
    assert seen == set(FAMILIES), f"families never generated: {set(FAMILIES) - seen}"


def test_directions_match_config_sectors():
    for az in np.linspace(-179.5, 179.5, 360):
        x, y = math.cos(math.radians(az)), math.sin(math.radians(az))
        assert direction(x, y) == C.direction_of(float(az))
