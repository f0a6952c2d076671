"""The frame figure draws things where their geometry says, checked on the PNG's pixels.

A synthetic frame: uniform grey cameras, one pinhole front camera (the other five look backwards,
so the box is behind them), one box in front-left of the ego, and a ground-truth / predicted
trajectory bending left / right. The expected pixel positions are computed here, independently of
the module's own helpers: box corners from (x, y, z, l, w, h, yaw), the pinhole projection, the
BEV axes (-y, x), and the panels' data -> figure-fraction transforms (read from the saved figure)
scaled to the PNG size. Each check is two-sided: every expected point has its colour within a few
pixels, and no pixel of that colour lies away from the expected drawing (a panel that draws
mirrored, transposed, unprojected or not at all fails).
"""
import matplotlib.pyplot as plt
import numpy as np
import pytest

from bevlm.visualization import PANELS, draw_frame

IMG_W, IMG_H, FOCAL = 320, 180, 150.0
GREY = 128
BOX = np.array([12.0, 2.0, 0.0, 8.0, 3.0, 1.5, 0.5])  # x, y, z, l, w, h, yaw (ego frame, m / rad): a bus
BOX_LABEL = 0  # tab20 colour 0
BOX_RGB = plt.get_cmap("tab20").colors[BOX_LABEL]
GT_RGB, PRED_RGB = (0.0, 0.5, 0.0), (1.0, 0.0, 0.0)  # matplotlib "g" and "r"
GT_TRAJ = np.array([[2.0, 0.0], [4.0, 0.3], [6.0, 0.8], [8.0, 1.5], [10.0, 2.4], [12.0, 3.5]])  # bends left
PRED_TRAJ = np.array([[2.0, 0.0], [4.0, -0.3], [6.0, -0.8], [8.0, -1.5], [10.0, -2.4], [12.0, -3.5]])
NEAR_PX = 5.0  # "at the location the geometry implies": line widths, markers, antialiasing
DPI = 90  # draw_frame saves at this dpi (only used to sanity-check the PNG size)


def _ego2img(forward: bool) -> np.ndarray:
    """Pinhole camera at the ego origin looking along +x (or -x): u right, v down."""
    rot = np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]], float)  # ego -> camera (x right, y down, z ahead)
    if not forward:
        rot = np.array([[0, 1, 0], [0, 0, -1], [-1, 0, 0]], float)
    k = np.array([[FOCAL, 0, IMG_W / 2], [0, FOCAL, IMG_H / 2], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = k @ rot
    return m


def _corners(box: np.ndarray) -> np.ndarray:
    """``[8, 3]`` corners, computed from the box parameters alone."""
    x, y, z, length, width, height, yaw = box
    c, s = np.cos(yaw), np.sin(yaw)
    out = []
    for sx in (1, -1):
        for sy in (1, -1):
            for sz in (1, -1):
                lx, ly = sx * length / 2, sy * width / 2
                out.append([x + c * lx - s * ly, y + s * lx + c * ly, z + sz * height / 2])
    return np.array(out)


def _pinhole(points: np.ndarray) -> np.ndarray:
    """``[N, 2]`` pixel (u, v) of ego points in the front camera: u = cx - f y / x, v = cy - f z / x."""
    x, y, z = points.T
    return np.stack([IMG_W / 2 - FOCAL * y / x, IMG_H / 2 - FOCAL * z / x], 1)


def _segments_box_image():
    uv = _pinhole(_corners(BOX))
    edges = [(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]  # 12 edges
    return [(uv[a], uv[b]) for a, b in edges]


def _segments_box_bev():
    c = _corners(BOX)[::2, :2]  # the 4 bottom corners (z = -h/2), (x, y)
    plot = np.stack([-c[:, 1], c[:, 0]], 1)  # BEV axes: horizontal -y (left is left), vertical x (forward up)
    order = [0, 1, 3, 2, 0]  # (+l,+w), (+l,-w), (-l,-w), (-l,+w)
    return [(plot[order[i]], plot[order[i + 1]]) for i in range(4)]


def _segments_traj(traj):
    plot = np.stack([-traj[:, 1], traj[:, 0]], 1)
    return [(plot[i], plot[i + 1]) for i in range(len(plot) - 1)]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """``(png [H, W, 3] float, {panel title: (axes, figure)})`` of the synthetic frame."""
    saved = []
    orig = plt.Figure.savefig

    def savefig(fig, *a, **kw):
        out = orig(fig, *a, **kw)
        old_dpi = fig.dpi  # text (the legend) lays out slightly differently at another dpi
        fig.set_dpi(kw.get("dpi", old_dpi))
        fig.canvas.draw()
        to_frac = fig.transFigure.inverted().transform  # extents as drawn in the PNG, as fractions
        saved.append({id(artist): to_frac(artist.get_window_extent().get_points())
                      for ax in fig.axes for artist in (ax, ax.get_legend()) if artist is not None})
        fig.set_dpi(old_dpi)
        saved.append(fig)
        return out

    mp = pytest.MonkeyPatch()
    mp.setattr(plt.Figure, "savefig", savefig)
    try:
        imgs = np.full((6, IMG_H, IMG_W, 3), GREY, np.uint8)
        ego2img = np.stack([_ego2img(i == 0) for i in range(6)])
        path = draw_frame(str(tmp_path_factory.mktemp("vis") / "frame.png"), imgs, ego2img, BOX[None],
                          np.array([BOX_LABEL]), {}, [], gt_traj=GT_TRAJ, pred_traj=PRED_TRAJ)
    finally:
        mp.undo()
    png = plt.imread(path)[..., :3]
    extents, fig = saved[-2:]
    assert png.shape[:2] == (round(fig.get_figheight() * DPI), round(fig.get_figwidth() * DPI))
    _EXTENTS.update(extents)
    return png, {ax.get_title(): ax for ax in fig.axes}


_EXTENTS: dict = {}  # id(artist) -> [[x0, y0], [x1, y1]] figure fractions, recorded when saved


def _to_png(ax, png, points) -> np.ndarray:
    """Data coordinates ``[N, 2]`` of ``ax`` -> PNG pixel (col, row), via figure fractions."""
    frac = ax.figure.transFigure.inverted().transform(ax.transData.transform(np.asarray(points, float)))
    h, w = png.shape[:2]
    return np.stack([frac[:, 0] * w, (1 - frac[:, 1]) * h], 1)


def _bbox_px(ax, png, artist=None):
    """``(col0, row0, col1, row1)`` PNG pixels of an axes (or of one of its artists)."""
    frac = _EXTENTS[id(artist or ax)]
    h, w = png.shape[:2]
    return frac[0, 0] * w, (1 - frac[1, 1]) * h, frac[1, 0] * w, (1 - frac[0, 1]) * h


def _colour_mask(png, rgb, background) -> np.ndarray:
    """Pixels that are ``rgb`` blended over ``background`` at least half-way (antialiased lines)."""
    d = np.asarray(rgb, float) - np.asarray(background, float)
    diff = png - np.asarray(background, float)
    alpha = diff @ d / (d @ d)
    residual = np.linalg.norm(diff - alpha[..., None] * d, axis=-1)
    return (alpha >= 0.5) & (residual < 0.1)


def _distance_to_segments(pix: np.ndarray, segments) -> np.ndarray:
    """``[N]`` distance of pixel centres ``[N, 2]`` (col, row) to the nearest segment."""
    best = np.full(len(pix), np.inf)
    for a, b in segments:
        ab = b - a
        t = np.clip(((pix - a) @ ab) / max(ab @ ab, 1e-9), 0, 1)
        best = np.minimum(best, np.linalg.norm(pix - (a + t[:, None] * ab), axis=1))
    return best


def _check_drawn_where_expected(png, ax, segments_data, rgb, background, exclude=()):
    """Every segment end / midpoint has ``rgb`` within NEAR_PX, and every ``rgb`` pixel inside the
    axes (outside ``exclude`` boxes) lies within NEAR_PX of a segment."""
    c0, r0, c1, r1 = _bbox_px(ax, png)
    mask = _colour_mask(png, rgb, background)
    inside = np.zeros_like(mask)
    inside[int(np.ceil(r0)) + 1:int(r1) - 1, int(np.ceil(c0)) + 1:int(c1) - 1] = True
    for e0, f0, e1, f1 in exclude:
        inside[int(f0) - 1:int(np.ceil(f1)) + 2, int(e0) - 1:int(np.ceil(e1)) + 2] = False
    rows, cols = np.nonzero(mask & inside)
    pix = np.stack([cols + 0.5, rows + 0.5], 1)
    assert len(pix) > 0, "nothing drawn in the expected colour"
    segments = [tuple(_to_png(ax, png, seg)) for seg in segments_data]
    far = _distance_to_segments(pix, segments)
    assert far.max() <= NEAR_PX, f"{(far > NEAR_PX).sum()} pixels of the colour away from the geometry, " \
                                 f"up to {far.max():.1f} px, e.g. at {pix[far.argmax()]}"
    anchors = np.array([p for a, b in segments for p in (a, (a + b) / 2, b)])
    near = _distance_to_segments(anchors, [(p, p) for p in pix])  # anchor -> nearest coloured pixel
    assert near.max() <= NEAR_PX, f"no drawing near {anchors[near.argmax()]} ({near.max():.1f} px away)"
    return len(pix)


def test_box_is_drawn_on_its_projection_in_the_front_camera(rendered):
    png, axes = rendered
    grey = (GREY / 255,) * 3
    uv = _pinhole(_corners(BOX))
    assert (uv[:, 0] > 0).all() and (uv[:, 0] < IMG_W).all() and (uv[:, 1] > 0).all() and (uv[:, 1] < IMG_H).all()
    n = _check_drawn_where_expected(png, axes[PANELS[0]], _segments_box_image(), BOX_RGB, grey)
    assert n > 100  # 12 edges, tens of pixels each


def test_box_behind_a_camera_is_not_drawn_in_it(rendered):
    png, axes = rendered
    grey = (GREY / 255,) * 3
    for cam in PANELS[1:6]:
        c0, r0, c1, r1 = _bbox_px(axes[cam], png)
        window = png[int(np.ceil(r0)) + 1:int(r1) - 1, int(np.ceil(c0)) + 1:int(c1) - 1]
        assert np.abs(window - grey).max() < 0.02, cam  # the plain grey image, nothing on it


def test_box_is_drawn_at_its_place_in_both_bev_panels(rendered):
    png, axes = rendered
    for panel in PANELS[6:8]:
        ax = axes[panel]
        _check_drawn_where_expected(png, ax, _segments_box_bev(), BOX_RGB, (1.0, 1.0, 1.0))
        # the box is front-left: above and left of the ego (black) in the panel
        box_px = _to_png(ax, png, [[-BOX[1], BOX[0]]])[0]
        ego_px = _to_png(ax, png, [[0.0, 0.0]])[0]
        assert box_px[0] < ego_px[0] and box_px[1] < ego_px[1]
        ego_window = png[int(ego_px[1]) - 2:int(ego_px[1]) + 3, int(ego_px[0]) - 2:int(ego_px[0]) + 3]
        assert ego_window.max() < 0.2, panel  # the ego rectangle is drawn in black at the origin


def test_trajectories_are_drawn_through_their_waypoints(rendered):
    png, axes = rendered
    ax = axes[PANELS[8]]
    legend = _bbox_px(ax, png, ax.get_legend())
    white = (1.0, 1.0, 1.0)
    _check_drawn_where_expected(png, ax, _segments_traj(GT_TRAJ), GT_RGB, white, exclude=[legend])
    _check_drawn_where_expected(png, ax, _segments_traj(PRED_TRAJ), PRED_RGB, white, exclude=[legend])
    # left turn (ground truth, +y) ends left of the start, right turn (prediction) right of it
    gt_end, pred_end, start = _to_png(ax, png, [[-GT_TRAJ[-1, 1], GT_TRAJ[-1, 0]],
                                                 [-PRED_TRAJ[-1, 1], PRED_TRAJ[-1, 0]], [0.0, 2.0]])
    assert gt_end[0] < start[0] - 50 < start[0] + 50 < pred_end[0]
