"""The training loop behind ``siglip train``: processes, model wrapping, optimisation, logging and checkpoints.

Processes. Launched by torchrun, each process joins the default group (NCCL with one GPU per process, else gloo
on CPU); run directly it trains alone, without a group, unless ``--fsdp`` asks for one (a world of one). The
contrastive loss gets a group of its own so that its ring of P2P transfers never interleaves with the gradient
collectives of DDP / FSDP.

Contrastive step. Each rank embeds its local pairs and calls ``siglip.loss.distributed_sigmoid_loss``: its images
meet the texts of every rank (global negatives) while text blocks travel a ring. That loss gives each rank's
embeddings their rows of the global-batch gradient and each rank a share of the scale / bias gradient, so after
DDP's (or FSDP's) mean over ranks every gradient is the global one divided by the world size; the loss is therefore
multiplied by the world size before ``backward``, and the update is that of one process holding the global batch.
With ``--grad-accum K`` the step is the GradCache scheme (open_clip's ``--accum-freq``): embed the K micro-batches
without gradients, take the loss of all of them at once and its gradient with respect to the embeddings, then run
each micro-batch through the towers again and back-propagate those gradients. Negatives then span all K
micro-batches, and K x B equals one batch of K B up to float rounding; the price is a second forward pass.

Classification step. Cross-entropy on the logits of ``*ForImageClassification`` (single-label, as transformers);
micro-batch losses are weighted by their share of the accumulated batch, so K x B equals one batch of K B as well.

Determinism and ``--resume``. The data of step ``s`` depends only on (seed, s) (``data.RankBatches``), and the
global RNG is reseeded from (seed, step, rank, micro-batch) before every forward (big_vision folds the step into
its key the same way), so a run needs no RNG state to resume: a checkpoint holds the weights (hub format), the
AdamW and scheduler state and the step, and the resumed run repeats the uninterrupted one bit for bit on the same
hardware. Checkpoints are written to a temporary folder and renamed into place.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..auto import AutoImageProcessor, AutoModel, AutoModelForImageClassification, AutoTokenizer
from ..files import Checkpoint, CheckpointError
from ..loss import distributed_sigmoid_loss
from ..modeling_siglip import SiglipEncoderLayer
from ..progress import Progress
from .config import TrainConfig, TrainError
from .data import Collate, Example, ExampleDataset, RankBatches, read_class_folders, read_pairs, scan_images

logger = logging.getLogger("siglip")

STATE_FILE = "training_state.pt"
LOG_FILE = "log.jsonl"
SKIPPED_FILE = "skipped.jsonl"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Settings a resumed run must share with the run it continues: they decide the data order and the update.
_RUN_KEYS = (
    "task",
    "world_size",
    "batch_size",
    "grad_accum",
    "seed",
    "total_steps",
    "warmup_steps",
    "lr",
    "weight_decay",
    "max_grad_norm",
    "bf16",
    "num_examples",
    "examples_digest",
)


# ------------------------------------------------------------------------------------------------------------
# Processes
# ------------------------------------------------------------------------------------------------------------


@dataclass
class Processes:
    """Where this process stands: rank, world size, device, and the group the contrastive loss uses."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    loss_group: Any = None
    owns_group: bool = False  # we initialised the default group, so we tear it down

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def setup_processes(config: TrainConfig) -> Processes:
    """Join the torchrun group (or make a world of one for ``--fsdp``) and pick this process's device."""
    use_cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise TrainError("--device cuda was asked for but CUDA is not available on this machine")
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    local_rank = int(os.environ.get("LOCAL_RANK", 0)) if launched else 0
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    backend = "nccl" if use_cuda else "gloo"
    procs = Processes(device=device)
    if dist.is_initialized():  # a caller (a notebook, a test) already made the group
        pass
    elif launched:
        dist.init_process_group(backend, device_id=device if use_cuda else None)
        procs.owns_group = True
    elif config.fsdp:  # FSDP needs a group even alone; an in-memory store needs no port
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        procs.owns_group = True
    if dist.is_initialized():
        procs.rank, procs.world = dist.get_rank(), dist.get_world_size()
        if config.task == "contrastive" and procs.world > 1:
            procs.loss_group = dist.new_group(backend=backend)
    return procs


def _reseed(seed: int, step: int, rank: int, micro: int) -> None:
    """Global RNG (dropout) for one forward: a function of where we are, so resumed runs draw the same numbers."""
    torch.manual_seed(hash((seed, step, rank, micro)) & 0x7FFF_FFFF_FFFF_FFFF)


# ------------------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------------------


class ContrastiveTowers(nn.Module):
    """What DDP / FSDP wrap for contrastive training: both towers' normalised embeddings plus the raw logit scale
    and bias. Those two come out of ``forward`` as copies: FSDP gathers them only for the forward and frees that
    storage after the backward, while the loss and the logged statistics need their values."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **image_inputs: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        image = self.model.get_image_features(**image_inputs).float()  # (B, D)
        text = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).float()  # (B, D)
        image = image / image.norm(p=2, dim=-1, keepdim=True)
        text = text / text.norm(p=2, dim=-1, keepdim=True)
        return image, text, self.model.logit_scale.clone(), self.model.logit_bias.clone()


class ImageClassifier(nn.Module):
    """What DDP / FSDP wrap for classification: logits (B, num_labels) of ``*ForImageClassification``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, **image_inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**image_inputs).logits


def build_model(
    config: TrainConfig, source: Path | Checkpoint, classes: list[str] | None, from_scratch: bool
) -> nn.Module:
    """The model to train (fp32, train mode): ``source``'s weights, or new ones with ``source``'s config."""
    checkpoint = Checkpoint.resolve(source)
    config_dict = checkpoint.config_dict()
    table = AutoModel if classes is None else AutoModelForImageClassification
    try:
        model_class = table.class_for(config_dict.get("model_type"))
    except ValueError as e:
        raise TrainError(f"{checkpoint.folder}: {e}") from None
    overrides: dict[str, Any] = {}
    if classes is not None:
        overrides = {"id2label": dict(enumerate(classes)), "label2id": {name: i for i, name in enumerate(classes)}}
    torch.manual_seed(config.seed)  # new weights (all of them, or a fresh classifier head) depend on the seed only
    if from_scratch:
        model = model_class(model_class.config_class.from_dict(config_dict, **overrides))
        model.init_weights()
        if classes is None:
            with torch.no_grad():  # big_vision's SigLIP init unless asked otherwise: t = 10, b = -10
                model.logit_scale.fill_(math.log(10.0 if config.init_temperature is None else config.init_temperature))
                model.logit_bias.fill_(-10.0 if config.init_bias is None else config.init_bias)
    else:
        model = model_class.from_pretrained(checkpoint, dtype=torch.float32, **overrides)
    if classes is not None and getattr(model.vision_model, "head", None) is not None:
        # The classifier pools patch tokens itself; the attention-pooling head gets no gradient, which DDP would
        # otherwise report as unused parameters on every step.
        model.vision_model.head.requires_grad_(False)
    return model.train()


def _wrap(core: nn.Module, config: TrainConfig, procs: Processes) -> nn.Module:
    """DDP (default) or FSDP2 (one shard unit per encoder layer, then the rest) around ``core``."""
    if config.fsdp:
        from torch.distributed.fsdp import fully_shard

        for module in core.modules():
            if isinstance(module, SiglipEncoderLayer):
                fully_shard(module)
        fully_shard(core)
        return core
    if procs.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(core, device_ids=[procs.device] if procs.device.type == "cuda" else None)
    return core


@contextlib.contextmanager
def _gradient_sync(wrapped: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient reduction for all but the last micro-batch of a step."""
    if enabled:
        yield
    elif hasattr(wrapped, "no_sync"):  # DDP
        with wrapped.no_sync():
            yield
    elif hasattr(wrapped, "set_requires_gradient_sync"):  # FSDP2
        wrapped.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            wrapped.set_requires_gradient_sync(True)
    else:
        yield


# ------------------------------------------------------------------------------------------------------------
# Optimiser and schedule
# ------------------------------------------------------------------------------------------------------------


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based): linear warm-up, then cosine decay to zero."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def build_optimizer(core: nn.Module, config: TrainConfig) -> tuple[torch.optim.Optimizer, list[list[str]]]:
    """AdamW (beta2 0.95, as the SigLIP paper, against loss spikes) with weight decay on matrices only.

    Returns the optimizer and the parameter names of each of its groups, in order.
    """
    decay: list[tuple[str, nn.Parameter]] = []
    no_decay: list[tuple[str, nn.Parameter]] = []
    for name, p in core.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append((name, p))  # biases, norms, logit scale / bias: no decay
    groups = [
        {"params": [p for _, p in decay], "weight_decay": config.weight_decay},
        {"params": [p for _, p in no_decay], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95))
    return optimizer, [[n for n, _ in decay], [n for n, _ in no_decay]]


# ------------------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    """Sizes that follow from the data and the options."""

    num_examples: int
    global_batch: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int


def _digest(examples: list[Example]) -> str:
    h = hashlib.sha256()
    for e in examples:
        h.update(f"{e.image}\0{e.target}\n".encode())
    return h.hexdigest()[:16]


class Trainer:
    """One training run; ``run()`` does it all. Built by ``train(config)``."""

    def __init__(self, config: TrainConfig, procs: Processes):
        self.config, self.procs = config, procs
        self.out = Path(config.output).expanduser()
        self.contrastive = config.task == "contrastive"
        existing = self._checkpoints()
        if existing and not config.resume:  # checked before the data scan, which can take a while
            raise TrainError(
                f"{self.out} already holds checkpoints ({existing[-1][1].name}); pass --resume to "
                "continue that run, or choose another --output"
            )
        try:
            self.checkpoint = Checkpoint.resolve(config.model)
        except CheckpointError as e:
            raise TrainError(f"--model {config.model}: {e}") from None
        self.image_processor = AutoImageProcessor.from_pretrained(self.checkpoint)
        self.tokenizer = self._load_tokenizer()
        self.examples, self.classes = self._read_data()
        n = len(self.examples)
        global_batch = config.batch_size * config.grad_accum * procs.world
        steps_per_epoch = n // global_batch
        if steps_per_epoch == 0:
            raise TrainError(
                f"{n} usable examples are fewer than one global batch of {global_batch} (--batch-size "
                f"{config.batch_size} x --grad-accum {config.grad_accum} x {procs.world} processes)"
            )
        total = config.max_steps or config.epochs * steps_per_epoch
        warmup = config.warmup_steps if config.warmup_steps is not None else round(0.05 * total)
        self.plan = Plan(n, global_batch, steps_per_epoch, total, min(warmup, total))
        self.run_info = {
            "task": config.task,
            "world_size": procs.world,
            "batch_size": config.batch_size,
            "grad_accum": config.grad_accum,
            "seed": config.seed,
            "total_steps": total,
            "warmup_steps": self.plan.warmup_steps,
            "lr": config.lr,
            "weight_decay": config.weight_decay,
            "max_grad_norm": config.max_grad_norm,
            "bf16": config.bf16,
            "num_examples": n,
            "examples_digest": _digest(self.examples),
            "fsdp": config.fsdp,
        }

    # -- setup ---------------------------------------------------------------------------------------------------
    def _load_tokenizer(self) -> Any:
        try:
            return AutoTokenizer.from_pretrained(self.checkpoint)
        except CheckpointError as e:
            if self.contrastive:
                raise TrainError(
                    f"--model {self.config.model}: contrastive training needs its tokenizer: {e}"
                ) from None
            return None  # classification does not read text; the checkpoint gets the tokenizer only if there is one

    def _read_data(self) -> tuple[list[Example], list[str] | None]:
        config, procs = self.config, self.procs
        if self.contrastive:
            examples, skipped = read_pairs(config.data)
            classes = None
        else:
            examples, classes, skipped = read_class_folders(config.data)
        bad = scan_images(
            [e.image for e in examples],
            config.num_workers,
            procs.rank,
            procs.world,
            show=procs.main and not config.quiet,
        )
        skipped += [(path, reason) for path, reason in bad.items()]
        examples = [e for e in examples if e.image not in bad]
        if procs.main:
            self._report_skipped(skipped)
        if not examples:
            raise TrainError(f"--data {config.data}: none of the images could be decoded")
        return examples, classes

    def _report_skipped(self, skipped: list[tuple[str, str]]) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / SKIPPED_FILE, "w", encoding="utf-8") as f:
            for source, reason in skipped:
                f.write(json.dumps({"source": source, "reason": reason}, ensure_ascii=False) + "\n")
        for source, reason in skipped[:10]:
            logger.warning("skipped %s: %s", source, reason)
        if len(skipped) > 10:
            logger.warning("... %d more skipped inputs, listed in %s", len(skipped) - 10, self.out / SKIPPED_FILE)

    def _checkpoints(self) -> list[tuple[int, Path]]:
        if not self.out.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.out.iterdir() if (m := _CHECKPOINT.match(p.name))]
        return sorted((step, p) for step, p in found if (p / STATE_FILE).is_file())

    # -- run -----------------------------------------------------------------------------------------------------
    def run(self) -> Path | None:
        """Train, checkpoint, and return the last checkpoint folder."""
        config, procs, plan = self.config, self.procs, self.plan
        existing = self._checkpoints()
        resume_from = existing[-1][1] if config.resume and existing else None
        state = self._load_state(resume_from) if resume_from else None
        self.model = build_model(
            config, resume_from or self.checkpoint, self.classes, config.from_scratch and not resume_from
        )
        self.core = (ContrastiveTowers if self.contrastive else ImageClassifier)(self.model).to(procs.device)
        self.wrapped = _wrap(self.core, config, procs)  # before the optimizer: FSDP replaces the parameters
        self.optimizer, self.param_names = build_optimizer(self.core, config)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, functools.partial(lr_factor, warmup_steps=plan.warmup_steps, total_steps=plan.total_steps)
        )
        step = 0
        if state is not None:
            self._set_optimizer_state(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            step = state["step"]
            if procs.main:
                logger.info("resuming from %s (step %d of %d)", resume_from, step, plan.total_steps)
        elif config.resume and procs.main:
            logger.info("--resume: no checkpoint in %s yet, starting from the beginning", self.out)
        if procs.main:
            self._start_log(step)
            self._describe()
        last = resume_from
        started = time.perf_counter()
        first = step
        with Progress(plan.total_steps - step, "training", unit="step", disable=config.quiet or not procs.main) as bar:
            for micro in self._batches(step):
                record = self._step(step, micro)
                step += 1
                record.update(
                    step=step,
                    epoch=round(step / plan.steps_per_epoch, 4),
                    elapsed_s=round(time.perf_counter() - started, 3),
                    samples_per_s=round((step - first) * plan.global_batch / (time.perf_counter() - started), 2),
                )
                if procs.main:
                    self._log(record)
                bar.update()
                if step % config.save_every == 0 or step == plan.total_steps:
                    last = self.save_checkpoint(step)
        return last

    def _describe(self) -> None:
        plan, config, procs = self.plan, self.config, self.procs
        params = sum(p.numel() for p in self.core.parameters())
        logger.info(
            "%s training of %s (%.2fM parameters) on %d examples: %d steps (%d per epoch), global batch %d = %d x %d "
            "process(es) x %d micro-batch(es), %s, %s on %s",
            config.task,
            type(self.model).__name__,
            params / 1e6,
            plan.num_examples,
            plan.total_steps,
            plan.steps_per_epoch,
            plan.global_batch,
            config.batch_size,
            procs.world,
            config.grad_accum,
            "FSDP" if config.fsdp else ("DDP" if procs.world > 1 else "one process"),
            "bf16 autocast" if config.bf16 else "fp32",
            procs.device,
        )

    def _batches(self, step: int) -> Iterator[list[tuple[dict[str, torch.Tensor], torch.Tensor]]]:
        """The micro-batches of every remaining step, ``grad_accum`` at a time."""
        config, procs, plan = self.config, self.procs, self.plan
        if self.contrastive:
            collate = Collate(self.tokenizer, self.model.config.text_config.max_position_embeddings)
        else:
            collate = Collate()
        dataset = ExampleDataset(self.examples, self.image_processor)
        while step < plan.total_steps:
            epoch, offset = divmod(step, plan.steps_per_epoch)
            sampler = RankBatches(
                plan.num_examples,
                config.batch_size,
                config.grad_accum,
                procs.rank,
                procs.world,
                config.seed,
                epoch,
                offset,
            )
            loader = torch.utils.data.DataLoader(
                dataset,
                batch_sampler=sampler,
                num_workers=config.num_workers,
                collate_fn=collate,
                pin_memory=procs.device.type == "cuda",
                prefetch_factor=4 if config.num_workers else None,
            )
            batches = iter(loader)
            for _ in range(offset, plan.steps_per_epoch):
                if step >= plan.total_steps:
                    return
                yield [next(batches) for _ in range(config.grad_accum)]
                step += 1

    # -- one step --------------------------------------------------------------------------------------------------
    def _forward(self, step: int, m: int, batch: tuple[dict[str, torch.Tensor], torch.Tensor]) -> Any:
        image_inputs, target = batch
        image_inputs = {k: v.to(self.procs.device, non_blocking=True) for k, v in image_inputs.items()}
        _reseed(self.config.seed, step, self.procs.rank, m)
        with torch.autocast(self.procs.device.type, dtype=torch.bfloat16, enabled=self.config.bf16):
            if self.contrastive:
                text_inputs = {k: v.to(self.procs.device, non_blocking=True) for k, v in target.items()}
                return self.wrapped(**text_inputs, **image_inputs)
            return self.wrapped(**image_inputs)

    def _step(self, step: int, micro: list[tuple[dict[str, torch.Tensor], torch.Tensor]]) -> dict[str, float]:
        record = self._contrastive_step(step, micro) if self.contrastive else self._classification_step(step, micro)
        max_norm = self.config.max_grad_norm if self.config.max_grad_norm > 0 else float("inf")  # inf: measure only
        norm = torch.nn.utils.clip_grad_norm_([p for p in self.core.parameters() if p.requires_grad], max_norm)
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        record["lr"] = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        record["grad_norm"] = float(norm)
        return record

    def _contrastive_step(self, step: int, micro: list) -> dict[str, float]:
        """One optimizer step's gradients for the sigmoid loss over the global batch (see the module docstring)."""
        world, group, k = self.procs.world, self.procs.loss_group, len(micro)
        if k == 1:
            image, text, scale, bias = self._forward(step, 0, micro[0])
            loss = distributed_sigmoid_loss(image, text, scale, bias, group=group)
            (loss * world).backward()
        else:
            with torch.no_grad():
                outputs = [self._forward(step, m, batch) for m, batch in enumerate(micro)]
            image = torch.cat([o[0] for o in outputs]).requires_grad_()
            text = torch.cat([o[1] for o in outputs]).requires_grad_()
            scale = outputs[0][2].detach().float().requires_grad_()
            bias = outputs[0][3].detach().float().requires_grad_()
            loss = distributed_sigmoid_loss(image, text, scale, bias, group=group)
            (loss * world).backward()
            sizes = [o[0].shape[0] for o in outputs]
            grads = list(zip(image.grad.split(sizes), text.grad.split(sizes), strict=True))
            # every micro-batch carries 1/k of the scale / bias gradient, so all parameters take part in each
            # backward (DDP insists) and the k parts add up to the whole
            grad_scale, grad_bias = scale.grad / k, bias.grad / k
            for m, batch in enumerate(micro):
                with _gradient_sync(self.wrapped, m == k - 1):
                    i_m, t_m, s_m, b_m = self._forward(step, m, batch)
                    surrogate = (i_m * grads[m][0]).sum() + (t_m * grads[m][1]).sum()
                    surrogate = surrogate + (s_m * grad_scale).sum() + (b_m * grad_bias).sum()
                    surrogate.backward()
        return self._logit_stats(loss.detach(), image.detach(), text.detach(), scale.detach(), bias.detach())

    def _logit_stats(
        self, loss: torch.Tensor, image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor
    ) -> dict[str, float]:
        """The global loss and big_vision's diagnostics: mean logit of matched pairs and of all unmatched pairs.

        Exact over the global batch from one small all-reduce: the sum of all logits is
        ``t (sum_i x_i) . (sum_j y_j) + b N^2``, and the matched ones are ``t sum_i x_i . y_i + b N``.
        """
        sums = torch.cat(
            [
                image.sum(0),
                text.sum(0),
                (image * text).sum()[None],
                torch.tensor([image.shape[0]], dtype=image.dtype, device=image.device),
                loss.float()[None],
            ]
        )
        if self.procs.world > 1:
            dist.all_reduce(sums)
        d = image.shape[1]
        sum_x, sum_y, matched, n, total_loss = sums[:d], sums[d : 2 * d], sums[2 * d], sums[2 * d + 1], sums[2 * d + 2]
        t, b = scale.float().exp().item(), bias.float().item()
        pos = matched / n
        neg = (torch.dot(sum_x, sum_y) - matched) / (n * n - n).clamp_min(1)
        return {
            "loss": total_loss.item(),
            "pos_logit": (t * pos + b).item(),
            "neg_logit": (t * neg + b).item(),
            "logit_scale": t,
            "logit_bias": b,
        }

    def _classification_step(self, step: int, micro: list) -> dict[str, float]:
        total = sum(batch[1].shape[0] for batch in micro)
        sums = torch.zeros(3, device=self.procs.device)  # loss sum, correct, count
        for m, batch in enumerate(micro):
            with _gradient_sync(self.wrapped, m == len(micro) - 1):
                logits = self._forward(step, m, batch).float()
                labels = batch[1].to(self.procs.device)
                loss = nn.functional.cross_entropy(logits, labels)
                (loss * (labels.shape[0] / total)).backward()  # the mean over the whole accumulated batch
            sums += torch.stack(
                [
                    loss.detach() * labels.shape[0],
                    (logits.argmax(-1) == labels).sum().float(),
                    torch.tensor(float(labels.shape[0]), device=sums.device),
                ]
            )
        if self.procs.world > 1:
            dist.all_reduce(sums)
        return {"loss": (sums[0] / sums[2]).item(), "accuracy": (sums[1] / sums[2]).item()}

    # -- logging -----------------------------------------------------------------------------------------------
    def _start_log(self, step: int) -> None:
        """Open log.jsonl for appending; lines past ``step`` (written after the checkpoint we resume) are dropped."""
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / LOG_FILE
        if step == 0:
            path.write_text("", encoding="utf-8")
        elif path.is_file():
            kept = [
                line
                for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step
            ]
            path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        self._log_path = path

    def _log(self, record: dict[str, float]) -> None:
        with open(self._log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if not self.config.quiet and (record["step"] % self.config.log_every == 0 or record["step"] == 1):
            extra = (
                f"pos {record['pos_logit']:.2f} neg {record['neg_logit']:.2f} t {record['logit_scale']:.2f} "
                f"b {record['logit_bias']:.2f}"
                if self.contrastive
                else f"acc {record['accuracy']:.3f}"
            )
            logger.info(
                "step %d/%d loss %.4f %s lr %.3g grad %.3g (%.1f samples/s)",
                record["step"],
                self.plan.total_steps,
                record["loss"],
                extra,
                record["lr"],
                record["grad_norm"],
                record["samples_per_s"],
            )

    # -- checkpoints -------------------------------------------------------------------------------------------
    def _full_model_state(self) -> dict[str, torch.Tensor] | None:
        """FSDP: gather the full weights onto rank 0 (a collective); otherwise None (the model is whole)."""
        if not self.config.fsdp:
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(self.core, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {k.removeprefix("model."): v for k, v in state.items()}

    def _optimizer_state(self) -> dict[str, Any]:
        """AdamW state keyed by parameter name (the same layout under DDP and FSDP; a collective with FSDP)."""
        if self.config.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            return get_optimizer_state_dict(self.core, self.optimizer, options=options)
        state = self.optimizer.state_dict()
        names = [n for group in self.param_names for n in group]
        groups = [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]
        return {"state": {names[i]: s for i, s in state["state"].items()}, "param_groups": groups}

    def _set_optimizer_state(self, saved: dict[str, Any]) -> None:
        if self.config.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(self.core, self.optimizer, saved, options=StateDictOptions(full_state_dict=True))
            return
        names = [n for group in self.param_names for n in group]
        index = {n: i for i, n in enumerate(names)}
        groups = [{**g, "params": [index[n] for n in g["params"]]} for g in saved["param_groups"]]
        self.optimizer.load_state_dict(
            {"state": {index[n]: s for n, s in saved["state"].items()}, "param_groups": groups}
        )

    def _save_weights(self, folder: Path, full_state: dict[str, torch.Tensor] | None) -> None:
        if full_state is None:
            self.model.save_pretrained(folder)
            return
        # FSDP: the local model holds shards; put the gathered tensors into a weightless copy and save that
        with torch.device("meta"):
            shell = type(self.model)(self.model.config)
        shell.load_state_dict(full_state, assign=True)
        shell.save_pretrained(folder)

    def save_checkpoint(self, step: int) -> Path:
        """Write ``OUT/checkpoint-NNNNNNN`` (model, tokenizer, preprocessor, training_state.pt) atomically."""
        full_state = self._full_model_state()
        optimizer_state = self._optimizer_state()
        final = self.out / f"checkpoint-{step:07d}"
        if self.procs.main:
            tmp = self.out / f".{final.name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            self._save_weights(tmp, full_state)
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(tmp)
            self.image_processor.save_pretrained(tmp)
            state = {
                "step": step,
                "epoch": step // self.plan.steps_per_epoch,
                "batch_in_epoch": step % self.plan.steps_per_epoch,
                "optimizer": optimizer_state,
                "scheduler": self.scheduler.state_dict(),
                "run": self.run_info,
            }
            torch.save(state, tmp / STATE_FILE)
            if final.exists():  # the same step saved again after a resume: swap, never leave no checkpoint
                old = self.out / f".{final.name}.old"
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old)
            else:
                os.replace(tmp, final)
            logger.info("saved %s", final)
        self.procs.barrier()
        return final

    def _load_state(self, folder: Path) -> dict[str, Any]:
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
        saved, now = state["run"], self.run_info
        changed = [f"{k} {saved.get(k)!r} -> {now[k]!r}" for k in _RUN_KEYS if saved.get(k) != now[k]]
        if changed:
            raise TrainError(
                f"--resume from {folder} needs the settings and data of that run; changed: " + "; ".join(changed)
            )
        return state


def train(config: TrainConfig) -> Path | None:
    """Run a training job; returns the last checkpoint folder."""
    config.validate()
    procs = setup_processes(config)
    if not procs.main:  # one copy of the messages, from rank 0; errors still come from every rank
        logging.getLogger("siglip").setLevel(logging.ERROR)
    try:
        last = Trainer(config, procs).run()
        procs.barrier()
        return last
    finally:
        if procs.owns_group:
            dist.destroy_process_group()
