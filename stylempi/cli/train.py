"""``stylempi train``: train a style network from a painting."""
from __future__ import annotations

import argparse

from ..training.lossnet import LOSS_NETS
from ..training.train import WIDTHS, TrainOptions, train


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a style network from a painting (Johnson et al.)",
                       description="Train a fast style network (Johnson et al., 2016). See docs/styles.md "
                                   "for settings that train a strong style in ~20 minutes of CPU.")
    add_train_arguments(p)
    p.set_defaults(func=train_main)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Every ``stylempi train`` flag; the defaults are :class:`TrainOptions`'s."""
    _add_input_arguments(p)
    _add_learning_arguments(p)
    _add_run_arguments(p)


def _add_input_arguments(p: argparse.ArgumentParser) -> None:
    """The painting, the content, the checkpoint written, and the loss network."""
    p.add_argument("--style", required=True, metavar="IMAGE", help="the painting to learn")
    p.add_argument("--content", required=True, nargs="+", metavar="PATH",
                   help="content: image folders, image files and/or videos (frames are sampled)")
    p.add_argument("--out", required=True, metavar="MODEL.pth", help="where to write the checkpoint")
    p.add_argument("--loss-net", choices=LOSS_NETS, default=None,
                   help="perceptual loss network: squeezenet (offline, needs --loss-weights), vgg16 "
                        "(torchvision; downloads its weights, needs internet) or random (tests only); "
                        "default squeezenet with --loss-weights, else vgg16")
    p.add_argument("--loss-weights", metavar="FILE",
                   help="SqueezeNet v1.0 weights (torchvision key names, Caffe BGR convention)")
    p.add_argument("--content-layer", action="append", metavar="N",
                   help="loss-network feature index for the content loss (default: squeezenet 4, vgg16 8)")


def _add_learning_arguments(p: argparse.ArgumentParser) -> None:
    """The network's size, the crops, the loss weights and the optimiser."""
    d = TrainOptions
    p.add_argument("--width", type=int, default=d.width, choices=WIDTHS,
                   help=f"base channel width of the network (default {d.width}; {WIDTHS[-1]} is the paper's)")
    p.add_argument("--image-size", type=int, default=d.image_size,
                   help=f"training crop size (default {d.image_size})")
    p.add_argument("--style-size", type=int, default=d.style_size,
                   help="long side of the painting when its Gram matrices are taken (default: image size)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--steps", type=int, default=d.steps, help=f"optimiser steps (default {d.steps})")
    g.add_argument("--epochs", type=float, default=d.epochs, help="passes over the content images instead")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--content-weight", type=float, default=d.content_weight)
    p.add_argument("--style-weight", type=float, default=d.style_weight)
    p.add_argument("--tv-weight", type=float, default=d.tv_weight, help="total variation weight (default off)")
    p.add_argument("--temporal-weight", type=float, default=d.temporal_weight, metavar="W",
                   help="weight of the temporal regularization: the output of a randomly moved and noised "
                        "crop must be the moved output of the crop (ReReVST, Wang et al. 2020), so strokes "
                        "follow motion rather than shimmer on video; needs no video or flow data; costs "
                        "about one more forward/backward of the style network per step; 0 turns it off "
                        f"(default {d.temporal_weight:g}; docs/styles.md has the trade-off measured)")
    p.add_argument("--temporal-shift", type=float, default=d.temporal_shift, metavar="PX",
                   help=f"largest random pan of the temporal term, pixels each way (default {d.temporal_shift:g})")
    p.add_argument("--temporal-motion", type=float, default=d.temporal_motion, metavar="PX",
                   help="largest smooth local motion of the temporal term, pixels "
                        f"(default {d.temporal_motion:g})")
    p.add_argument("--temporal-noise", type=float, default=d.temporal_noise, metavar="S",
                   help=f"standard deviation of the temporal term's noise on 0..1 (default {d.temporal_noise:g})")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Sampling, checkpoints and resuming, and where and how quietly it runs."""
    d = TrainOptions
    p.add_argument("--frames-per-video", type=int, default=d.frames_per_video,
                   help="frames sampled from each video")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, metavar="N",
                   help="rewrite the checkpoint and OUT.train-state.pth every N steps (0: only at the end)")
    p.add_argument("--init", metavar="MODEL",
                   help="start from the weights of this checkpoint or built-in style (e.g. scream): to "
                        "fine-tune another style, much faster than from scratch, the content-keeping part "
                        "is already learned")
    p.add_argument("--resume", action="store_true", help="continue from OUT.train-state.pth")
    p.add_argument("--keep-state", action="store_true",
                   help="keep OUT.train-state.pth after the last step (to extend the run later)")
    p.add_argument("--half", action="store_true", help="store the checkpoint in fp16 (half the size)")
    p.add_argument("--device", default=d.device, help="auto (GPU when present), cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def train_main(args: argparse.Namespace) -> int:
    summary = train(TrainOptions.from_args(args))
    last = summary["last"] or {}
    print(f"stylempi train: wrote {summary['out']} after {summary['steps']} steps "
          f"({summary['seconds']:.0f} s; content {last.get('content', float('nan')):.3g}, "
          f"style {last.get('style', float('nan')):.3g})", flush=True)
    return 0
