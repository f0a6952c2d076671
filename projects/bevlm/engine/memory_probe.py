"""Resident memory of one inference variant, alone in this process (run by the benchmark).

  python -m bevlm.engine.memory_probe CONFIG CKPT --name NAME --spec '{"quant": {...}}' [--frames 1]

Prints one line ``MEMORY_PROBE {json}`` with the figures of
:func:`bevlm.engine.benchmark.probe_memory`.
"""
from __future__ import annotations

import argparse
import json


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("checkpoint")
    p.add_argument("--name", required=True)
    p.add_argument("--spec", required=True, help="the variant's settings as JSON")
    p.add_argument("--frames", type=int, default=1)
    p.add_argument("--qa-select", default="test")
    p.add_argument("--stride", type=int, default=1)
    args = p.parse_args(argv)
    import bevlm.engine  # noqa: F401  (registers the modules)
    from mmengine.config import Config

    from .benchmark import probe_memory

    spec = json.loads(args.spec)
    if not isinstance(spec, dict):
        raise SystemExit(f"--spec must be a JSON object (a variant's settings), got {args.spec!r}")
    out = probe_memory(Config.fromfile(args.config), args.checkpoint, args.name, spec, args.frames,
                       args.qa_select, args.stride)
    print("MEMORY_PROBE " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
