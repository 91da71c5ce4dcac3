"""``stylempi train``: train a fast style network (Johnson et al., 2016).

A :class:`~stylempi.network.model.TransformerNet` learns to render content images in
the style of one painting by minimising, on a frozen loss network
(:mod:`stylempi.training.lossnet`):

* a perceptual **content** loss: feature distance to the content image,
* a **style** loss: Gram-matrix distance to the painting on several layers,
* an optional **total variation** loss (smoothness),
* a **temporal** regularization (:mod:`stylempi.training.temporal`, ReReVST's compound
  regularization): the output of a randomly warped and noised input must be
  the warped output of the clean input, so strokes follow motion instead of
  shimmering on video. It needs no video and no optical-flow data.

Both the content and the style term are *relative* (divided by the size of
the target), so their weights mean the same thing for every painting and
loss network: ``--style-weight 5`` asks for the style five times as hard as
the content.

Content comes from image folders, image files or videos
(:mod:`stylempi.training.trainset`). The output is a plain ``state_dict`` (the layout
``stylempi run`` and :func:`stylempi.network.model.load_network` read). Every
``--checkpoint-every`` steps it is rewritten, and the optimiser state and step
go to ``OUT.train-state.pth`` beside it; ``--resume`` continues from there
(the batches of step N are a pure function of the seed and N, so a resumed
run follows the same path as an uninterrupted one).
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import ModelLoadFailure, OutputFailure, UsageError
from ..network.model import TransformerNet, load_network, network_from_state_dict
from ..network.placement import DEFAULT_DEVICE
from ..storage.files import atomic_write
from ..network.styles import read_model
from .lossnet import LossNet, build_lossnet, gram, style_distance
from .temporal import DEFAULT_MOTION, DEFAULT_NOISE, DEFAULT_SHIFT, compound_loss
from .trainset import collect_content, load_image, make_batch

STATE_SUFFIX = ".train-state.pth"
#: Default --temporal-weight (docs/styles.md, "Temporal stability": measured trade-off).
DEFAULT_TEMPORAL_WEIGHT = 100.0
#: Base channel widths a network can be trained at (32 is the paper's).
WIDTHS = (8, 16, 32)


@dataclass
class TrainOptions:
    """Everything ``stylempi train`` takes; :func:`train_main` fills it from the flags, whose
    defaults are these."""

    style: str
    content: list[str]
    out: str
    #: None: squeezenet when ``loss_weights`` is given, else vgg16.
    loss_net: str | None = None
    loss_weights: str | None = None
    content_layer: list[str] | None = None
    width: int = 16
    image_size: int = 256
    style_size: int | None = None
    steps: int = 1000
    #: Passes over the content images; when set, it decides the step count instead of ``steps``.
    epochs: float | None = None
    batch_size: int = 4
    content_weight: float = 1.0
    style_weight: float = 5.0
    tv_weight: float = 0.0
    temporal_weight: float = DEFAULT_TEMPORAL_WEIGHT
    temporal_shift: float = DEFAULT_SHIFT
    temporal_motion: float = DEFAULT_MOTION
    temporal_noise: float = DEFAULT_NOISE
    lr: float = 1e-3
    seed: int = 0
    frames_per_video: int = 60
    checkpoint_every: int = 100
    init: str | None = None
    resume: bool = False
    keep_state: bool = False
    half: bool = False
    device: str = DEFAULT_DEVICE
    threads: int = 0
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.loss_net is None:
            self.loss_net = "squeezenet" if self.loss_weights else "vgg16"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainOptions:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


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
    try:
        with atomic_write(path) as f:
            torch.save(obj, f)
    except OSError as exc:
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

@dataclass
class _Training:
    """What one training run works on, set up by :func:`_set_up`."""

    options: TrainOptions
    device: torch.device
    out: Path
    images: list[torch.Tensor]
    steps: int
    loss_fn: StyleLoss
    net: TransformerNet
    opt: torch.optim.Optimizer
    #: Written into the training state; :data:`_RESUME_KEYS` of it must match to resume.
    config: dict

    @property
    def state(self) -> Path:
        return state_path(self.out)


def train(options: TrainOptions) -> dict:
    """Train per ``options``; returns a summary dict (the loss parts of every step in ``history``)."""
    _check_options(options)
    init = _read_init(options.init, options.width) if options.init else None  # before the slow set-up
    if options.threads:
        torch.set_num_threads(options.threads)
    run = _set_up(options, init)
    start = _resume(run)
    started = time.time()
    history = _optimise(run, start)
    run.net.eval()
    save_checkpoint(run.net, run.out, half=options.half)
    if start < run.steps:
        save_train_state(run.state, run.steps, run.opt, run.net, run.config)
    if not options.keep_state and run.state.exists():
        run.state.unlink()
    return {"steps": run.steps, "start": start, "seconds": time.time() - started,
            "first": history[0] if history else None, "last": history[-1] if history else None,
            "history": history, "images": len(run.images), "out": str(run.out)}


def _check_options(options: TrainOptions) -> None:
    if options.width not in WIDTHS:
        raise UsageError(f"--width must be {', '.join(map(str, WIDTHS[:-1]))} or {WIDTHS[-1]}")
    if options.image_size < 32 or options.image_size % 4:
        raise UsageError("--image-size must be a multiple of 4, at least 32")
    if options.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if any(v < 0 for v in (options.temporal_weight, options.temporal_shift, options.temporal_motion,
                           options.temporal_noise)):
        raise UsageError("--temporal-weight, --temporal-shift, --temporal-motion and --temporal-noise "
                         "must not be negative")
    # What a typo can get wrong, checked before the content is read and the loss network built
    # (minutes with videos or a VGG-16 download), so a mistake costs no start-up.
    if not Path(options.style).is_file():
        raise UsageError(f"--style {options.style}: no such image file")
    missing = [c for c in options.content if not Path(c).exists()]
    if missing:
        raise UsageError(f"--content {missing[0]}: no such file or folder")
    if options.loss_weights is not None and not Path(options.loss_weights).is_file():
        raise ModelLoadFailure(f"--loss-weights {options.loss_weights}: no such file")
    if not Path(options.out).parent.is_dir():
        raise OutputFailure(f"--out {options.out}: folder {Path(options.out).parent} does not exist")


def _set_up(options: TrainOptions, init: dict[str, torch.Tensor] | None = None) -> _Training:
    """Content, painting, loss network and a fresh (or --init) network and optimiser.

    The order is fixed: everything after the seed draws from torch's global generator
    (a random loss network, the network's initial weights), so a rerun is the same run.
    """
    device = _device(options.device)
    out = Path(options.out)
    torch.manual_seed(options.seed)
    images = collect_content(options.content, options.image_size, options.frames_per_video)
    steps = options.steps
    if options.epochs is not None:
        steps = max(1, math.ceil(options.epochs * len(images) / options.batch_size))
    style_img = load_image(options.style, options.style_size or options.image_size).to(device)
    content_layers = tuple(options.content_layer) if options.content_layer else None
    lossnet = build_lossnet(options.loss_net, options.loss_weights, seed=options.seed,
                            content_layers=content_layers).to(device)
    loss_fn = StyleLoss(lossnet, style_img, options.content_weight, options.style_weight, options.tv_weight)
    net = TransformerNet(options.width).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=options.lr)
    config = {"width": options.width, "image_size": options.image_size, "style": str(Path(options.style).name),
              "loss_net": options.loss_net, "seed": options.seed, "batch_size": options.batch_size,
              "content_weight": options.content_weight, "style_weight": options.style_weight,
              "tv_weight": options.tv_weight, "lr": options.lr, "steps": steps,
              "temporal": [options.temporal_weight, options.temporal_shift, options.temporal_motion,
                           options.temporal_noise]}
    if init is not None:
        net.load_state_dict(init)
        config["init"] = str(Path(options.init).name)
    return _Training(options, device, out, images, steps, loss_fn, net, opt, config)


def _read_init(init: str, width: int) -> dict[str, torch.Tensor]:
    """The weights --init names (a checkpoint file or a built-in style name, as --model takes),
    which must be of WIDTH."""
    data, name = read_model(init)
    init_net = load_network(data, name=name)
    if not isinstance(init_net, TransformerNet):
        raise ModelLoadFailure(f"--init {init}: {name} is not a fast_neural_style state_dict")
    if init_net.width != width:
        raise UsageError(f"--init {init} has width {init_net.width}, not --width {width}")
    return init_net.state_dict()


def _resume(run: _Training) -> int:
    """With --resume, load the saved network and optimiser; returns the step to start from."""
    if not run.options.resume:
        return 0
    if not run.state.is_file():
        print(f"stylempi train: no {run.state} yet, starting from step 0", flush=True)
        return 0
    saved = load_train_state(run.state)
    old = saved.get("config", {})
    clash = [k for k in _RESUME_KEYS if old.get(k) != run.config[k]]
    if clash:
        raise UsageError(f"--resume: {run.state} was made with different {', '.join(clash)} "
                         f"({', '.join(f'{k}={old.get(k)!r}' for k in clash)}); "
                         "use the same options or delete it")
    run.net.load_state_dict(network_from_state_dict(saved["model"]).state_dict())
    run.net.to(run.device)
    run.opt.load_state_dict(saved["optimizer"])
    return int(saved["step"])


def _optimise(run: _Training, start: int) -> list[dict[str, float]]:
    """Steps START..end, with a progress bar and the periodic checkpoints; the loss parts of each."""
    from tqdm import tqdm

    options = run.options
    run.net.train()
    window: list[dict[str, float]] = []
    history: list[dict[str, float]] = []
    bar = tqdm(total=run.steps, initial=start, desc="train", unit="step", dynamic_ncols=True,
               disable=options.quiet)
    for step in range(start, run.steps):
        parts = _step(run, step)
        window.append(parts)
        history.append(parts)
        bar.update(1)
        if (step + 1) % 10 == 0 or step + 1 == run.steps:
            mean = {k: sum(p[k] for p in window) / len(window) for k in window[0]}
            bar.set_postfix({k: f"{v:.3g}" for k, v in mean.items()})
            window = []
        if options.checkpoint_every and (step + 1) % options.checkpoint_every == 0 and step + 1 < run.steps:
            save_checkpoint(run.net, run.out, half=options.half)
            save_train_state(run.state, step + 1, run.opt, run.net, run.config)
    bar.close()
    return history


def _step(run: _Training, step: int) -> dict[str, float]:
    """One optimiser step; its batch is a pure function of the seed and STEP (so resuming is exact)."""
    options = run.options
    gen = torch.Generator().manual_seed(options.seed * 1_000_003 + step)
    x = make_batch(run.images, options.batch_size, options.image_size, gen).to(run.device)
    run.opt.zero_grad(set_to_none=True)
    y = run.net(x)
    loss, parts = run.loss_fn(y, x)
    if options.temporal_weight:
        temporal = compound_loss(run.net, x, y, gen, options.temporal_shift, options.temporal_motion,
                                 options.temporal_noise)
        loss = loss + options.temporal_weight * temporal
        parts["temporal"] = float(temporal.detach())
        parts["total"] = float(loss.detach())
    loss.backward()
    run.opt.step()
    return parts


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is available here; use --device cpu")
    return torch.device(name)
