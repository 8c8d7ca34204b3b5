"""Tensor-parallel layers equal the gathered full layer: outputs, input gradients, weight gradients."""

import torch
import torch.nn.functional as F

from tests.helpers.dist import run_distributed


def _check_layers(sequence_parallel: bool):
    import torch.distributed as dist

    from framework.parallel import tensor, topology

    topo = topology.initialize(topology.Layout(1, 2, 1), sequence_parallel=sequence_parallel)
    r, d, f, v, b, s = topo.tp_rank, 8, 16, 12, 2, 6
    torch.manual_seed(0)
    emb_w, w1, w2, head_w = (torch.randn(*shape) * 0.5 for shape in ((v, d), (f, d), (d, f), (v, d)))
    idx = torch.randint(0, v, (b, s))
    targets = torch.randint(0, v, (b, s))

    # Reference: one process, full weights.
    ref = [t.clone().requires_grad_() for t in (emb_w, w1, w2, head_w)]
    h = F.embedding(idx, ref[0])
    y = h + F.linear(F.gelu(F.linear(h, ref[1])), ref[2])
    ref_loss = F.cross_entropy(F.linear(y, ref[3]).flatten(0, 1), targets.flatten())
    ref_loss.backward()

    emb = tensor.VocabEmbedding(v, d, topo)
    col = tensor.ColumnLinear(d, f, topo)
    row = tensor.RowLinear(f, d, topo)
    head = tensor.VocabHead(d, v, topo)
    with torch.no_grad():
        emb.weight.copy_(emb_w.chunk(2, 0)[r])
        col.weight.copy_(w1.chunk(2, 0)[r])
        row.weight.copy_(w2.chunk(2, 1)[r])
        head.weight.copy_(head_w.chunk(2, 0)[r])
    h = emb(idx)
    y = h + row(F.gelu(col(h)))
    loss = tensor.cross_entropy(head(y).contiguous(), targets)
    loss.backward()

    # Shard-wise initialisation equals slicing the full layer's layout-free values (both split dims).
    from framework.model import init
    from framework.parallel.parallelize import tp_box

    rule = init.Rule("normal", 0.02)
    init_equal = all(
        torch.equal(
            init.values(rule, "w", shape, 5, tp_box(layer.weight, topo)[1]),
            init.values(rule, "w", shape, 5)[tuple(slice(a, a + n) for a, n in tp_box(layer.weight, topo)[1])],
        )
        and tp_box(layer.weight, topo)[0] == shape
        for layer, shape in ((col, (f, d)), (row, (d, f)), (emb, (v, d)))
    )
    grads = [emb.weight.grad, col.weight.grad, row.weight.grad, head.weight.grad]
    want = [
        ref[0].grad.chunk(2, 0)[r],
        ref[1].grad.chunk(2, 0)[r],
        ref[2].grad.chunk(2, 1)[r],
        ref[3].grad.chunk(2, 0)[r],
    ]
    topology.destroy()
    dist.barrier()
    return (
        abs(loss.item() - ref_loss.item()),
        max((g - w).abs().max().item() for g, w in zip(grads, want)),
        init_equal,
    )


def _check_both():
    return [_check_layers(False), _check_layers(True)]


def test_tensor_parallel_layers_equal_full_layers_with_and_without_sequence_parallel():
    for per_rank in run_distributed(_check_both, 2, timeout=180):
        for loss_err, grad_err, init_equal in per_rank:
            assert loss_err < 1e-6 and grad_err < 1e-6 and init_equal
