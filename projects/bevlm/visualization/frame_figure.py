"""One PNG per key frame: 6 cameras with projected boxes and c-tags, BEV (GT + prediction),
trajectories, and the QA with predictions."""
from __future__ import annotations

import os
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bevlm.datasets.drivelm_io import parse_ctags  # noqa: E402
from bevlm.structures import CAMERA_NAMES  # noqa: E402

#: Panel titles of the figure, in drawing order (tests check them).
PANELS = tuple(CAMERA_NAMES) + ("BEV ground truth", "BEV prediction (aux occupancy)", "Trajectory", "QA")
_CLASS_COLOURS = plt.get_cmap("tab20").colors


def box_corners_ego(box: np.ndarray) -> np.ndarray:
    """8 corners ``[8, 3]`` of a box (x, y, z, l, w, h, yaw) in the ego frame."""
    x, y, z, length, width, height, yaw = box[:7]
    dx, dy, dz = length / 2, width / 2, height / 2
    local = np.array([[sx * dx, sy * dy, sz * dz] for sx in (1, -1) for sy in (1, -1) for sz in (1, -1)])
    rot = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    return local @ rot.T + np.array([x, y, z])


def _project(ego2img: np.ndarray, pts: np.ndarray):
    hom = np.concatenate([pts, np.ones((len(pts), 1))], 1) @ ego2img.T
    depth = hom[:, 2]
    return hom[:, :2] / np.clip(depth[:, None], 1e-5, None), depth


def _draw_camera(ax, img, ego2img, cam, boxes, labels, tags, scale_xy):
    ax.imshow(img)
    h, w = img.shape[:2]
    edges = [(0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7)]
    for box, label in zip(boxes, labels):
        uv, depth = _project(ego2img, box_corners_ego(box))
        if (depth <= 0.1).any():
            continue
        if uv[:, 0].max() < 0 or uv[:, 0].min() > w or uv[:, 1].max() < 0 or uv[:, 1].min() > h:
            continue
        colour = _CLASS_COLOURS[int(label) % len(_CLASS_COLOURS)]
        for a, b in edges:
            ax.plot(uv[[a, b], 0], uv[[a, b], 1], color=colour, linewidth=0.8)
    for n, tag_cam, x, y in tags:
        if tag_cam == cam:
            ax.plot(x * scale_xy[0], y * scale_xy[1], "r+", markersize=8)
            ax.text(x * scale_xy[0], y * scale_xy[1], f"c{n}", color="yellow", fontsize=7)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_title(cam, fontsize=8)
    ax.axis("off")


def _draw_bev_boxes(ax, boxes, labels, pc_range):
    for box, label in zip(boxes, labels):
        c = box_corners_ego(box)[[0, 2, 6, 4, 0], :2]  # bottom rectangle
        ax.plot(-c[:, 1], c[:, 0], color=_CLASS_COLOURS[int(label) % len(_CLASS_COLOURS)], linewidth=1)
    ax.add_patch(plt.Rectangle((-0.925, -1.0), 1.85, 4.084, color="k"))  # ego
    ax.set_xlim(-pc_range[4], -pc_range[1])
    ax.set_ylim(pc_range[0], pc_range[3])
    ax.set_aspect("equal")


def draw_frame(out_path: str, imgs: np.ndarray, ego2img: np.ndarray, gt_boxes: np.ndarray,
               gt_labels: np.ndarray, key_object_infos: dict, qa: list, pred_answers: dict | None = None,
               gt_traj: np.ndarray | None = None, gt_traj_mask: np.ndarray | None = None,
               pred_traj: np.ndarray | None = None, occupancy: np.ndarray | None = None,
               pc_range=(-32.0, -32.0, -3.0, 32.0, 32.0, 3.0), ctag_scale=(1.0, 1.0),
               title: str = "", max_qa: int = 14) -> str:
    """Draw one key frame into a PNG and return its path.

    Args:
        imgs: ``[N, H, W, 3]`` uint8 images of the cameras (CAMERA_NAMES order).
        ego2img: ``[N, 4, 4]`` projection of those images.
        gt_boxes / gt_labels: ``[M, >=7]`` ego-frame boxes and ``[M]`` class indices.
        key_object_infos: DriveLM key objects (c-tags drawn as red crosses).
        qa: list of :class:`QAItem`; ``pred_answers``: index -> predicted answer.
        gt_traj / gt_traj_mask / pred_traj: ``[6, 2]`` ego-frame waypoints.
        occupancy: ``[Hb, Wb]`` predicted occupancy in [0, 1] (row 0 = front, column 0 = left).
        ctag_scale: pixel scale from the c-tag frame to ``imgs`` (stored -> network size).
    """
    fig = plt.figure(figsize=(16, 11))
    grid = fig.add_gridspec(3, 4, height_ratios=[1, 1, 1.3])
    tags = [t for tag in key_object_infos for t in parse_ctags(tag)]
    for i, cam in enumerate(CAMERA_NAMES):
        ax = fig.add_subplot(grid[i // 3, i % 3])
        _draw_camera(ax, imgs[i], ego2img[i], cam, gt_boxes, gt_labels, tags, ctag_scale)
    ax = fig.add_subplot(grid[0, 3])
    _draw_bev_boxes(ax, gt_boxes, gt_labels, pc_range)
    ax.set_title(PANELS[6], fontsize=8)
    ax = fig.add_subplot(grid[1, 3])
    if occupancy is not None:
        # row 0 = front (x_max), column 0 = left (y_max): matches the plot's (-y, x) axes
        ax.imshow(occupancy, extent=(-pc_range[4], -pc_range[1], pc_range[0], pc_range[3]),
                  cmap="viridis", vmin=0, vmax=1)
    else:
        ax.text(0.5, 0.5, "no model prediction", ha="center", va="center", transform=ax.transAxes)
    _draw_bev_boxes(ax, gt_boxes, gt_labels, pc_range)
    ax.set_title(PANELS[7], fontsize=8)
    ax = fig.add_subplot(grid[2, 0])
    if gt_traj is not None:
        m = np.ones(len(gt_traj), bool) if gt_traj_mask is None else gt_traj_mask.astype(bool)
        ax.plot(-gt_traj[m, 1], gt_traj[m, 0], "g.-", label="ground truth")
    if pred_traj is not None:
        ax.plot(-pred_traj[:, 1], pred_traj[:, 0], "r.--", label="prediction")
    ax.plot(0, 0, "ks")
    reach = max([8.0] + [float(np.abs(t).max()) for t in (gt_traj, pred_traj) if t is not None])
    ax.set_xlim(-reach / 2, reach / 2)  # lateral (left is left)
    ax.set_ylim(-2.0, reach + 2.0)       # forward is up
    ax.set_xlabel("-y (m)", fontsize=7)
    ax.set_ylabel("x (m)", fontsize=7)
    ax.legend(fontsize=7)
    ax.set_title(PANELS[8], fontsize=8)
    ax = fig.add_subplot(grid[2, 1:])
    ax.axis("off")
    lines = []
    for item in qa[:max_qa]:
        lines.append("Q: " + textwrap.shorten(item.question, 150))
        lines.append("   GT: " + textwrap.shorten(item.answer, 140))
        if pred_answers is not None and item.index in pred_answers:
            lines.append("   PR: " + textwrap.shorten(pred_answers[item.index], 140))
    ax.text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=6.5)
    ax.set_title(PANELS[9], fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = out_path + ".tmp.png"
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, out_path)
    return out_path
