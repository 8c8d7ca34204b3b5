"""lm-evaluation-harness model adapter over Anvil's own model: `AnvilLM`.

The harness asks a model for three things: the log-likelihood of a continuation given a context
(multiple choice, cloze), the rolling log-likelihood of a whole text (perplexity tasks) and greedy
generation. `AnvilLM` answers them from one callable, `forward(tokens) -> logits`, so the same
adapter serves a checkpoint loaded in one process (`anvil eval`) and the live model inside the
training loop (every data-parallel rank scoring its shard of the requests).

Tokenisation follows the harness's reference `hf` model exactly (context/continuation split at the
joint encoding, trailing context spaces moved to the continuation, the end-of-text token as the
prefix of an empty context, rolling windows of `max_length` tokens), so scores on an Anvil
checkpoint equal those of its transformers export run through `lm_eval --model hf`.

Requests are sorted by length and batched (right padding, causal attention: padding never changes
a real position's logits). `lockstep=True` makes every rank of `group` run the same number of
forward passes (dummy batches where a rank has run out), which ZeRO-3 needs because each forward
gathers parameters collectively.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM

Forward = Callable[[torch.Tensor], torch.Tensor]  # (B, T) token ids -> (B, T, V) logits


class AnvilLM(TemplateLM):
    def __init__(
        self,
        forward: Forward,
        tokenizer,  # a `tokenizers.Tokenizer`
        eos_id: int,
        max_length: int,
        batch_size: int = 16,
        max_gen_toks: int = 64,
        rank: int = 0,
        world_size: int = 1,
        group=None,
        lockstep: bool = False,
        device: torch.device | str = "cpu",
    ):
        super().__init__()
        self._forward, self.tok, self.eos_id = forward, tokenizer, eos_id
        self._max_length, self.batch_size, self.max_gen_toks = max_length, batch_size, max_gen_toks
        self._rank, self._world_size, self.group = rank, world_size, group
        self.lockstep = lockstep and world_size > 1
        self._device = torch.device(device)
        self.forward_passes = 0

    # ---- what the harness reads ------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.eos_id

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def tokenizer_name(self) -> str:
        return "anvil"

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tok.encode(string, add_special_tokens=False).ids

    def tok_decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False)

    # ---- collectives (the harness pads request counts and gathers metrics through these) ----
    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        if self._world_size == 1:
            return tensor
        import torch.distributed as dist

        parts = [torch.zeros_like(tensor) for _ in range(self._world_size)]
        dist.all_gather(parts, tensor.contiguous(), group=self.group)
        return torch.stack(parts) if tensor.dim() == 0 else torch.cat(parts)

    def gather_object(self, obj, dst: int = 0):
        if self._world_size == 1:
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self._world_size
        dist.all_gather_object(out, obj, group=self.group)  # every rank gets it: no dst bookkeeping
        return _in_document_order(out) if self._rank == dst else None

    def barrier(self) -> None:
        if self._world_size > 1:
            import torch.distributed as dist

            dist.barrier(group=self.group)

    # ---- scoring ------------------------------------------------------------------------------
    @torch.no_grad()
    def _logits(self, rows: list[list[int]]) -> torch.Tensor:
        """The model's logits on right-padded rows: (B, T, V) float32 on the CPU."""
        T = max(len(r) for r in rows)
        x = torch.full((len(rows), T), self.eos_id, dtype=torch.long)
        for i, r in enumerate(rows):
            x[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        self.forward_passes += 1
        return self._forward(x.to(self._device)).float().cpu()

    def _sync_batches(self, n_batches: int) -> int:
        """Under lockstep: the most batches any rank has (this rank pads with dummy forwards)."""
        if not self.lockstep:
            return n_batches
        return int(self.all_gather(torch.tensor(n_batches)).max())

    def _dummy_forward(self) -> None:
        self._logits([[self.eos_id]])

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """requests: ((context, continuation), context_enc, continuation_enc) -> (logprob, is_greedy)."""
        rows = []
        for _, ctx, cont in requests:
            whole = (ctx + cont)[-(self.max_length + 1) :]
            rows.append((whole[:-1], len(cont), cont))
        order = sorted(range(len(rows)), key=lambda i: (-len(rows[i][0]), i))
        out: list[tuple[float, bool] | None] = [None] * len(rows)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for batch in batches:
            logits = self._logits([rows[i][0] for i in batch])
            for b, i in enumerate(batch):
                inp, n_cont, cont = rows[i]
                lp = F.log_softmax(logits[b, len(inp) - n_cont : len(inp)], dim=-1)  # the continuation only
                target = torch.tensor(cont, dtype=torch.long)
                greedy = bool((lp.argmax(dim=-1) == target).all())
                out[i] = (float(lp.gather(1, target[:, None]).sum()), greedy)
        for _ in range(self._sync_batches(len(batches)) - len(batches)):
            self._dummy_forward()
        return out  # type: ignore[return-value]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, owner = [], []
        for idx, (text,) in enumerate(req.args for req in requests):
            for ctx, cont in map(
                lm_utils.make_disjoint_window,
                lm_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(text),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                ),
            ):
                windows.append((None, ctx, cont))
                owner.append(idx)
        scores = self._loglikelihood_tokens(windows)
        totals = [0.0] * len(requests)
        for idx, (lp, _) in zip(owner, scores):
            totals[idx] += lp
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy decoding, one request at a time, until a stop string or max_gen_toks tokens."""
        results = []
        for context, kwargs in (req.args for req in requests):
            kwargs = dict(kwargs or {})
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            until.append(self.tok_decode([self.eos_id]))
            max_new = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
            if kwargs.get("do_sample") or kwargs.get("temperature", 0.0) not in (0, 0.0, None):
                raise ValueError("AnvilLM.generate_until: only greedy decoding (do_sample false, temperature 0)")
            ids = self.tok_encode(context) or [self.prefix_token_id]
            results.append(self._greedy(ids, until, max_new))
        # lockstep ranks ran different numbers of decoding steps: even them out
        for _ in range(self._sync_batches(self.forward_passes) - self.forward_passes):
            self._dummy_forward()
        return results

    def _greedy(self, ids: list[int], until: list[str], max_new: int) -> str:
        new: list[int] = []
        text = ""
        for _ in range(max_new):
            window = (ids + new)[-self.max_length :]
            nxt = int(self._logits([window])[0, -1].argmax())
            if nxt == self.eos_id:
                break
            new.append(nxt)
            text = self.tok_decode(new)
            if any(s and s in text for s in until):
                break
        for s in until:
            if s:
                text = text.split(s)[0]
        return text


def _in_document_order(per_rank: list) -> list:
    """The harness gives rank r documents r, r + W, r + 2W, ... and concatenates the ranks' per-
    document lists ({task: {key: [value per document]}}). Interleaving them back into document
    order (all in the first entry) makes order-sensitive statistics (bootstrap standard errors,
    float sums) identical to one process's."""
    first = per_rank[0]
    if not isinstance(first, dict) or not all(
        isinstance(r, dict) and r.keys() == first.keys() and all(isinstance(v, dict) for v in r.values())
        for r in per_rank
    ):
        return per_rank
    merged: dict = {}
    for task in first:
        merged[task] = {}
        for key in first[task]:
            lists = [r[task].get(key, []) for r in per_rank]
            if not all(isinstance(x, list) for x in lists):
                return per_rank
            order = []
            for i in range(max(len(x) for x in lists)):
                order.extend(x[i] for x in lists if i < len(x))
            merged[task][key] = order
    empty = {task: {key: [] for key in first[task]} for task in first}
    return [merged] + [empty for _ in per_rank[1:]]


def from_scorer(scorer, batch_size: int = 16, rank: int = 0, world_size: int = 1) -> AnvilLM:
    """An `AnvilLM` over a loaded checkpoint or transformers folder (`perplexity.load_scorer`)."""
    if scorer.tokenizer is None or scorer.eos_id is None:
        raise ValueError(f"{scorer.source}: harness tasks need the run's tokenizer.json with an end-of-text token")
    return AnvilLM(
        scorer.logits, scorer.tokenizer, scorer.eos_id, scorer.seq_len, batch_size, rank=rank, world_size=world_size
    )
