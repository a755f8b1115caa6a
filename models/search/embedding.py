"""The shared image/text embedding space for catalogue search.

- `ImageEncoder`: a small convnet, 64x64 RGB in [-1, 1] -> L2-normalised `dim`-d embedding, plus
  auxiliary heads that classify item type, colour and gender (the Upload tab's "describe this image").
- `TextProjection`: the frozen 384-d MiniLM sentence embedding -> the same space.
- `triplet_loss`: triplets mined inside a batch (batch-hard, semi-hard or batch-all) from masks;
  `label_masks` / `product_masks` build those masks from item type, colour and product identity.

Everything the model needs to be rebuilt is in `EmbeddingConfig`, stored in every checkpoint.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

MINING = ("batch-hard", "semi-hard", "batch-all")


@dataclass
class EmbeddingConfig:
    dim: int = 128  # size of the shared embedding space
    width: int = 32  # image encoder base width: 32-64-128-256 channels at 32-16-8-4 px
    text_dim: int = 384  # input text embedding (all-MiniLM-L6-v2)
    text_hidden: int = 512  # hidden units of the text projection MLP
    article_types: list[str] = field(default_factory=list)  # auxiliary head labels, in logit order
    colours: list[str] = field(default_factory=list)
    genders: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict) -> EmbeddingConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)


def _conv(c_in: int, c_out: int, stride: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2 if stride == 1 else 1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ImageEncoder(nn.Module):
    """~45 M multiply-adds per 64x64 image: cheap enough to train on two CPU cores in minutes."""

    def __init__(self, cfg: EmbeddingConfig):
        super().__init__()
        w = cfg.width
        self.features = nn.Sequential(
            _conv(3, w, 2, kernel=4),  # 32 px
            _conv(w, 2 * w, 2), _conv(2 * w, 2 * w, 1),  # 16 px
            _conv(2 * w, 4 * w, 2), _conv(4 * w, 4 * w, 1),  # 8 px
            _conv(4 * w, 8 * w, 2), _conv(8 * w, 8 * w, 1),  # 4 px
        )
        feat = 8 * w
        self.embed = nn.Linear(feat, cfg.dim)
        self.type_head = nn.Linear(feat, len(cfg.article_types)) if cfg.article_types else None
        self.colour_head = nn.Linear(feat, len(cfg.colours)) if cfg.colours else None
        self.gender_head = nn.Linear(feat, len(cfg.genders)) if cfg.genders else None

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Convolutions (in bf16 when the trainer runs them under autocast), pooled in fp32."""
        return self.features(x).float().mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pooled(x)
        with torch.autocast(x.device.type, enabled=False):  # the embedding itself always in fp32
            return F.normalize(self.embed(h), dim=-1)

    def forward_with_logits(self, x: torch.Tensor):
        """(embedding, type logits, colour logits, gender logits); a head that is off gives None."""
        h = self.pooled(x)
        with torch.autocast(x.device.type, enabled=False):
            heads = [head(h) if head is not None else None
                     for head in (self.type_head, self.colour_head, self.gender_head)]
            return F.normalize(self.embed(h), dim=-1), *heads


class TextProjection(nn.Module):
    """Frozen sentence embedding -> shared space (a two-layer MLP)."""

    def __init__(self, cfg: EmbeddingConfig):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(cfg.text_dim, cfg.text_hidden), nn.ReLU(inplace=True),
                                 nn.Linear(cfg.text_hidden, cfg.dim))

    def forward(self, text_emb: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(text_emb), dim=-1)


class EmbeddingModel(nn.Module):
    """Both towers in one module, so one state_dict holds the whole embedding model."""

    def __init__(self, cfg: EmbeddingConfig):
        super().__init__()
        self.cfg = cfg
        self.image = ImageEncoder(cfg)
        self.text = TextProjection(cfg)


# ---- mining masks and the triplet loss -----------------------------------------------------------

def label_masks(types: torch.Tensor, colours: torch.Tensor, products: torch.Tensor):
    """Positive / negative masks over all pairs of rows (a batch of images and captions together).

    Positive: same product (an image and its own caption), or same item type AND same colour.
    Negative: a different product whose type or colour differs (unknown labels, -1, never differ).
    The diagonal (a row with itself) is neither.
    """
    same_product = products[:, None] == products[None, :]
    t_known = (types[:, None] >= 0) & (types[None, :] >= 0)
    c_known = (colours[:, None] >= 0) & (colours[None, :] >= 0)
    same_type = (types[:, None] == types[None, :]) & t_known
    same_colour = (colours[:, None] == colours[None, :]) & c_known
    eye = torch.eye(len(types), dtype=torch.bool, device=types.device)
    positive = (same_product | (same_type & same_colour)) & ~eye
    negative = (((types[:, None] != types[None, :]) & t_known) | ((colours[:, None] != colours[None, :]) & c_known))
    return positive, negative & ~same_product


def product_masks(products: torch.Tensor, texts: list[str] | None = None):
    """Instance level, image rows vs caption rows: positive = the same product; negative = another
    product (whose caption is not the identical text, which could never be told apart)."""
    positive = products[:, None] == products[None, :]
    negative = ~positive
    if texts is not None:
        ids = {t: i for i, t in enumerate(dict.fromkeys(texts))}
        codes = torch.tensor([ids[t] for t in texts], device=products.device)
        negative &= codes[:, None] != codes[None, :]
    return positive, negative


def triplet_loss(anchors: torch.Tensor, candidates: torch.Tensor, positive: torch.Tensor,
                 negative: torch.Tensor, margin: float = 0.2, mining: str = "batch-hard") -> torch.Tensor:
    """Cosine-similarity triplet loss, relu(margin + s(a, n) - s(a, p)), with in-batch mining.

    batch-hard: each anchor's hardest positive against its hardest negative (Hermans et al. 2017).
    semi-hard: every (anchor, positive) pair against the most similar negative that is still less
      similar than the positive; if there is none, the least similar negative (FaceNet).
    batch-all: the mean over all triplets that violate the margin.
    Anchors without a positive or a negative do not count.
    """
    if mining not in MINING:
        raise ValueError(f"unknown mining {mining!r}; choose from {MINING}")
    sim = anchors @ candidates.T
    valid = positive.any(1) & negative.any(1)
    if not valid.any():
        return sim.sum() * 0.0
    sim, positive, negative = sim[valid], positive[valid], negative[valid]
    if mining == "batch-hard":
        hardest_pos = sim.masked_fill(~positive, float("inf")).min(1).values
        hardest_neg = sim.masked_fill(~negative, float("-inf")).max(1).values
        return F.relu(margin + hardest_neg - hardest_pos).mean()
    neg_sorted = sim.masked_fill(~negative, float("inf")).sort(dim=1).values  # negatives first, ascending
    n_neg = negative.sum(1, keepdim=True)
    if mining == "semi-hard":
        # Index of the first negative at least as similar as each candidate positive.
        pos_sim = sim.detach().contiguous()
        idx = torch.searchsorted(neg_sorted.detach().contiguous(), pos_sim)
        below = (idx - 1).clamp(min=0)
        take = torch.where(idx > 0, below, torch.zeros_like(idx))  # none below: the easiest negative
        take = torch.minimum(take, n_neg - 1)
        s_neg = neg_sorted.gather(1, take)
        losses = F.relu(margin + s_neg - sim)
        return losses[positive].mean()
    # batch-all: (anchor, positive, negative) triplets, averaged over the violating ones.
    losses = F.relu(margin + sim[:, None, :] - sim[:, :, None])  # [a, p, n]
    mask = positive[:, :, None] & negative[:, None, :]
    losses = losses[mask]
    active = (losses > 1e-12).sum().clamp(min=1)
    return losses.sum() / active


def class_balanced_batch(cells: list[list[int]], weights: torch.Tensor, n_cells: int, per_cell: int,
                         generator: torch.Generator) -> list[int]:
    """P x K sampling: `n_cells` (type, colour) cells drawn by `weights` without replacement, then
    `per_cell` products from each (with replacement when the cell is smaller), so every row has
    label positives in the batch."""
    picks = torch.multinomial(weights, min(n_cells, len(cells)), replacement=False, generator=generator).tolist()
    rows = []
    for c in picks:
        members = cells[c]
        draw = torch.randint(0, len(members), (per_cell,), generator=generator).tolist()
        if len(members) >= per_cell:  # distinct members where the cell allows it
            draw = torch.randperm(len(members), generator=generator)[:per_cell].tolist()
        rows += [members[i] for i in draw]
    return rows
