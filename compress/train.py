"""GAN training steps for the three setups; the generator being compressed is `generator` (the
hyper generator while searching, the slim one while converging).

- pix2pix: conditional PatchGAN, vanilla GAN loss (BCE on logits) + L1 x 100.
- CycleGAN: LSGAN, cycle x 10, identity x 0.5 (of the cycle weight), image pools of 50. The
  generator being compressed maps A → B (the deployed direction); B → A stays dense.
- DCGAN: BCE on logits, generator fed Gaussian noise.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compress.distributed import all_finite
from compress.errors import ConfigError, TrainingDivergedError
from compress.models import build_discriminator, build_generator, full_plan
from compress.plan import ChannelPlan

SETUPS = ("pix2pix", "cyclegan", "dcgan")


@dataclass(frozen=True)
class TrainConfig:
    setup: str = "pix2pix"
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lambda_l1: float = 100.0
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5
    direction: str = "AtoB"  # CycleGAN: the deployed direction, whose generator is compressed
    pool_size: int = 50
    ndf: int = 64
    n_layers_d: int = 3
    converge_steps: int = 200
    decay_steps: int = 100  # the last `decay_steps` of converging decay the lr linearly to 0
    teacher: str = ""  # optional dense generator checkpoint to distill from while converging
    distill_weight: float = 0.0  # weight of the L1 to the teacher's output (off by default)
    dense_steps: int = 0  # train a dense reference for the report when none is given (0: don't)
    # Under torchrun with N ranks (compress/distributed.py): every rank takes data.batch_size
    # images, so the effective batch is N x data.batch_size; "none" keeps train.lr and search.lr
    # as configured (the pix2pix/CycleGAN practice), "linear" multiplies both by N.
    lr_scaling: str = "none"

    def __post_init__(self) -> None:
        if self.direction not in ("AtoB", "BtoA"):
            raise ConfigError(f"train.direction must be AtoB or BtoA, got {self.direction!r}")
        if self.setup not in SETUPS:
            raise ConfigError(f"train.setup must be one of {', '.join(SETUPS)}, got {self.setup!r}")
        if not self.lr > 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if self.lr_scaling not in ("none", "linear"):
            raise ConfigError(f"train.lr_scaling must be none or linear, got {self.lr_scaling!r}")
        if self.distill_weight < 0 or (self.distill_weight > 0 and not self.teacher):
            raise ConfigError("train.distill_weight > 0 needs train.teacher, a dense generator checkpoint")
        if self.converge_steps < 0 or not 0 <= self.decay_steps <= max(self.converge_steps, 0):
            raise ConfigError("train.decay_steps must be between 0 and train.converge_steps")


class ImagePool:
    """The CycleGAN history buffer: half the time the discriminator sees an older fake."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size, self.images = size, []
        self.rng = random.Random(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif self.rng.random() < 0.5:
                i = self.rng.randrange(self.size)
                out.append(self.images[i].clone())
                self.images[i] = image
            else:
                out.append(image)
        return torch.cat(out)


def _adam(params, config: TrainConfig) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=config.lr, betas=(config.beta1, config.beta2))


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def _lsgan(pred: torch.Tensor, real: bool) -> torch.Tensor:
    return F.mse_loss(pred, torch.ones_like(pred) if real else torch.zeros_like(pred))


class GanTrainer:
    """Owns the discriminators (and CycleGAN's B → A generator) and their optimizers; `step`
    runs one discriminator and one generator update and returns the losses."""

    def __init__(
        self,
        generator: nn.Module,
        plan: ChannelPlan,
        config: TrainConfig,
        device: torch.device,
        wrap: Callable[[nn.Module], nn.Module] = lambda m: m,
    ) -> None:
        self.g, self.config, self.device = generator, config, device
        self.setup = config.setup
        if (self.setup == "dcgan") != (plan.arch == "dcgan"):
            raise ConfigError(f"setup {self.setup!r} does not fit a {plan.arch} generator")
        nc = plan.sizes.get("output_nc", 3)
        if self.setup == "pix2pix":
            self.d = build_discriminator(plan.arch, input_nc=plan.sizes["input_nc"] + nc, ndf=config.ndf,
                                         n_layers=config.n_layers_d, norm="batch")  # fmt: skip
            self.nets: dict[str, nn.Module] = {"d": self.d}
        elif self.setup == "cyclegan":
            self.g_b = build_generator(plan.arch, full_plan(plan.arch, **plan.sizes))
            self.d_a = build_discriminator(plan.arch, input_nc=nc, ndf=config.ndf, n_layers=config.n_layers_d)
            self.d_b = build_discriminator(plan.arch, input_nc=plan.sizes["input_nc"], ndf=config.ndf,
                                           n_layers=config.n_layers_d)  # fmt: skip
            self.pool_a, self.pool_b = ImagePool(config.pool_size), ImagePool(config.pool_size, seed=1)
            self.nets = {"g_b": self.g_b, "d_a": self.d_a, "d_b": self.d_b}
        else:
            self.d = build_discriminator("dcgan", input_nc=nc, ndf=config.ndf, image_size=plan.sizes["image_size"])
            self.nets = {"d": self.d}
        for name, net in self.nets.items():  # DDP-wrapped under torchrun (`wrap`)
            self.nets[name] = wrap(net.to(device).train())
            setattr(self, name, self.nets[name])
        g_params = list(generator.parameters())
        if self.setup == "cyclegan":
            g_params += list(self.g_b.parameters())
            d_params = [*self.d_a.parameters(), *self.d_b.parameters()]
        else:
            d_params = list(self.d.parameters())
        self.opt_g, self.opt_d = _adam(g_params, config), _adam(d_params, config)
        self.nz = plan.sizes.get("nz", 0)
        self.teacher: nn.Module | None = None  # set to distill (converge stage)

    def _distill(self, inputs: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        if self.teacher is None or self.config.distill_weight == 0:
            return torch.zeros((), device=fake.device)
        with torch.no_grad():
            target = self.teacher(inputs)
        return self.config.distill_weight * F.l1_loss(fake, target)

    def state_dict(self) -> dict[str, Any]:
        # Unwrapped (no DDP "module." prefix), so a state saved under torchrun loads anywhere.
        return {name: getattr(net, "module", net).state_dict() for name, net in self.nets.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, net in self.nets.items():
            getattr(net, "module", net).load_state_dict(state[name])

    def set_lr(self, lr: float) -> None:
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = lr

    def step(self, batch: Any) -> dict[str, float]:
        return {"pix2pix": self._pix2pix, "cyclegan": self._cyclegan, "dcgan": self._dcgan}[self.setup](batch)

    def _pix2pix(self, batch) -> dict[str, float]:
        a, b = (t.to(self.device) for t in batch)
        fake = self.g(a)
        self.opt_d.zero_grad(set_to_none=True)
        real_logits, fake_logits = self.d(torch.cat([a, b], 1)), self.d(torch.cat([a, fake.detach()], 1))
        loss_d = 0.5 * (_bce(real_logits, True) + _bce(fake_logits, False))
        loss_d.backward()
        self.opt_d.step()
        self.opt_g.zero_grad(set_to_none=True)
        gan = _bce(self.d(torch.cat([a, fake], 1)), True)
        l1 = F.l1_loss(fake, b)
        distill = self._distill(a, fake)
        (gan + self.config.lambda_l1 * l1 + distill).backward()
        self.opt_g.step()
        return {"d": loss_d.item(), "g_gan": gan.item(), "g_l1": l1.item(), "distill": distill.item()}

    def _cyclegan(self, batch) -> dict[str, float]:
        a, b = (t.to(self.device) for t in batch[:2])
        if self.config.direction == "BtoA":  # the compressed generator is the one users deploy
            a, b = b, a
        c, idt = self.config.lambda_cycle, self.config.lambda_identity
        self.opt_g.zero_grad(set_to_none=True)
        fake_b, fake_a = self.g(a), self.g_b(b)
        rec_a, rec_b = self.g_b(fake_b), self.g(fake_a)
        gan = _lsgan(self.d_a(fake_b), True) + _lsgan(self.d_b(fake_a), True)
        cycle = F.l1_loss(rec_a, a) * c + F.l1_loss(rec_b, b) * c
        identity = (F.l1_loss(self.g(b), b) + F.l1_loss(self.g_b(a), a)) * c * idt if idt > 0 else torch.zeros(())
        distill = self._distill(a, fake_b)
        (gan + cycle + identity + distill).backward()
        self.opt_g.step()
        self.opt_d.zero_grad(set_to_none=True)
        pooled_b, pooled_a = self.pool_b.query(fake_b), self.pool_a.query(fake_a)
        loss_d = 0.5 * (_lsgan(self.d_a(b), True) + _lsgan(self.d_a(pooled_b), False))
        loss_d = loss_d + 0.5 * (_lsgan(self.d_b(a), True) + _lsgan(self.d_b(pooled_a), False))
        loss_d.backward()
        self.opt_d.step()
        return {
            "d": loss_d.item(),
            "g_gan": gan.item(),
            "cycle": cycle.item(),
            "identity": float(identity),
            "distill": distill.item(),
        }

    def _dcgan(self, batch) -> dict[str, float]:
        real = batch.to(self.device) if isinstance(batch, torch.Tensor) else batch[0].to(self.device)
        noise = torch.randn(real.shape[0], self.nz, 1, 1, device=self.device)
        fake = self.g(noise)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d = _bce(self.d(real), True) + _bce(self.d(fake.detach()), False)
        loss_d.backward()
        self.opt_d.step()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g = _bce(self.d(fake), True)
        (loss_g + self._distill(noise, fake)).backward()
        self.opt_g.step()
        return {"d": loss_d.item(), "g_gan": loss_g.item()}


def linear_decay(step: int, total: int, decay: int, lr: float) -> float:
    """Constant lr, then linear decay to 0 over the last `decay` of `total` steps."""
    if decay <= 0 or step <= total - decay:
        return lr
    return lr * max(0.0, (total - step) / decay)


def converge(
    trainer: GanTrainer,
    batches: Iterator[Any],
    config: TrainConfig,
    progress: bool = True,
    desc: str = "converge",
    start_step: int = 0,
    opt_g_state: dict[str, Any] | None = None,
    save_state: Callable[[int, list[dict[str, float]]], None] | None = None,
    checkpoint_every: int = 100,
) -> list[dict[str, float]]:
    """Fine-tune the slim generator (with a fresh generator optimizer) for `converge_steps`.

    `start_step` > 0 resumes (with the optimizer's saved `opt_g_state`); `save_state(step, log)` is
    called every `checkpoint_every` steps and when the loop ends or is interrupted. Returns the
    log of the steps run here."""
    from coronet.progress import Progress

    trainer.opt_g = _adam(
        [*trainer.g.parameters(), *(trainer.g_b.parameters() if trainer.setup == "cyclegan" else [])], config
    )
    if opt_g_state is not None:
        trainer.opt_g.load_state_dict(opt_g_state)
    log: list[dict[str, float]] = []
    done, diverged = start_step, False
    steps = range(start_step + 1, config.converge_steps + 1)
    bar = Progress(desc, config.converge_steps, start_step, enabled=progress)
    try:
        for step in steps:
            trainer.set_lr(linear_decay(step, config.converge_steps, config.decay_steps, config.lr))
            losses = trainer.step(next(batches))
            if not all_finite(list(losses.values()), trainer.device):  # on every rank, under torchrun
                diverged = True  # the weights are spoilt: keep the last saved state instead
                raise TrainingDivergedError(f"a converge loss is not finite at step {step}: {losses}; lower train.lr")
            log.append({"step": step, **losses})
            bar.show(**losses)
            bar.update(1)
            done = step
            if save_state is not None and step % checkpoint_every == 0:
                save_state(step, log)
    finally:
        bar.close()
        if save_state is not None and done > start_step and not diverged:
            save_state(done, log)  # also on Ctrl-C or an error: converging resumes from here
    return log
