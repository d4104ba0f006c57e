"""Train on a GCP spot VM that comes back after every preemption.

    bazel run //reactor:gcp -- launch --project=P --model=prime-135m-chat \
        --data=gs://B/data/train.jsonl --checkpoint_dir=gs://B/runs/r1 --spot --dry-run
    bazel run //reactor:gcp -- launch ... --watch     # create, then re-create after preemption
    bazel run //reactor:gcp -- watch ...              # (re)attach the watcher to a launched run

--dry-run prints the instances.insert request (method, URL, JSON body) and the startup script,
and needs no credentials. Extra trainer flags go after `--train_args`.
"""

import argparse
import json
import logging
import os
import sys

from reactor_core.gcp import launcher


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("launch", "watch"):
        s = sub.add_parser(name)
        s.add_argument("--model", required=True)
        s.add_argument("--data", required=True, help="gs:// training data")
        s.add_argument("--checkpoint_dir", required=True, help="gs:// checkpoints (resume + DONE marker)")
        s.add_argument("--project", default=os.environ.get("CLOUDSDK_CORE_PROJECT", ""))
        s.add_argument("--zone", default="us-central1-a")
        s.add_argument("--name", default="reactor-train")
        s.add_argument("--machine_type", default="n2-standard-8")
        s.add_argument("--spot", action=argparse.BooleanOptionalAction, default=True)
        s.add_argument("--accelerator_type", default=None)
        s.add_argument("--accelerator_count", type=int, default=0)
        s.add_argument("--boot_disk_gb", type=int, default=100)
        s.add_argument("--repo", default=launcher.LaunchConfig.repo)
        s.add_argument("--ref", default="main")
        s.add_argument("--source_url", default=None, help="gs://...tar.gz of the repo instead of git clone")
        s.add_argument("--poll_s", type=float, default=60.0)
        s.add_argument("--max_launches", type=int, default=50)
        s.add_argument("--train_args", nargs=argparse.REMAINDER, default=[], help="passed to //reactor:train")
        if name == "launch":
            s.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true")
            s.add_argument("--watch", action="store_true", help="keep re-creating the VM until DONE")
    return p


def config_from_args(args) -> launcher.LaunchConfig:
    return launcher.LaunchConfig(
        model=args.model,
        data=args.data,
        checkpoint_dir=args.checkpoint_dir,
        project=args.project or ("dry-run-project" if getattr(args, "dry_run", False) else ""),
        zone=args.zone,
        name=args.name,
        machine_type=args.machine_type,
        spot=args.spot,
        accelerator_type=args.accelerator_type,
        accelerator_count=args.accelerator_count,
        boot_disk_gb=args.boot_disk_gb,
        repo=args.repo,
        ref=args.ref,
        source_url=args.source_url,
        train_args=tuple(args.train_args),
    )


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = _parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.command == "launch" and args.dry_run:
        print(f"POST {launcher.insert_url(cfg)}")
        print(json.dumps(launcher.instance_request(cfg), indent=2))
        print("---- startup-script ----")
        print(launcher.startup_script(cfg), end="")
        return 0
    from reactor_core.ckpt.gcs import Markers

    api = launcher.compute_api(cfg.project)
    if args.command == "launch" and not args.watch:
        api.insert(cfg.zone, launcher.instance_request(cfg))
        print(f"launched {cfg.name} in {cfg.zone}; follow with: bazel run //reactor:gcp -- watch ...")
        return 0
    result = launcher.watch(cfg, api, Markers(), poll_s=args.poll_s, max_launches=args.max_launches)
    print(f"{cfg.name}: {result.outcome} after {result.launches} launch(es)")
    return 0 if result.outcome == launcher.DONE else 1


if __name__ == "__main__":
    sys.exit(main())
