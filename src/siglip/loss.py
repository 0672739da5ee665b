"""SigLIP's pairwise sigmoid loss, on one process and across the ranks of a ``torch.distributed`` group.

For L2-normalised image embeddings ``x`` (N, D) and text embeddings ``y`` (N, D) whose matched pairs share a row,
the logits are ``L = exp(logit_scale) * x @ y.T + logit_bias`` and the loss is

    sum_ij softplus(-z_ij * L_ij) / N,   z = +1 on the diagonal and -1 elsewhere,

the value ``SiglipModel(return_loss=True)`` returns (big_vision's "sum over texts, mean over images"). Its gradient
with respect to the logits is ``G = (sigmoid(L) - I) / N``, so the backward only needs the embeddings and the two
scalars: ``dx = s G y``, ``dy = s G.T x``, ``d logit_scale = s sum(G * x @ y.T)``, ``d logit_bias = sum(G)``.

Memory. Both functions are custom autograd functions that save only their inputs and recompute the logits in the
backward, ``chunk_size`` image rows at a time. Nothing of size N x N (or local x global) is kept between forward and
backward, and the temporaries live only for one chunk.

Ring (``distributed_sigmoid_loss``). Rank r holds b_r images and their b_r texts. In the forward the text blocks go
around a ring: at step t (t = 0 .. W-1) rank r holds the texts of rank (r - t) mod W; it first posts the P2P exchange
that sends this block to rank r+1 and receives the next one from rank r-1, then computes its images against the
current block (so the transfer overlaps the compute), then waits. After W steps it has seen every text and returns
(its images against all texts) / N_global. The backward runs the ring again with the saved local texts: at each
step it posts the next text block, computes the current block's gradients, adds the text gradient accumulated by
the ranks before it (received during the previous block's compute), and posts the sum to rank r+1 together with
the receive of the next accumulator. After the last step each accumulator makes one more hop and arrives at the
rank that owns those texts, holding the contributions of every rank. What stays alive for backward is x, y,
logit_scale and logit_bias of the local shard plus the list of batch sizes: independent of the world size. Each rank
sends ~N d text elements in the forward, again in the backward, plus ~N d gradient elements (fp32 at least).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["sigmoid_loss", "distributed_sigmoid_loss"]

DEFAULT_CHUNK_SIZE = 1024  # image rows per recomputed logit chunk: 1024 x 65k fp32 logits are 268 MB
_TEXT_TAG, _GRAD_TAG = 0, 1  # P2P tags of the two message streams of the backward ring


def _accumulation_dtype(x: torch.Tensor) -> torch.dtype:
    # logits, the loss and gradient sums are kept in at least fp32, also for bf16 / fp16 embeddings
    return torch.promote_types(x.dtype, torch.float32)


def _block_loss(
    x: torch.Tensor, y: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, offset: int, chunk: int
) -> torch.Tensor:
    """Sum of the pairwise loss of images ``x`` (bx, D) against texts ``y`` (by, D).

    The positive pairs are ``(i, i + offset)``: ``offset`` = global index of x[0] - global index of y[0].
    """
    acc = _accumulation_dtype(x)
    total = torch.zeros((), dtype=acc, device=x.device)
    for i0 in range(0, x.shape[0], chunk):
        logits = torch.mm(x[i0 : i0 + chunk], y.t()).to(acc) * scale + bias  # (chunk, by)
        signed = logits.neg_()  # z * L with z = -1 ...
        signed.diagonal(offset + i0).neg_()  # ... and +1 on the positives
        total -= F.logsigmoid(signed).sum()
    return total


def _block_grads(
    x: torch.Tensor,
    y: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor,
    offset: int,
    chunk: int,
    weight: torch.Tensor,
    grad_x: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of ``weight * _block_loss(x, y, ...)``, recomputing the logits chunk by chunk.

    Adds ``G @ y`` into ``grad_x`` (bx, D) and returns ``(G.T @ x, sum(G * x @ y.T), sum(G))``, with ``G`` the
    gradient with respect to the logits (not yet multiplied by the scale ``s``).
    """
    acc = _accumulation_dtype(x)
    grad_y = torch.zeros(y.shape, dtype=acc, device=y.device)  # (by, D)
    grad_cos = torch.zeros((), dtype=acc, device=x.device)
    grad_bias = torch.zeros((), dtype=acc, device=x.device)
    for i0 in range(0, x.shape[0], chunk):
        xc = x[i0 : i0 + chunk]  # (chunk, D)
        cos = torch.mm(xc, y.t()).to(acc)  # (chunk, by)
        logits = cos * scale + bias
        g = torch.sigmoid(logits)  # d softplus(L) / dL on the negatives
        g.diagonal(offset + i0).copy_(torch.sigmoid(logits.diagonal(offset + i0).neg()).neg_())  # -sigmoid(-L)
        del logits
        g.mul_(weight)
        grad_cos += torch.dot(g.flatten(), cos.flatten())
        grad_bias += g.sum()
        g = g.to(x.dtype)
        grad_x[i0 : i0 + chunk] += torch.mm(g, y)
        grad_y += torch.mm(g.t(), xc)
    return grad_y, grad_cos, grad_bias


@dataclass(frozen=True)
class _Ring:
    """Who is where: this rank, the batch size of every rank and the global ranks of the two neighbours."""

    group: Any
    rank: int
    sizes: tuple[int, ...]
    next_peer: int = 0
    prev_peer: int = 0

    @property
    def world(self) -> int:
        return len(self.sizes)

    def start(self, rank: int) -> int:
        """Global index of the first pair held by ``rank``."""
        return sum(self.sizes[:rank])

    def source(self, step: int) -> int:
        """The rank whose texts this rank holds at ring step ``step``."""
        return (self.rank - step) % self.world

    def shift(self, send: torch.Tensor, recv: torch.Tensor, tag: int) -> list:
        """Post ``send`` -> next rank and ``recv`` <- previous rank; returns the works to wait on.

        Every rank knows every block size, so empty blocks are skipped on both ends. A ring of one rank copies.
        """
        if self.world == 1:
            recv.copy_(send)
            return []
        import torch.distributed as dist

        ops = []
        if send.numel():
            ops.append(dist.P2POp(dist.isend, send, self.next_peer, self.group, tag))
        if recv.numel():
            ops.append(dist.P2POp(dist.irecv, recv, self.prev_peer, self.group, tag))
        return dist.batch_isend_irecv(ops) if ops else []


def _wait(works: list) -> None:
    for work in works:
        work.wait()


class _RingSigmoidLoss(torch.autograd.Function):
    """The sigmoid loss of the local images against the texts of every rank of ``ring``; see the module docstring."""

    @staticmethod
    def forward(ctx, image_embeds, text_embeds, logit_scale, logit_bias, ring: _Ring, chunk_size: int):
        x, y = image_embeds.contiguous(), text_embeds.contiguous()  # (b_r, D) each
        acc = _accumulation_dtype(x)
        scale, bias = logit_scale.to(acc).exp(), logit_bias.to(acc)
        row0 = ring.start(ring.rank)
        total = torch.zeros((), dtype=acc, device=x.device)
        texts = y  # (b_src, D): the block of rank ring.source(t)
        for t in range(ring.world):
            last = t == ring.world - 1
            if not last:  # the next block is in flight while this one is computed
                incoming = y.new_empty((ring.sizes[ring.source(t + 1)], y.shape[1]))
                works = ring.shift(texts, incoming, _TEXT_TAG)
            total += _block_loss(x, texts, scale, bias, row0 - ring.start(ring.source(t)), chunk_size)
            if not last:
                _wait(works)
                texts = incoming
        ctx.save_for_backward(image_embeds, text_embeds, logit_scale, logit_bias)
        ctx.ring, ctx.chunk_size = ring, chunk_size
        return total / sum(ring.sizes)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        image_embeds, text_embeds, logit_scale, logit_bias = ctx.saved_tensors
        x, y = image_embeds.contiguous(), text_embeds.contiguous()  # (b_r, D) each
        ring: _Ring = ctx.ring
        acc = _accumulation_dtype(x)
        scale, bias = logit_scale.to(acc).exp(), logit_bias.to(acc)
        weight = grad_loss.to(acc) / sum(ring.sizes)
        row0 = ring.start(ring.rank)
        grad_x = torch.zeros(x.shape, dtype=acc, device=x.device)  # (b_r, D)
        grad_cos = torch.zeros((), dtype=acc, device=x.device)
        grad_bias = torch.zeros((), dtype=acc, device=x.device)
        texts, grad_works, grad_in = y, [], None
        for t in range(ring.world):
            src, last = ring.source(t), t == ring.world - 1
            if not last:
                incoming = y.new_empty((ring.sizes[ring.source(t + 1)], y.shape[1]))
                text_works = ring.shift(texts, incoming, _TEXT_TAG)
            grad_texts, g_cos, g_bias = _block_grads(
                x, texts, scale, bias, row0 - ring.start(src), ctx.chunk_size, weight, grad_x
            )  # (b_src, D): this rank's share of the gradient of the texts of rank src
            grad_cos += g_cos
            grad_bias += g_bias
            grad_texts.mul_(scale)
            _wait(grad_works)  # the shares of ranks src .. r-1, in flight during this block's compute
            if grad_in is not None:
                grad_texts += grad_in
            # send the running sum on to rank r+1; receive the one for the next block (or, at the last step, the
            # finished gradient of our own texts)
            grad_in = grad_texts.new_empty((ring.sizes[ring.source(t + 1)], y.shape[1]))
            grad_works = ring.shift(grad_texts, grad_in, _GRAD_TAG)
            if not last:
                _wait(text_works)
                texts = incoming
        _wait(grad_works)
        grad_x = (grad_x * scale).to(x.dtype)
        grad_scale = (grad_cos * scale).reshape(logit_scale.shape).to(logit_scale.dtype)
        grad_bias = grad_bias.reshape(logit_bias.shape).to(logit_bias.dtype)
        return grad_x, grad_in.to(y.dtype), grad_scale, grad_bias, None, None


def _check_args(image_embeds: torch.Tensor, text_embeds: torch.Tensor, chunk_size: int) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size}")
    if image_embeds.ndim != 2 or image_embeds.shape != text_embeds.shape:
        raise ValueError(
            f"image and text embeddings must be matched (n, d) pairs, got {tuple(image_embeds.shape)} and "
            f"{tuple(text_embeds.shape)}"
        )


def sigmoid_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """SigLIP's sigmoid loss of a batch of matched pairs, without keeping the (n, n) logits for backward.

    Args:
        image_embeds: L2-normalised image embeddings (n, d); row i is paired with text row i.
        text_embeds: L2-normalised text embeddings (n, d).
        logit_scale: the raw (log) temperature, exponentiated here, e.g. ``SiglipModel.logit_scale`` of shape (1,).
        logit_bias: the raw bias, e.g. ``SiglipModel.logit_bias``.
        chunk_size: image rows per logit chunk in forward and backward; bounds the temporaries to chunk x n.

    Returns:
        A 0-dim tensor (fp32 at least), equal to transformers' ``SiglipModel(return_loss=True).loss`` and
        big_vision's ``sigmoid_loss``; its gradients equal plain autograd's.
    """
    _check_args(image_embeds, text_embeds, chunk_size)
    if image_embeds.shape[0] == 0:
        raise ValueError("the sigmoid loss of an empty batch is undefined")
    ring = _Ring(group=None, rank=0, sizes=(image_embeds.shape[0],))
    return _RingSigmoidLoss.apply(image_embeds, text_embeds, logit_scale, logit_bias, ring, chunk_size)


def distributed_sigmoid_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    group: Any = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """This rank's share of the sigmoid loss of the global batch spread over the ranks of ``group``.

    The global batch is the concatenation of every rank's pairs in rank order; only its diagonal pairs are
    positives, and local batch sizes may differ between ranks (a rank may even hold none). The per-rank values sum
    to ``sigmoid_loss`` of the global batch: each is (local images against all texts) / global batch size. Text
    blocks travel a P2P ring with the next transfer overlapping the current block's compute, in forward and
    backward, and only the local shard is saved for backward (see the module docstring).

    Gradients, once every rank has called ``backward()`` on its own value: the local image and text embeddings get
    exactly their rows of the global-batch gradient (text gradients computed elsewhere are sent back to their
    owner); ``logit_scale`` and ``logit_bias`` get this rank's share, and the shares sum to the global gradient.
    DDP's averaging over ranks then yields (global-batch gradient) / world size for every parameter, towers and
    scalars alike, i.e. plain data parallelism on the global loss divided by the world size.

    Collective: every rank of ``group`` must call this function, and later ``backward()`` on its result, in the
    same order as the other ranks (both run a ring), with the same ``logit_scale`` / ``logit_bias`` values and
    ``chunk_size``. Tensors live where the backend wants them: CPU for gloo, the rank's CUDA device for NCCL.

    Args:
        image_embeds: this rank's L2-normalised image embeddings (b_r, d).
        text_embeds: this rank's L2-normalised text embeddings (b_r, d), paired row by row with the images.
        logit_scale: the raw (log) temperature, exponentiated here.
        logit_bias: the raw bias.
        group: the process group; ``None`` is the default group. Outside an initialised process group, or with a
            single rank, this is ``sigmoid_loss``.
        chunk_size: image rows per recomputed logit chunk.

    Returns:
        A 0-dim tensor (fp32 at least).
    """
    import torch.distributed as dist

    _check_args(image_embeds, text_embeds, chunk_size)
    if group is None and not (dist.is_available() and dist.is_initialized()):
        return sigmoid_loss(image_embeds, text_embeds, logit_scale, logit_bias, chunk_size)
    world = dist.get_world_size(group)
    if world == 1:
        return sigmoid_loss(image_embeds, text_embeds, logit_scale, logit_bias, chunk_size)
    rank = dist.get_rank(group)
    local = torch.tensor([image_embeds.shape[0]], dtype=torch.int64, device=image_embeds.device)
    gathered = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(gathered, local, group=group)
    sizes = tuple(int(n) for n in torch.cat(gathered).tolist())  # one host sync per call
    if sum(sizes) == 0:
        raise ValueError("the sigmoid loss of an empty global batch is undefined")
    resolved = dist.group.WORLD if group is None else group
    ring = _Ring(
        group=group,
        rank=rank,
        sizes=sizes,
        next_peer=dist.get_global_rank(resolved, (rank + 1) % world),
        prev_peer=dist.get_global_rank(resolved, (rank - 1) % world),
    )
    return _RingSigmoidLoss.apply(image_embeds, text_embeds, logit_scale, logit_bias, ring, chunk_size)
