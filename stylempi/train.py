"""``stylempi train``: train a fast style network (Johnson et al., 2016).

A :class:`~stylempi.model.TransformerNet` learns to render content images in
the style of one painting by minimising, on a frozen loss network
(:mod:`stylempi.lossnet`):

* a perceptual **content** loss: feature distance to the content image,
* a **style** loss: Gram-matrix distance to the painting on several layers,
* an optional **total variation** loss (smoothness),
* a **temporal** regularization (:mod:`stylempi.temporal`, ReReVST's compound
  regularization): the output of a randomly warped and noised input must be
  the warped output of the clean input, so strokes follow motion instead of
  shimmering on video. It needs no video and no optical-flow data.

Both the content and the style term are *relative* (divided by the size of
the target), so their weights mean the same thing for every painting and
loss network: ``--style-weight 5`` asks for the style five times as hard as
the content.

Content comes from image folders, image files or videos (frames are sampled
evenly with PyAV). The output is a plain ``state_dict`` (the layout
``stylempi run`` and :func:`stylempi.model.load_network` read). Every
``--checkpoint-every`` steps it is rewritten, and the optimiser state and step
go to ``OUT.train-state.pth`` beside it; ``--resume`` continues from there
(the batches of step N are a pure function of the seed and N, so a resumed
run follows the same path as an uninterrupted one).
"""
from __future__ import annotations

import argparse
import io
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .containers import VIDEO_EXTENSIONS
from .errors import ModelLoadFailure, OutputFailure, UsageError, VideoOpenFailure
from .lossnet import LOSS_NETS, LossNet, build_lossnet, gram, style_distance
from .model import TransformerNet, network_from_state_dict
from .temporal import DEFAULT_MOTION, DEFAULT_NOISE, DEFAULT_SHIFT, compound_loss

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
STATE_SUFFIX = ".train-state.pth"
#: Default --temporal-weight (docs/styles.md, "Temporal stability": measured trade-off).
DEFAULT_TEMPORAL_WEIGHT = 100.0


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------

def _resize_short(img: Image.Image, short: int) -> Image.Image:
    w, h = img.size
    scale = short / min(w, h)
    return img.resize((max(short, round(w * scale)), max(short, round(h * scale))), Image.BICUBIC)


def _to_tensor(img: Image.Image) -> torch.Tensor:
    """uint8 CHW tensor of an RGB PIL image."""
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)


def load_image(path: str | Path, size: int | None = None) -> torch.Tensor:
    """An image file as a float ``[1, 3, H, W]`` RGB tensor in 0..255, long side ``size``."""
    try:
        img = Image.open(path).convert("RGB")
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read image {path}: {exc}") from None
    if size:
        w, h = img.size
        scale = size / max(w, h)
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
    return _to_tensor(img).float().unsqueeze(0)


def sample_video_frames(path: str | Path, count: int) -> list[Image.Image]:
    """About ``count`` frames spread evenly over the (largest) video stream of ``path``."""
    from .media import open_input

    with open_input(path) as container:
        if not container.streams.video:
            raise VideoOpenFailure(f"{path} has no video stream")
        stream = max(container.streams.video, key=lambda s: (s.codec_context.width or 0))
        stream.thread_type = "AUTO"
        total = stream.frames
        if not total:
            duration = (float(stream.duration * stream.time_base) if stream.duration
                        else (container.duration or 0) / 1e6)
            rate = float(stream.average_rate or stream.guessed_rate or 25)
            total = max(1, int(duration * rate))
        every = max(1, total // max(1, count))
        frames = []
        try:
            for i, frame in enumerate(container.decode(stream)):
                if i % every == 0:
                    frames.append(frame.to_image())
                    if len(frames) >= count:
                        break
        except Exception as exc:  # noqa: BLE001
            if not frames:
                raise VideoOpenFailure(f"cannot decode video {path}: {exc}") from None
    return frames


def collect_content(paths: list[str], image_size: int, frames_per_video: int) -> list[torch.Tensor]:
    """Content images (uint8 CHW, short side a little over ``image_size``) from files, folders, videos."""
    short = int(math.ceil(image_size * 1.15))
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*")
                            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES | VIDEO_EXTENSIONS)
        elif p.is_file():
            files.append(p)
        else:
            raise UsageError(f"--content {p}: no such file or folder")
    images: list[torch.Tensor] = []
    for f in files:
        if f.suffix.lower() in IMAGE_SUFFIXES:
            try:
                pics = [Image.open(f).convert("RGB")]
            except (OSError, ValueError) as exc:
                raise UsageError(f"cannot read content image {f}: {exc}") from None
        else:
            pics = sample_video_frames(f, frames_per_video)
        images += [_to_tensor(_resize_short(pic, short)) for pic in pics]
    if not images:
        raise UsageError("no content images found in --content (give image folders, images or videos)")
    return images


def make_batch(images: list[torch.Tensor], batch: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """A float batch of random ``size``-square crops (random flips) of the content images."""
    out = []
    for _ in range(batch):
        img = images[int(torch.randint(len(images), (1,), generator=gen))]
        _, h, w = img.shape
        top = int(torch.randint(h - size + 1, (1,), generator=gen))
        left = int(torch.randint(w - size + 1, (1,), generator=gen))
        crop = img[:, top:top + size, left:left + size]
        if bool(torch.randint(2, (1,), generator=gen)):
            crop = crop.flip(2)
        out.append(crop)
    return torch.stack(out).float()


# --------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------

class StyleLoss:
    """Content, style and TV terms of Johnson et al. on a given loss network."""

    def __init__(self, lossnet: LossNet, style: torch.Tensor, content_weight: float,
                 style_weight: float, tv_weight: float):
        self.net = lossnet
        self.cw, self.sw, self.tw = content_weight, style_weight, tv_weight
        with torch.no_grad():
            feats = lossnet(style)
            self.target = {k: gram(feats[k])[0] for k in lossnet.style_layers}
        total = sum(lossnet.style_layers.values())
        self.layer_weights = {k: w / total for k, w in lossnet.style_layers.items()}

    def __call__(self, y: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        fy = self.net(y)
        with torch.no_grad():
            fx = self.net(x)
        content = sum(F.mse_loss(fy[k], fx[k]) / fx[k].pow(2).mean().clamp_min(1e-8)
                      for k in self.net.content_layers) / len(self.net.content_layers)
        style = style_distance({k: gram(fy[k]) for k in self.layer_weights}, self.target,
                               self.layer_weights).mean()
        total = self.cw * content + self.sw * style
        parts = {"content": float(content.detach()), "style": float(style.detach())}
        if self.tw:
            tv = ((y[:, :, 1:, :] - y[:, :, :-1, :]).abs().mean()
                  + (y[:, :, :, 1:] - y[:, :, :, :-1]).abs().mean()) / 255.0
            total = total + self.tw * tv
            parts["tv"] = float(tv.detach())
        parts["total"] = float(total.detach())
        return total, parts


# --------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------

def state_path(out: Path) -> Path:
    return out.with_name(out.name + STATE_SUFFIX)


def _atomic_save(obj: object, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputFailure(f"cannot write {path}: {exc.strerror or exc}") from None


def save_checkpoint(net: TransformerNet, out: Path, *, half: bool = False) -> None:
    """The plain ``state_dict`` that ``stylempi run`` reads (fp16 storage when ``half``)."""
    state = {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu()).clone()
             for k, v in net.state_dict().items()}
    _atomic_save(state, out)


#: Options that must match for --resume to continue a run.
_RESUME_KEYS = ("width", "image_size", "style", "loss_net", "seed", "batch_size")


def save_train_state(path: Path, step: int, opt: torch.optim.Optimizer, net: TransformerNet,
                     config: dict) -> None:
    _atomic_save({"step": step, "optimizer": opt.state_dict(),
                  "model": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
                  "config": config}, path)


def load_train_state(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadFailure(f"cannot read training state {path}: {str(exc)[:160]}; "
                               "delete it to start over") from None


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------

def train(args: argparse.Namespace) -> dict:
    """Train per ``args`` (see :func:`add_train_arguments`); returns a summary dict."""
    if args.width not in (8, 16, 32):
        raise UsageError("--width must be 8, 16 or 32")
    if args.image_size < 32 or args.image_size % 4:
        raise UsageError("--image-size must be a multiple of 4, at least 32")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if args.temporal_weight < 0 or args.temporal_shift < 0 or args.temporal_motion < 0 \
            or args.temporal_noise < 0:
        raise UsageError("--temporal-weight, --temporal-shift, --temporal-motion and --temporal-noise "
                         "must not be negative")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = _device(args.device)
    out = Path(args.out)
    if not out.parent.is_dir():
        raise OutputFailure(f"--out {out}: folder {out.parent} does not exist")

    torch.manual_seed(args.seed)
    images = collect_content(args.content, args.image_size, args.frames_per_video)
    steps = args.steps
    if args.epochs is not None:
        steps = max(1, math.ceil(args.epochs * len(images) / args.batch_size))
    style_img = load_image(args.style, args.style_size or args.image_size).to(device)
    lossnet = build_lossnet(args.loss_net, args.loss_weights, seed=args.seed,
                            content_layers=tuple(args.content_layer) if args.content_layer else None).to(device)
    loss_fn = StyleLoss(lossnet, style_img, args.content_weight, args.style_weight, args.tv_weight)

    net = TransformerNet(args.width).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    config = {"width": args.width, "image_size": args.image_size, "style": str(Path(args.style).name),
              "loss_net": args.loss_net, "seed": args.seed, "batch_size": args.batch_size,
              "content_weight": args.content_weight, "style_weight": args.style_weight,
              "tv_weight": args.tv_weight, "lr": args.lr, "steps": steps,
              "temporal": [args.temporal_weight, args.temporal_shift, args.temporal_motion, args.temporal_noise]}
    if args.init:
        try:
            init_state = torch.load(args.init, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadFailure(f"--init {args.init} is not a readable state_dict: {str(exc)[:160]}") from None
        init_net = network_from_state_dict(init_state)
        if init_net.width != args.width:
            raise UsageError(f"--init {args.init} has width {init_net.width}, not --width {args.width}")
        net.load_state_dict(init_net.state_dict())
        config["init"] = str(Path(args.init).name)
    start = 0
    spath = state_path(out)
    if args.resume and spath.is_file():
        saved = load_train_state(spath)
        old = saved.get("config", {})
        clash = [k for k in _RESUME_KEYS if old.get(k) != config[k]]
        if clash:
            raise UsageError(f"--resume: {spath} was made with different {', '.join(clash)} "
                             f"({', '.join(f'{k}={old.get(k)!r}' for k in clash)}); "
                             "use the same options or delete it")
        net.load_state_dict(network_from_state_dict(saved["model"]).state_dict())
        net.to(device)
        opt.load_state_dict(saved["optimizer"])
        start = int(saved["step"])
    elif args.resume:
        print(f"stylempi train: no {spath} yet, starting from step 0", flush=True)

    from tqdm import tqdm

    net.train()
    first = last = None
    window: list[dict[str, float]] = []
    bar = tqdm(total=steps, initial=start, desc="train", unit="step", dynamic_ncols=True,
               disable=args.quiet)
    t0 = time.time()
    history: list[dict[str, float]] = []
    for step in range(start, steps):
        gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        x = make_batch(images, args.batch_size, args.image_size, gen).to(device)
        opt.zero_grad(set_to_none=True)
        y = net(x)
        loss, parts = loss_fn(y, x)
        if args.temporal_weight:
            temporal = compound_loss(net, x, y, gen, args.temporal_shift, args.temporal_motion,
                                     args.temporal_noise)
            loss = loss + args.temporal_weight * temporal
            parts["temporal"] = float(temporal.detach())
            parts["total"] = float(loss.detach())
        loss.backward()
        opt.step()
        window.append(parts)
        history.append(parts)
        if first is None:
            first = parts
        last = parts
        bar.update(1)
        if (step + 1) % 10 == 0 or step + 1 == steps:
            mean = {k: sum(p[k] for p in window) / len(window) for k in window[0]}
            bar.set_postfix({k: f"{v:.3g}" for k, v in mean.items()})
            window = []
        if args.checkpoint_every and (step + 1) % args.checkpoint_every == 0 and step + 1 < steps:
            save_checkpoint(net, out, half=args.half)
            save_train_state(spath, step + 1, opt, net, config)
    bar.close()
    net.eval()
    save_checkpoint(net, out, half=args.half)
    if start < steps:
        save_train_state(spath, steps, opt, net, config)
    if not args.keep_state and spath.exists():
        spath.unlink()
    return {"steps": steps, "start": start, "seconds": time.time() - t0, "first": first, "last": last,
            "history": history, "images": len(images), "out": str(out)}


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is available here; use --device cpu")
    return torch.device(name)


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

def add_train_arguments(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--width", type=int, default=16, choices=(8, 16, 32),
                   help="base channel width of the network (default 16; 32 is the paper's)")
    p.add_argument("--image-size", type=int, default=256, help="training crop size (default 256)")
    p.add_argument("--style-size", type=int, default=None,
                   help="long side of the painting when its Gram matrices are taken (default: image size)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--steps", type=int, default=1000, help="optimiser steps (default 1000)")
    g.add_argument("--epochs", type=float, default=None, help="passes over the content images instead")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--content-weight", type=float, default=1.0)
    p.add_argument("--style-weight", type=float, default=5.0)
    p.add_argument("--tv-weight", type=float, default=0.0, help="total variation weight (default off)")
    p.add_argument("--temporal-weight", type=float, default=DEFAULT_TEMPORAL_WEIGHT, metavar="W",
                   help="weight of the temporal regularization: the output of a randomly moved and noised "
                        "crop must be the moved output of the crop (ReReVST, Wang et al. 2020), so strokes "
                        "follow motion rather than shimmer on video; needs no video or flow data; costs "
                        "about one more forward/backward of the style network per step; 0 turns it off "
                        f"(default {DEFAULT_TEMPORAL_WEIGHT:g}; docs/styles.md has the trade-off measured)")
    p.add_argument("--temporal-shift", type=float, default=DEFAULT_SHIFT, metavar="PX",
                   help=f"largest random pan of the temporal term, pixels each way (default {DEFAULT_SHIFT:g})")
    p.add_argument("--temporal-motion", type=float, default=DEFAULT_MOTION, metavar="PX",
                   help=f"largest smooth local motion of the temporal term, pixels (default {DEFAULT_MOTION:g})")
    p.add_argument("--temporal-noise", type=float, default=DEFAULT_NOISE, metavar="S",
                   help=f"standard deviation of the temporal term's noise on 0..1 (default {DEFAULT_NOISE:g})")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames-per-video", type=int, default=60, help="frames sampled from each video")
    p.add_argument("--checkpoint-every", type=int, default=100, metavar="N",
                   help="rewrite the checkpoint and OUT.train-state.pth every N steps (0: only at the end)")
    p.add_argument("--init", metavar="MODEL.pth",
                   help="start from this checkpoint's weights (fine-tune another style: much faster than "
                        "from scratch, the content-keeping part is already learned)")
    p.add_argument("--resume", action="store_true", help="continue from OUT.train-state.pth")
    p.add_argument("--keep-state", action="store_true",
                   help="keep OUT.train-state.pth after the last step (to extend the run later)")
    p.add_argument("--half", action="store_true", help="store the checkpoint in fp16 (half the size)")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def train_main(args: argparse.Namespace) -> int:
    if args.loss_net is None:
        args.loss_net = "squeezenet" if args.loss_weights else "vgg16"
    summary = train(args)
    last = summary["last"] or {}
    print(f"stylempi train: wrote {summary['out']} after {summary['steps']} steps "
          f"({summary['seconds']:.0f} s; content {last.get('content', float('nan')):.3g}, "
          f"style {last.get('style', float('nan')):.3g})", flush=True)
    return 0


def register(sub) -> None:
    """Add ``stylempi train`` to the CLI's subparsers (see ``stylempi.cli._PLUGINS``)."""
    p = sub.add_parser("train", help="train a style network from a painting (Johnson et al.)",
                       description=__doc__.split("\n\n")[0] + " See docs/styles.md for settings that "
                       "train a strong style in ~20 minutes of CPU.")
    add_train_arguments(p)
    p.set_defaults(func=train_main)


def main(argv: list[str] | None = None) -> int:
    """``python -m stylempi.train ...``: the same as ``stylempi train ...``."""
    from .cli import main as cli_main
    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
