#!/usr/bin/env python3
"""
Train the shipped shapes model: a small YOLOv8-seg on synthetic scenes, CPU only, offline.

Generates the dataset (segtrack_ros.eval.synthetic) into the work directory, trains
tools/shapes-seg.yaml from scratch, copies the best weights to segtrack_ros/data/shapes-seg.pt
and prints the mask mAP50 on the validation frames and on a held-out video. The seeds are fixed:
same arguments, same model.

Usage (the first line is the recipe behind `make model`, the second a one-minute smoke test)::

    .venv/bin/python tools/train_model.py
    .venv/bin/python tools/train_model.py --epochs 1 --train-images 64 --output /tmp/smoke.pt
"""

import argparse
from pathlib import Path
import shutil
import sys
import time

# Importing segtrack_ros first keeps Ultralytics offline (YOLO_OFFLINE, no auto-install).
from segtrack_ros.eval.synthetic import CLASS_NAMES, SceneConfig, write_yolo_dataset
import torch
from ultralytics import YOLO

REPO = Path(__file__).resolve().parent.parent
TEST_SEED = 9  # held-out video whose frames show all four classes in similar numbers


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; the defaults are the shipped recipe."""
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--model', default=str(REPO / 'tools' / 'shapes-seg.yaml'),
                        help='architecture yaml, e.g. yolov8n-seg.yaml (default: %(default)s)')
    parser.add_argument('--epochs', type=int, default=12)
    parser.add_argument('--close-mosaic', type=int, default=4,
                        help='train the last N epochs without mosaic (default: %(default)s)')
    parser.add_argument('--train-images', type=int, default=1200)
    parser.add_argument('--val-images', type=int, default=100)
    parser.add_argument('--imgsz', type=int, default=320)
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    parser.add_argument('--workdir', type=Path, default=REPO / 'build' / 'shapes_model',
                        help='dataset and Ultralytics run directory (default: %(default)s)')
    parser.add_argument('--output', type=Path,
                        default=REPO / 'segtrack_ros' / 'data' / 'shapes-seg.pt')
    return parser.parse_args(argv)


def train_settings(args: argparse.Namespace, data: Path) -> dict:
    """
    Return the Ultralytics train arguments of the recipe.

    One optimizer step per batch (nbs = batch) and a short warm-up, as the whole run is a few
    hundred steps; AdamW at 2e-3 decaying to 1e-4. Plots off (they would download a font), AMP off
    (CPU; its check would download a model), workers 0 (Ultralytics' choice on CPU anyway).
    """
    return {
        'data': str(data), 'epochs': args.epochs, 'imgsz': args.imgsz, 'batch': args.batch,
        'device': 'cpu', 'workers': 0, 'amp': False, 'plots': False, 'seed': 0,
        'deterministic': True, 'project': str(args.workdir), 'name': 'train', 'exist_ok': True,
        'optimizer': 'AdamW', 'lr0': 0.002, 'lrf': 0.05, 'nbs': args.batch, 'warmup_epochs': 1,
        'close_mosaic': args.close_mosaic, 'scale': 0.3, 'flipud': 0.5, 'patience': args.epochs,
    }


def set_threads(threads: int):
    """
    Return a callback that sets torch's CPU threads.

    Ultralytics sets them to cpu_count - 1 whenever it selects the device: 1 on a 2-core machine.
    """
    def callback(_):
        torch.set_num_threads(threads)
    return callback


def main(argv: list[str] | None = None) -> int:
    """Generate the dataset, train, ship the best weights and report their mask mAP50."""
    args = parse_args(argv)
    start = time.monotonic()
    shutil.rmtree(args.workdir, ignore_errors=True)
    data = write_yolo_dataset(args.workdir / 'dataset', train_seed=0, val_seed=1,
                              n_train=args.train_images, n_val=args.val_images, imgsz=args.imgsz,
                              test_video=SceneConfig(seed=TEST_SEED))
    print(f'dataset {data} written in {time.monotonic() - start:.0f} s', flush=True)

    model = YOLO(args.model, task='segment')
    for event in ('on_pretrain_routine_start', 'on_train_epoch_start', 'on_val_start'):
        model.add_callback(event, set_threads(args.threads))
    model.train(**train_settings(args, data))
    val_map50 = model.trainer.metrics['metrics/mAP50(M)']

    args.output.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model.trainer.best, args.output)
    shipped = YOLO(args.output, task='segment')
    if shipped.names != dict(enumerate(CLASS_NAMES)):
        raise RuntimeError(f'shipped model has class names {shipped.names}')
    shipped.add_callback('on_val_start', set_threads(args.threads))
    test = shipped.val(data=str(data), split='test', imgsz=args.imgsz, batch=args.batch,
                       device='cpu', workers=0, plots=False, project=str(args.workdir),
                       name='test', exist_ok=True)
    size = args.output.stat().st_size / 1e6
    print(f'mask mAP50: val {val_map50:.3f}, held-out video {test.seg.map50:.3f}; '
          f'{args.output} ({size:.1f} MB) in {(time.monotonic() - start) / 60:.1f} min')
    return 0


if __name__ == '__main__':
    sys.exit(main())
