"""Renderer properties: z-order / occlusion bookkeeping and near-plane clipping."""
import numpy as np

from bevlm.world.agents import Actor
from bevlm.world.render import GroundMap, Renderer, _clip_near


def _actor(kind, cat, size, x, y, uid, body=""):
    a = Actor(kind, cat, size, (200, 30, 30), "Red sedan.", np.array([[x, y, 0.0, 0.0]]), body=body)
    a.uid = uid
    return a


def _ground():
    return GroundMap(np.full((50, 50), 2, np.uint8), -100.0, -100.0, np.zeros((8, 8)), np.zeros((0, 2)))


def test_hidden_object_has_no_visible_pixels():
    r = Renderer((160, 90), "day")
    bus = _actor("bus", "vehicle.bus.rigid", (11.5, 2.55, 3.2), 12.0, 0.0, 0)
    car = _actor("car", "vehicle.car", (4.5, 1.85, 1.5), 30.0, 0.0, 1, "sedan")
    _, stats = r.render(_ground(), np.zeros(4), [car, bus], 0)
    front = stats[0]
    assert front[1][1] > 0 and front[1][0] == 0, "the car behind the bus is drawn but fully covered"
    assert front[0][0] == front[0][1] > 0, "the bus in front is fully visible"
    # drawing order does not depend on the list order
    _, stats2 = r.render(_ground(), np.zeros(4), [bus, car], 0)
    assert stats2[0] == front


def test_side_by_side_objects_fully_visible_and_night_is_darker():
    day, night = Renderer((160, 90), "day"), Renderer((160, 90), "night")
    a = _actor("car", "vehicle.car", (4.5, 1.85, 1.5), 15.0, 3.0, 0, "sedan")
    b = _actor("car", "vehicle.car", (4.5, 1.85, 1.5), 15.0, -3.0, 1, "SUV")
    imgs, stats = day.render(_ground(), np.zeros(4), [a, b], 0)
    for uid in (0, 1):
        vis, unocc = stats[0][uid]
        assert vis == unocc > 20
    nimgs, _ = night.render(_ground(), np.zeros(4), [a, b], 0)
    assert nimgs[0].mean() < 0.5 * imgs[0].mean()


def test_near_plane_clip():
    poly = np.array([[-1.0, 0.0, -1.0], [1.0, 0.0, -1.0], [1.0, 0.0, 3.0], [-1.0, 0.0, 3.0]])
    out = _clip_near(poly)
    assert (out[:, 2] >= 0.1 - 1e-9).all() and len(out) == 4
    assert np.isclose(out[:, 2].min(), 0.1)
    # an object straddling the camera still renders without error
    r = Renderer((96, 54), "day")
    truck = _actor("truck", "vehicle.truck", (7.5, 2.5, 3.2), 1.0, 0.0, 0)
    _, stats = r.render(_ground(), np.zeros(4), [truck], 0)
    assert stats[0][0][0] > 0
