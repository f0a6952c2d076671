"""Draw key frames: cameras with boxes and c-tags, BEV (GT + aux prediction), trajectories, QA.

  python tools/visualize.py configs/bev_vlm.py --checkpoint work_dirs/bev_vlm/iter_100.pth --index 0 5
  python tools/visualize.py configs/bev_vlm.py --ann-file data/drivelm_sample_infos.pkl --index 0
"""
import argparse


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("--checkpoint", help="trained model: adds predicted answers, trajectory, occupancy")
    p.add_argument("--ann-file", help="info file to draw from (default: the config's test split)")
    p.add_argument("--data-root", help="image root of --ann-file (default: its metainfo data_root)")
    p.add_argument("--index", type=int, nargs="+", default=[0])
    p.add_argument("--out-dir", default="work_dirs/vis")
    p.add_argument("--no-answers", action="store_true", help="skip answering the QA (faster)")
    args = p.parse_args()
    from mmengine.config import Config

    from bevlm.visualization import visualize_frames

    paths = visualize_frames(Config.fromfile(args.config), args.out_dir, args.index, args.checkpoint,
                             args.ann_file, args.data_root, answer_questions=not args.no_answers)
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
