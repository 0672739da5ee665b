"""The sigmoid loss: single-process parity with SiglipModel / transformers, and the gloo ring against the global batch.

The distributed tests spawn 1-4 CPU processes per world size (once per module, results cached) that rebuild the
same global batch from a seed, run ``distributed_sigmoid_loss`` on their uneven shards and save values, gradients,
saved-for-backward bytes and the order of ring events; the assertions run here, in the pytest process, against a
float64 plain-autograd computation on the whole batch.
"""

from __future__ import annotations

import itertools
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from siglip.loss import distributed_sigmoid_loss, sigmoid_loss
from siglip.modeling_siglip import sigmoid_loss_from_logits

from conftest import assert_close, build_hf_model

DIM = 16
SCALE, BIAS = 2.1, -3.7  # raw parameters: exp(2.1) ~ 8.2, so both sigmoid tails are exercised
RTOL = 1e-6
SPAWN_DEADLINE_S = 60.0
# world size -> per-rank batch sizes of each global batch (uneven, one with an empty rank); the last entry of
# worlds 2 and 4 has the same local batch on every rank for the saved-bytes comparison
CASES = {
    1: [(6,)],
    2: [(5, 3), (4, 4)],
    3: [(4, 1, 6), (2, 0, 5)],
    4: [(3, 5, 2, 4), (4, 4, 4, 4)],
}
SUBGROUP, SUBGROUP_SIZES = (3, 1), (3, 2)  # world 4 also runs a ring on a subgroup, group rank 0 = global rank 3


def _global_batch(n: int, seed: int = 0, dtype: torch.dtype = torch.float32):
    """Random matched pairs (not symmetric: texts are noisy images) and the raw scale / bias, as leaves."""
    gen = torch.Generator().manual_seed(seed + n)
    x = F.normalize(torch.randn(n, DIM, generator=gen, dtype=torch.float64), dim=-1)
    y = F.normalize(x + 0.9 * torch.randn(n, DIM, generator=gen, dtype=torch.float64), dim=-1)
    scale, bias = torch.tensor([SCALE], dtype=torch.float64), torch.tensor([BIAS], dtype=torch.float64)
    return [t.to(dtype).requires_grad_() for t in (x, y, scale, bias)]


def _reference(x, y, scale, bias, grad_scale: float = 1.0):
    """Plain autograd in float64 through SiglipModel's loss.

    Returns the loss, the per-image-row losses, the grads of x, y, scale and bias, and the magnitude each grad is
    measured against: max |grad| for the embeddings; for the two scalars the sum of the absolute values of the
    n * n terms they add up. Those sums cancel to ~1/20 of their terms here, so an fp32 computation (plain
    autograd included) cannot promise 1e-6 relative to the result: the fp32 cosines alone are off by ~4e-8.
    """
    leaves = [t.detach().double().requires_grad_() for t in (x, y, scale, bias)]
    logits_per_text = leaves[1] @ leaves[0].t() * leaves[2].exp() + leaves[3]  # as SiglipModel forms them
    loss = sigmoid_loss_from_logits(logits_per_text)
    grads = torch.autograd.grad(loss * grad_scale, leaves)
    with torch.no_grad():
        eye = torch.eye(len(x), dtype=torch.float64)
        per_image = -F.logsigmoid((2 * eye - 1) * logits_per_text.t()).sum(dim=1) / len(x)  # (n,)
        terms = (torch.sigmoid(logits_per_text) - eye) * grad_scale / len(x)  # d loss / d logits
        cos = logits_per_text.sub(leaves[3]).div(leaves[2].exp())
        magnitudes = [
            grads[0].abs().max(),
            grads[1].abs().max(),
            (terms * cos).abs().sum() * leaves[2].exp(),
            terms.abs().sum(),
        ]
    return loss.detach(), per_image, grads, magnitudes


def _relative_error(got: torch.Tensor, ref: torch.Tensor, magnitude: torch.Tensor | None = None) -> float:
    """max |got - ref| / magnitude (default max |ref|), after checking shape and dtype."""
    assert got.shape == ref.shape and got.dtype == torch.float32, (got.shape, got.dtype, ref.shape)
    magnitude = ref.abs().max() if magnitude is None else magnitude
    return ((got.double() - ref.double()).abs().max() / magnitude).item()


def _saved_bytes(fn, *args, **kwargs):
    """Run ``fn`` and count the bytes autograd keeps for its backward."""
    counted = []

    def pack(t):
        counted.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*args, **kwargs)
    return out, sum(counted)


# ---------------------------------------------------------------------------------------------- single process


NAMES = ("loss", "image_embeds", "text_embeds", "logit_scale", "logit_bias")


def _check(got: list[torch.Tensor], ref: list[torch.Tensor], magnitudes: list, what: str) -> dict[str, float]:
    """Loss and the four gradients against the reference, RTOL relative to their magnitudes; returns the errors."""
    errors = {
        name: _relative_error(g, r, m) for name, g, r, m in zip(NAMES, got, ref, [None, *magnitudes], strict=True)
    }
    assert max(errors.values()) <= RTOL, f"{what}: relative errors {errors}"
    return errors


@pytest.mark.parametrize("chunk_size", [1, 3, 1024])
def test_sigmoid_loss_matches_siglip_model_loss_values_and_grads(chunk_size):
    leaves = _global_batch(7)
    loss = sigmoid_loss(*leaves, chunk_size=chunk_size)
    assert loss.shape == ()
    (loss * 2.5).backward()  # a non-unit upstream gradient
    ref_loss, _, ref_grads, magnitudes = _reference(*leaves, grad_scale=2.5)
    _check([loss, *(t.grad for t in leaves)], [ref_loss, *ref_grads], magnitudes, "float64 autograd")
    # and against fp32 plain autograd on the same inputs (the "identical to autograd" promise)
    plain_leaves = [t.detach().requires_grad_() for t in leaves]
    plain = sigmoid_loss_from_logits(plain_leaves[1] @ plain_leaves[0].t() * plain_leaves[2].exp() + plain_leaves[3])
    (plain * 2.5).backward()
    errors = _check(
        [loss, *(t.grad for t in leaves)], [plain, *(t.grad for t in plain_leaves)], magnitudes, "fp32 autograd"
    )
    print(f"sigmoid_loss chunk {chunk_size} vs fp32 autograd: {errors}")


def test_sigmoid_loss_saves_only_its_inputs():
    for n in (8, 64):
        x, y, scale, bias = _global_batch(n)
        _, ours = _saved_bytes(sigmoid_loss, x, y, scale, bias)
        _, plain = _saved_bytes(lambda x, y, s, b: sigmoid_loss_from_logits(y @ x.t() * s.exp() + b), x, y, scale, bias)
        assert ours == 2 * n * DIM * 4 + 2 * 4  # x, y, scale, bias: nothing of size n x n
        assert plain > n * n * 4  # plain autograd keeps the logits


def test_sigmoid_loss_equals_transformers_siglip_model_loss():
    model = build_hf_model("SiglipModel", seed=3)
    n = 5
    torch.manual_seed(0)
    pixel_values = torch.randn(n, 3, 30, 30)
    input_ids = torch.randint(0, 103, (n, 16))
    out = model(input_ids=input_ids, pixel_values=pixel_values, return_loss=True)
    ours = sigmoid_loss(out.image_embeds, out.text_embeds, model.logit_scale, model.logit_bias)
    assert_close(ours, out.loss, RTOL, "loss")
    params = [model.logit_scale, model.logit_bias, model.vision_model.head.probe, model.text_model.head.weight]
    for got, ref in zip(
        torch.autograd.grad(ours, params, retain_graph=True), torch.autograd.grad(out.loss, params), strict=True
    ):
        assert_close(got, ref, 1e-5, "parameter grad")


def test_sigmoid_loss_low_precision_inputs_accumulate_in_fp32():
    x, y, scale, bias = _global_batch(9)
    low = [t.detach().bfloat16().requires_grad_() for t in (x, y)]
    loss = sigmoid_loss(*low, scale, bias)
    assert loss.dtype == torch.float32
    loss.backward()
    ref_loss, _, ref_grads, _ = _reference(x, y, scale, bias)
    assert_close(loss, ref_loss, 2e-2, "bf16 loss")
    for leaf, ref in zip(low, ref_grads[:2], strict=True):
        assert leaf.grad.dtype == torch.bfloat16
        assert_close(leaf.grad, ref, 3e-2, "bf16 grad")


def test_sigmoid_loss_rejects_unpaired_inputs():
    x, y, scale, bias = _global_batch(4)
    with pytest.raises(ValueError, match="matched"):
        sigmoid_loss(x, y[:3], scale, bias)
    with pytest.raises(ValueError, match="empty"):
        sigmoid_loss(x[:0], y[:0], scale, bias)
    with pytest.raises(ValueError, match="chunk_size"):
        sigmoid_loss(x, y, scale, bias, chunk_size=0)


def test_distributed_loss_outside_a_process_group_is_sigmoid_loss():
    import torch.distributed as dist

    assert not dist.is_initialized()
    ours, ref = _global_batch(6), _global_batch(6)
    distributed_sigmoid_loss(*ours).backward()
    sigmoid_loss(*ref).backward()
    for got, leaf in zip(ours, ref, strict=True):
        assert torch.equal(got.grad, leaf.grad)
    assert torch.equal(distributed_sigmoid_loss(*ours), sigmoid_loss(*ref))


# ---------------------------------------------------------------------------------------------- gloo ring


def _local(sizes, rank):
    """This rank's fp32 leaves, cut from the global batch."""
    x, y, scale, bias = _global_batch(sum(sizes))
    lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
    return [t.detach()[lo:hi].clone().requires_grad_() for t in (x, y)] + [
        t.detach().clone().requires_grad_() for t in (scale, bias)
    ]


def _run_case(sizes, rank, group=None, chunk_size=1024):
    leaves = _local(sizes, rank)
    loss, saved = _saved_bytes(distributed_sigmoid_loss, *leaves, group=group, chunk_size=chunk_size)
    loss.backward()
    return {"loss": loss.detach(), "grads": [t.grad for t in leaves], "saved_bytes": saved}


def _record_ring_events(sizes, rank):
    """Order of P2P posts, waits and block computes in one forward and one backward (by patching them)."""
    import torch.distributed as dist

    import siglip.loss as loss_module

    events = []

    class Work:
        def __init__(self, work, tag):
            self.work, self.tag = work, tag

        def wait(self):
            events.append(("wait", self.tag))
            return self.work.wait()

    def batch_isend_irecv(ops):
        tags = {op.tag for op in ops}
        assert len(tags) == 1 and all(op.op in (dist.isend, dist.irecv) for op in ops)
        events.append(("post", ops[0].tag))
        return [Work(w, ops[0].tag) for w in real_post(ops)]

    def recorded(fn):
        def wrapper(*args, **kwargs):
            events.append(("compute", None))
            return fn(*args, **kwargs)

        return wrapper

    real_post, real_block_loss, real_block_grads = (
        dist.batch_isend_irecv,
        loss_module._block_loss,
        loss_module._block_grads,
    )
    dist.batch_isend_irecv = batch_isend_irecv
    loss_module._block_loss, loss_module._block_grads = recorded(real_block_loss), recorded(real_block_grads)
    try:
        loss = distributed_sigmoid_loss(*_local(sizes, rank))
        forward = list(events)
        events.clear()
        loss.backward()
    finally:
        dist.batch_isend_irecv = real_post
        loss_module._block_loss, loss_module._block_grads = real_block_loss, real_block_grads
    return forward, list(events)


def _ring_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=timedelta(seconds=30)
    )
    try:
        results = {"cases": [_run_case(sizes, rank) for sizes in CASES[world]]}
        results["chunked"] = _run_case(CASES[world][0], rank, chunk_size=1)
        results["events"] = _record_ring_events(CASES[world][0], rank)
        if world == 4:
            sub = dist.new_group(list(SUBGROUP))
            if rank in SUBGROUP:
                results["subgroup"] = _run_case(SUBGROUP_SIZES, SUBGROUP.index(rank), group=sub)
        dist.barrier()
        torch.save(results, Path(out_dir) / f"{rank}.pt")
    finally:
        dist.destroy_process_group()


_RUNS: dict[int, list[dict]] = {}


def _ring_results(world: int, tmp_path_factory) -> list[dict]:
    """Spawn ``world`` gloo processes once per module; a hang or a crash fails instead of blocking."""
    if world not in _RUNS:
        import torch.multiprocessing as mp

        folder = tmp_path_factory.mktemp(f"ring{world}")
        ctx = mp.start_processes(
            _ring_worker,
            args=(world, str(folder / "init"), str(folder)),
            nprocs=world,
            join=False,
            start_method="spawn",
        )
        deadline = time.monotonic() + SPAWN_DEADLINE_S
        try:
            while not ctx.join(timeout=max(0.1, deadline - time.monotonic())):
                if time.monotonic() > deadline:
                    pytest.fail(f"the {world}-process ring did not finish in {SPAWN_DEADLINE_S} s")
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
        _RUNS[world] = [torch.load(folder / f"{r}.pt") for r in range(world)]
    return _RUNS[world]


def _check_against_global(per_rank: list[dict], sizes) -> dict[str, float]:
    """Values and gradients of the shards against the float64 global computation; returns the errors."""
    ref_loss, ref_rows, ref_grads, magnitudes = _reference(*_global_batch(sum(sizes)))
    starts = [0, *itertools.accumulate(sizes)]
    for r, res in enumerate(per_rank):  # each rank: its images against all texts / N
        assert _relative_error(res["loss"], ref_rows[starts[r] : starts[r + 1]].sum(), ref_loss) <= RTOL, r
    got = [
        torch.stack([res["loss"] for res in per_rank]).sum(),
        torch.cat([res["grads"][0] for res in per_rank]),  # rows of the global gradient, in rank order
        torch.cat([res["grads"][1] for res in per_rank]),
        torch.stack([res["grads"][2] for res in per_rank]).sum(0),  # per-rank shares sum to the global gradient
        torch.stack([res["grads"][3] for res in per_rank]).sum(0),
    ]
    return _check(got, [ref_loss, *ref_grads], magnitudes, f"{len(sizes)} ranks {sizes}")


@pytest.mark.parametrize("world", sorted(CASES))
def test_ring_matches_global_batch(world, tmp_path_factory):
    runs = _ring_results(world, tmp_path_factory)
    for i, sizes in enumerate(CASES[world]):
        errors = _check_against_global([run["cases"][i] for run in runs], sizes)
        print(
            f"world {world} sizes {sizes}: max relative error " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items())
        )
    _check_against_global([run["chunked"] for run in runs], CASES[world][0])
    if world == 4:
        _check_against_global([runs[r]["subgroup"] for r in SUBGROUP], SUBGROUP_SIZES)


def test_ring_saved_bytes_do_not_grow_with_world_size(tmp_path_factory):
    local = 4
    saved = {w: [run["cases"][-1]["saved_bytes"] for run in _ring_results(w, tmp_path_factory)] for w in (2, 4)}
    assert CASES[2][-1] == (local,) * 2 and CASES[4][-1] == (local,) * 4
    print(f"bytes saved for backward per rank at local batch {local}, d={DIM}: {saved}")
    assert saved[2] == saved[4][:2] == saved[4][2:] == [2 * local * DIM * 4 + 2 * 4] * 2  # x, y, scale, bias


@pytest.mark.parametrize("world", sorted(CASES))
def test_ring_posts_the_next_transfer_before_each_block_compute(world, tmp_path_factory):
    text, grad = ("post", 0), ("post", 1)
    compute, wait_text, wait_grad = ("compute", None), ("wait", 0), ("wait", 1)
    # forward: the next text block is in flight during every compute but the last
    forward = [text, compute, wait_text] * (world - 1) + [compute]
    # backward: the same for the texts; the gradient accumulator of block t travels during compute t+1
    backward = [] if world == 1 else [text, compute, grad, wait_text]
    backward += [text, compute, wait_grad, grad, wait_text] * (world - 2)
    backward += [compute] if world == 1 else [compute, wait_grad, grad, wait_grad]
    for rank, run in enumerate(_ring_results(world, tmp_path_factory)):
        got_forward, got_backward = ([e for e, _ in itertools.groupby(seq)] for seq in run["events"])
        assert got_forward == forward, f"rank {rank} forward"
        assert got_backward == backward, f"rank {rank} backward"
