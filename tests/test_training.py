"""Training: each loss learns on a tiny batch, checkpoints round-trip, resume is exact, DDP on gloo."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from models.config import GANConfig, TrainConfig
from models.networks import Discriminator, Generator
from models.training.gan import Trainer
from models.training.losses import LOSSES, discriminator_loss, generator_loss, gradient_penalty
from tests.conftest import ROOT

TINY = GANConfig(g_width=8, d_width=8, z_dim=16, cond_dim=16, n_article_types=5, n_colours=4)


def _d_loss(kind, D, real, fake, text):
    parts = [real, fake] + ([(real + fake).div(2).requires_grad_(True)] if kind == "wgan-gp" else [])
    x = torch.cat(parts)
    scores, wrong, _, _ = D(x, text.repeat(len(x) // len(real), 1), text.roll(1, 0))
    n = len(real)
    loss = discriminator_loss(kind, scores[:n], scores[n : 2 * n], wrong)
    if kind == "wgan-gp":
        loss = loss + 10 * gradient_penalty(scores[2 * n :], parts[2])
    return loss


@pytest.mark.parametrize("kind", LOSSES)
def test_each_loss_trains_discriminator_then_generator(kind, pack_path):
    torch.manual_seed(0)
    from models.data import images_to_tensor, load_table

    real = images_to_tensor(load_table(pack_path).images[:16])
    text = torch.nn.functional.normalize(torch.randn(16, 384), dim=1)
    G, D = Generator(TINY), Discriminator(TINY)
    z = torch.randn(16, TINY.z_dim)
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.5, 0.9))
    fake = G(z, text).detach()
    first = _d_loss(kind, D, real, fake, text).item()
    for _ in range(30):
        loss = _d_loss(kind, D, real, fake, text)
        opt_d.zero_grad()
        loss.backward()
        opt_d.step()
    assert loss.item() < first - 0.1, f"{kind}: D loss {first:.3f} -> {loss.item():.3f}"

    opt_g = torch.optim.Adam(G.parameters(), lr=2e-3, betas=(0.5, 0.9))
    D.requires_grad_(False)
    g_first = generator_loss(kind, D(G(z, text), text)[0]).item()
    for _ in range(30):
        g_loss = generator_loss(kind, D(G(z, text), text)[0])
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
    assert g_loss.item() < g_first, f"{kind}: G loss {g_first:.3f} -> {g_loss.item():.3f}"


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="unknown loss"):
        generator_loss("mse", torch.zeros(2))


def test_text_condition_changes_the_image():
    G = Generator(TINY).eval()
    for p in G.embed.parameters():  # fresh FiLM layers start at zero; give the condition some weight
        torch.nn.init.normal_(p, std=0.5)
    for m in G.modules():
        if hasattr(m, "film"):
            torch.nn.init.normal_(m.film.weight, std=0.5)
    z = torch.randn(1, TINY.z_dim).repeat(2, 1)
    text = torch.randn(2, 384)
    out = G(z, text)
    assert (out[0] - out[1]).abs().mean() > 1e-3


def _config(tmp_path, **kw) -> TrainConfig:
    base = dict(data=str(ROOT / "tests/fixtures/pack/mini.npz"), batch=8, steps=4, g_width=8, d_width=8,
                out=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"), log_every=1,
                sample_every=2, checkpoint_every=2, threads=1, holdout=False)
    base.update(kw)
    return TrainConfig(**base)


def test_run_directory_contents(tmp_path):
    trainer = Trainer(_config(tmp_path))
    trainer.train()
    run = tmp_path / "run"
    assert (run / "config.json").exists()
    lines = (run / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("step,loss_d,loss_g,d_acc_real") and len(lines) == 5
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step000002.png", "step000004.png"]
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["step"] == 4 and ckpt["config"]["train"]["batch"] == 8


def test_resume_continues_exactly(tmp_path):
    straight = Trainer(_config(tmp_path / "a"))
    straight.train()
    first = Trainer(_config(tmp_path / "b", steps=2))
    first.train()
    resumed = Trainer(_config(tmp_path / "b", steps=4))
    assert resumed.resume() and resumed.step == 2
    resumed.train()
    for key, value in straight.G_ema.state_dict().items():
        assert torch.equal(value, resumed.G_ema.state_dict()[key]), key
    for key, value in straight.D.state_dict().items():
        assert torch.equal(value, resumed.D.state_dict()[key]), key


def test_checkpoint_round_trip_and_damage(tmp_path):
    G = Generator(TINY)
    path = tmp_path / "g.pt"
    save_checkpoint(path, {"state_dict": G.state_dict(), "config": {"gan": TINY.to_dict()}})
    ckpt = load_checkpoint(path)
    G2 = Generator(GANConfig.from_dict(ckpt["config"]["gan"]))
    G2.load_state_dict(ckpt["state_dict"])
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), G2.state_dict().values()))
    path.write_bytes(path.read_bytes()[:1000])  # truncated download
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_with_arbitrary_pickle_is_refused(tmp_path):
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "config": {}, "version": 1, "x": Payload()}, path, pickle_module=pickle)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


# `python -m models.train` as torchrun starts it, with each rank saving its own weights when training ends
# (only rank 0 writes the checkpoint), so the test can see whether the ranks stayed in step.
DDP_DRIVER = """
import sys
from pathlib import Path

import torch

from models.training import gan

train = gan.Trainer.train


def train_and_dump(self):
    start = {k: v.clone() for k, v in self.G.state_dict().items()}
    train(self)
    torch.save({"G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
                "G_start": start, "step": self.step}, Path(self.cfg.out) / f"rank{self.rank}-of-{self.world}.pt")


gan.Trainer.train = train_and_dump
from models.train import main  # noqa: E402

raise SystemExit(main(sys.argv[1:]))
"""


def test_ddp_two_cpu_processes_with_gloo(tmp_path):
    """Two CPU ranks draw different batches (their samplers are seeded by rank); DDP averages the gradients,
    so after training both hold the very same G, D and G_ema, which moved from the common start and which
    rank 0 saved."""
    driver = tmp_path / "ddp_driver.py"
    driver.write_text(DDP_DRIVER, encoding="utf-8")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    args = [str(driver), "--data", str(ROOT / "tests/fixtures/pack/mini.npz"), "--steps", "3",
            "--batch", "4", "--no-holdout", "--g-width", "8", "--d-width", "8", "--device", "cpu", "--threads", "1",
            "--out", str(tmp_path / "ddp"), "--cache-dir", str(tmp_path / "cache"), "--log-every", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(torchrun + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")
    assert ckpt["step"] == 3
    assert len((tmp_path / "ddp" / "metrics.csv").read_text().splitlines()) == 4
    ranks = [torch.load(tmp_path / "ddp" / f"rank{r}-of-2.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["step"] == ranks[1]["step"] == 3
    cfg = GANConfig.from_dict(ckpt["config"]["gan"])
    start = Generator(cfg)
    # Parameters only: BatchNorm running statistics are broadcast from rank 0 before each forward pass, so
    # after the last one each rank keeps its own batch's update (in G_ema too, which copies G's buffers).
    parameters = {"G": [k for k, _ in start.named_parameters()], "G_ema": [k for k, _ in start.named_parameters()],
                  "D": [k for k, _ in Discriminator(cfg).named_parameters()]}
    for name, keys in parameters.items():
        assert keys and set(keys) <= set(ranks[0][name])
        for key in keys:
            assert torch.equal(ranks[0][name][key], ranks[1][name][key]), f"rank 1's {name}.{key} differs from rank 0's"
            assert torch.equal(ranks[0][name][key], ckpt["state_dict"][name][key]), f"the checkpoint's {name}.{key}"
    moved = [k for k in parameters["G"] if not torch.equal(ranks[0]["G_start"][k], ranks[0]["G"][k])]
    assert len(moved) > len(parameters["G"]) // 2, f"training changed only {moved} of the generator"


def test_mode_seeking_loss_penalises_ignoring_the_seed():
    from models.training.losses import mode_seeking_loss

    z = torch.randn(8, 16)
    same = torch.zeros(8, 3, 4, 4)
    varied = torch.randn(8, 3, 4, 4)
    assert mode_seeking_loss(same, z) > 1000 * mode_seeking_loss(varied, z)


def test_warm_start_adds_an_image_slot_without_changing_text_only_images(tmp_path):
    """A zero-initialised image slot: a text-only generator gains it and still draws the same images."""
    G = Generator(TINY).eval()
    sliced = Generator(GANConfig(**{**TINY.to_dict(), "image_dim": 6})).eval()
    missing, unexpected = sliced.load_state_dict(G.state_dict(), strict=False)
    assert missing == ["embed.image.weight"] and not unexpected
    z, text = torch.randn(2, TINY.z_dim), torch.randn(2, 384)
    with torch.no_grad():
        assert torch.allclose(G(z, text), sliced(z, text, torch.randn(2, 6)), atol=1e-6)


@pytest.mark.parametrize("argv, stage, rest", [
    (["--steps", "3"], "gan", ["--steps", "3"]),
    (["--steps", "3", "--stage", "embed"], "embed", ["--steps", "3"]),
    (["--stage=embed", "--out", "x"], "embed", ["--out", "x"]),
])
def test_stage_is_split_from_the_trainer_options(argv, stage, rest):
    from models.train import split_stage

    assert split_stage(argv) == (stage, rest)


def test_unknown_stage_is_refused(capsys):
    from models.train import main

    with pytest.raises(SystemExit) as exc:
        main(["--stage", "vae"])
    assert exc.value.code == 2 and "invalid choice: 'vae'" in capsys.readouterr().err
