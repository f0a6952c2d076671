"""Data preparation.

  python tools/create_data.py world --out data/mini_world [--scenes 36 --seed 0 --frames 16 ...]
      generate the nuScenes-format mini world with DriveLM QA, then its info files
  python tools/create_data.py nuscenes --root data/nuscenes --version v1.0-trainval \
      --drivelm-json train=data/drivelm/v1_1_train_nus.json --out data/nuscenes/infos
      info files (mmdet3d v2 layout) from a nuScenes-format database joined with DriveLM QA
  python tools/create_data.py drivelm --json QA.json --image-root DIR --out infos.pkl
      DriveLM-only source (images + QA, no calibration): nominal camera rig
  python tools/create_data.py drivelm-split --json v1_1_train_nus.json --out data/drivelm \
      [--val-fraction 0.1 --seed 0]
      train / val split of a DriveLM file by scene (deterministic): OUT/drivelm_train.json,
      OUT/drivelm_val.json
  python tools/create_data.py drivelm-questions --json data/drivelm/drivelm_val.json --out data/drivelm/val_test \
      [--seed 0]
      the official test set of a DriveLM file with answers, both ways: OUT/test_eval.json (questions
      + answers + tags, for scoring) and OUT/questions.json (the same without answers: the layout of
      the challenge's v1_1_val_nus_q_only.json, for rehearsing tools/test.py --submission)
  python tools/create_data.py mmdet3d --infos data/mini_world/infos/bevlm_infos_{train,val}.pkl \
      --out data/mini_world/mmdet3d
      the same frames in mmdet3d 1.4's nuScenes info layout (LiDAR-frame boxes, file names under a
      data_prefix per channel): OUT/nuscenes_infos_<split>.pkl, readable by mmdet3d's NuScenesDataset
"""
import argparse
import logging
import os.path as osp
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("world", help="generate the mini world (+ its info files)")
    w.add_argument("--out", default="data/mini_world")
    w.add_argument("--scenes", type=int, default=36)
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--frames", type=int, default=16, help="key frames per scene (2 Hz)")
    w.add_argument("--image-size", type=int, nargs=2, default=(320, 180), metavar=("W", "H"))
    w.add_argument("--traffic-side", choices=["right", "left"], default="right")
    w.add_argument("--lighting", choices=["day", "night"], default="day")
    w.add_argument("--rig", choices=["nuscenes", "wide-high"], default="nuscenes",
                   help="camera rig: nominal nuScenes, or 0.6 m higher with a wider field of view")
    w.add_argument("--lidar-extrinsic", choices=["identity", "nuscenes"], default="identity",
                   help="LIDAR_TOP pose on the ego: the ego frame, or as on the nuScenes cars (rotated -90 deg "
                        "about z; exercises the LiDAR-frame infos of `mmdet3d`)")
    w.add_argument("--no-infos", action="store_true", help="only the database, no info files")
    w.add_argument("--workers", type=int, default=0,
                   help="processes generating scenes in parallel (0 = one per CPU core); the files are the same "
                        "bytes for any number")
    n = sub.add_parser("nuscenes", help="info files from a nuScenes-format database")
    n.add_argument("--root", required=True)
    n.add_argument("--version", default="v1.0-trainval")
    n.add_argument("--drivelm-json", action="append", default=[], metavar="SPLIT=PATH",
                   help="DriveLM QA per split, e.g. train=v1_1_train_nus.json (repeatable)")
    n.add_argument("--questions-json", action="append", default=[], metavar="SPLIT=PATH",
                   help="questions-only DriveLM test file per split, e.g. test=v1_1_val_nus_q_only.json: the "
                        "key frames of its scenes without QA, for tools/test.py --submission (repeatable)")
    n.add_argument("--out", required=True, help="output folder of the info files")
    for parser in (w, n):
        parser.add_argument("--domain", default=None,
                            help="data domain name stored in the infos' metainfo (multi-LoRA per domain)")
    n.add_argument("--skip-bad", action="store_true",
                   help="frames whose QA fail a check keep their sensor data without QA (counted) instead of "
                        "stopping the conversion")
    d = sub.add_parser("drivelm", help="DriveLM-only info file (nominal rig)")
    d.add_argument("--domain", default=None, help="data domain name stored in the metainfo")
    d.add_argument("--json", required=True)
    d.add_argument("--image-root", required=True, help="folder that holds samples/CAM_*/")
    d.add_argument("--out", required=True, help="output .pkl")
    d.add_argument("--skip-bad", action="store_true",
                   help="drop bad frames (empty QA, bad c-tags, missing / corrupt images; counted) instead of "
                        "stopping the conversion")
    sp = sub.add_parser("drivelm-split", help="train / val split of a DriveLM file by scene")
    sp.add_argument("--json", required=True, help="DriveLM v1.1 file with answers (e.g. v1_1_train_nus.json)")
    sp.add_argument("--out", required=True, help="folder for drivelm_train.json and drivelm_val.json")
    sp.add_argument("--val-fraction", type=float, default=0.1, help="share of the scenes in val")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--force", action="store_true", help="overwrite existing output files")
    q = sub.add_parser("drivelm-questions", help="test_eval.json + questions-only file of a DriveLM file")
    q.add_argument("--json", required=True, help="DriveLM v1.1 file with answers (e.g. OUT/drivelm_val.json)")
    q.add_argument("--out", required=True, help="folder for test_eval.json and questions.json")
    q.add_argument("--seed", type=int, default=0, help="seed of the multiple-choice options (as DriveLMMetric)")
    q.add_argument("--force", action="store_true", help="overwrite existing output files")
    m = sub.add_parser("mmdet3d", help="mmdet3d 1.4 nuScenes info files from this project's info files")
    m.add_argument("--infos", nargs="+", required=True, help="info files (bevlm_infos_<split>.pkl)")
    m.add_argument("--out", required=True, help="folder for nuscenes_infos_<split>.pkl")
    m.add_argument("--force", action="store_true", help="overwrite existing output files")
    return p.parse_args()


def _mmdet3d(args):
    from bevlm.datasets.converters.mmdet3d_infos import InfoConversionError, create_mmdet3d_infos

    outs = {}
    for src in args.infos:  # every output path checked before anything is written
        name = osp.basename(src)
        name = "nuscenes_infos" + name[len("bevlm_infos"):] if name.startswith("bevlm_infos") else name
        out = osp.join(args.out, name)
        if osp.exists(out) and not args.force:
            raise SystemExit(f"{out} exists; pass --force to overwrite it, or choose another --out")
        if not osp.isfile(src):
            raise SystemExit(f"{src}: no such info file. Fix: make it with tools/create_data.py world / nuscenes")
        outs[src] = out
    for src, out in outs.items():
        try:
            converted = create_mmdet3d_infos(src, out)
        except InfoConversionError as e:
            raise SystemExit(str(e)) from None
        logging.info("%s: %d frames, %d instances (LiDAR frame)", out, len(converted["data_list"]),
                     sum(len(f["instances"]) for f in converted["data_list"]))


def _output_paths(args, names):
    """``{name: OUT/name.json}``, refused before any work if one is the input or exists (without --force)."""
    outs = {name: osp.join(args.out, f"{name}.json") for name in names}
    for path in outs.values():
        if osp.abspath(path) == osp.abspath(args.json):
            raise SystemExit(f"{path} is the input file; choose another --out")
        if osp.exists(path) and not args.force:
            raise SystemExit(f"{path} exists; pass --force to overwrite it, or choose another --out")
    return outs


def _drivelm_questions(args):
    import os

    from bevlm.datasets.drivelm_io import load_drivelm
    from bevlm.evaluation.drivelm_files import strip_answers
    from bevlm.evaluation.drivelm_testset import build_test_eval, iter_official_ids
    from bevlm.utils.file_io import atomic_write_json

    outs = _output_paths(args, ["test_eval", "questions"])
    data = load_drivelm(args.json)  # validated before anything is written
    test = build_test_eval(data, seed=args.seed, source=args.json)
    os.makedirs(args.out, exist_ok=True)
    atomic_write_json(test, outs["test_eval"], indent=2)
    atomic_write_json(strip_answers(test), outs["questions"], indent=2)
    logging.info("%s, %s: %d scenes, %d questions", outs["test_eval"], outs["questions"], len(test),
                 sum(1 for _ in iter_official_ids(test)))


def _drivelm_split(args):
    import os

    from bevlm.datasets.drivelm_io import load_drivelm, split_drivelm_by_scene
    from bevlm.utils.file_io import atomic_write_json

    outs = _output_paths(args, [f"drivelm_{name}" for name in ("train", "val")])
    outs = {"train": outs["drivelm_train"], "val": outs["drivelm_val"]}
    data = load_drivelm(args.json)  # validated before anything is written
    try:
        parts = dict(zip(("train", "val"), split_drivelm_by_scene(data, args.val_fraction, args.seed)))
    except ValueError as e:
        raise SystemExit(f"{args.json}: {e}") from None
    os.makedirs(args.out, exist_ok=True)
    for name, part in parts.items():
        atomic_write_json(part, outs[name], indent=2)
        logging.info("%s: %d scenes, %d key frames", outs[name], len(part),
                     sum(len(s["key_frames"]) for s in part.values()))


def _split_args(items):
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--drivelm-json / --questions-json expect SPLIT=PATH, got {item!r}")
        split, path = item.split("=", 1)
        out[split] = path
    return out


def main():
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args()
    from bevlm.datasets.converters import create_drivelm_only_infos, create_nuscenes_infos

    t0 = time.time()
    if args.cmd == "mmdet3d":
        _mmdet3d(args)
    elif args.cmd == "drivelm-split":
        _drivelm_split(args)
    elif args.cmd == "drivelm-questions":
        _drivelm_questions(args)
    elif args.cmd == "world":
        from bevlm.world import WorldConfig, generate_world

        config = WorldConfig(frames_per_scene=args.frames, image_size=tuple(args.image_size),
                             traffic_side=args.traffic_side, lighting=args.lighting, rig=args.rig,
                             lidar_extrinsic=args.lidar_extrinsic)
        summary = generate_world(args.out, num_scenes=args.scenes, seed=args.seed, config=config,
                                 workers=args.workers)
        logging.info("world written to %s: %s", args.out,
                     {k: v for k, v in summary.items() if not isinstance(v, dict)})
        if not args.no_infos:
            written = create_nuscenes_infos(
                args.out, config.version, osp.join(args.out, "infos"),
                {"train": osp.join(args.out, "drivelm_train.json"),
                 "val": osp.join(args.out, "drivelm_val.json")}, domain=args.domain)
            logging.info("info files: %s", written)
    elif args.cmd == "nuscenes":
        written = create_nuscenes_infos(args.root, args.version, args.out, _split_args(args.drivelm_json) or None,
                                        domain=args.domain, skip_bad=args.skip_bad,
                                        question_jsons=_split_args(args.questions_json) or None)
        logging.info("info files: %s", written)
    elif args.cmd == "drivelm":
        path = create_drivelm_only_infos(args.json, args.image_root, args.out, domain=args.domain,
                                         skip_bad=args.skip_bad)
        logging.info("info file: %s", path)
    logging.info("done in %.1f s", time.time() - t0)


if __name__ == "__main__":
    main()
