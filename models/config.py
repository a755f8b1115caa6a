"""Plain dataclass configurations; stored inside every checkpoint so a model rebuilds from it alone."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

CHECKPOINT_VERSION = 1


@dataclass
class GANConfig:
    z_dim: int = 128  # noise size
    text_dim: int = 384  # input text embedding (all-MiniLM-L6-v2)
    cond_dim: int = 128  # learned projection of the text (and image) embedding
    image_dim: int = 0  # optional image-embedding condition slot; 0 = off
    g_width: int = 32  # generator base width: 256-128-64-32 channels at 4-8-16-32 px
    d_width: int = 32  # discriminator base width
    n_article_types: int = 0  # auxiliary classifier heads (0 = off); label names below
    n_colours: int = 0
    article_types: list[str] = field(default_factory=list)
    colours: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict) -> GANConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainConfig:
    data: str = "../shared/data/fpi64/dev.npz"  # pack .npz, Kaggle folder or Fashion IQ folder
    data_format: str = "auto"  # auto | pack | kaggle | fashioniq
    limit: int = 0  # use only the first N products (0 = all)
    holdout: bool = True  # keep the validation split (models.data.is_validation) out of training
    loss: str = "hinge"  # bce | wgan-gp | hinge
    lr_g: float = 1e-4  # two-time-scale update rule: D learns faster than G
    lr_d: float = 4e-4
    beta1: float = 0.0
    beta2: float = 0.9
    batch: int = 64
    steps: int = 20000  # generator updates
    n_critic: int = 1  # D steps per G step (5 is usual for wgan-gp)
    gp_weight: float = 10.0
    label_smoothing: float = 0.9  # one-sided: real target for BCE
    aux_weight: float = 1.0  # auxiliary item-type / colour classification
    # G's own weight on those heads (D keeps aux_weight). Lowering it to 0.2 for 4,000 fine-tuning steps
    # made the classifier-feature FID worse (5.5 -> 6.7, run gan-v4), so it stays at 1.
    aux_weight_g: float = 1.0
    mismatch_weight: float = 0.5  # matching-aware D: real image + wrong caption counts as fake
    augment: str = "translation,cutout"  # DiffAugment policy; colour jitter off (colour is a condition)
    mode_seeking: float = 1.0  # MSGAN diversity term: different seeds must give different images
    ema_decay: float = 0.999
    image_encoder: str = ""  # retrieval-embedding checkpoint: also condition G on the photo's (grey) embedding
    image_dropout: float = 0.5  # share of samples without the image condition, so text alone still works
    image_weight: float = 1.0  # consistency: the generated image embeds close to its image condition
    init_from: str = ""  # warm start G, D and EMA from a run checkpoint (new layers start at zero)
    g_width: int = 32  # network widths (see GANConfig)
    d_width: int = 32
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads (0 = torch default)
    sample_every: int = 500
    checkpoint_every: int = 500
    log_every: int = 50
    out: str = "runs/gan"
    cache_dir: str = "data_cache"

    def to_dict(self) -> dict:
        return asdict(self)


def add_dataclass_options(parser, config_cls, choices: dict | None = None) -> None:
    """One `--option` per field of a config dataclass, with its default; booleans get --no-x too."""
    import argparse

    choices = {"device": ("auto", "cpu", "cuda"), **(choices or {})}
    defaults = config_cls()
    for f in fields(config_cls):
        default = getattr(defaults, f.name)
        flag = f"--{f.name.replace('_', '-')}"
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            extra = {"choices": choices[f.name]} if f.name in choices else {}
            parser.add_argument(flag, type=type(default), default=default, **extra)


def config_from_args(config_cls, args):
    return config_cls(**{f.name: getattr(args, f.name) for f in fields(config_cls)})
