"""The PyTorch side of bench/peer_bench.py, run with .venv-torch/bin/python; prints one JSON line.

Follows pytorch/examples word_language_model: Embedding -> nn.LSTM(num_layers) -> Linear; the
training step is forward, NLL loss, backward, clip_grad_norm_, a plain SGD update, and the
hidden state detached between batches; evaluation is the same forward under torch.no_grad.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch import nn


class RNNModel(nn.Module):
    def __init__(self, vocab: int, units: int, layers: int):
        super().__init__()
        self.encoder = nn.Embedding(vocab, units)
        self.rnn = nn.LSTM(units, units, layers)
        self.decoder = nn.Linear(units, vocab)

    def forward(self, ids, hidden):
        output, hidden = self.rnn(self.encoder(ids), hidden)  # [time, batch, units]
        return torch.log_softmax(self.decoder(output), dim=-1), hidden


def batches(ids: np.ndarray, batch: int, bptt: int):
    """[time, batch] input and target windows of the example's batchify, cycling over the stream."""
    streams = torch.from_numpy(ids[: len(ids) // batch * batch].astype(np.int64)).view(batch, -1).t().contiguous()
    while True:
        for start in range(0, streams.size(0) - 1 - bptt, bptt):
            yield streams[start : start + bptt], streams[start + 1 : start + 1 + bptt]


def matmul_gflops(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    started = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - started) / 1e9


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ids", required=True)
    p.add_argument("--units", type=int, default=200)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--bptt", type=int, default=35)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ids = np.load(args.ids)
    vocab = int(ids.max()) + 1
    model = RNNModel(vocab, args.units, args.layers)
    criterion = nn.NLLLoss()
    data = batches(ids, args.batch, args.bptt)

    def zero_hidden():
        shape = (args.layers, args.batch, args.units)
        return torch.zeros(shape), torch.zeros(shape)

    def train_steps(n: int, hidden):
        model.train()
        for _ in range(n):
            inputs, targets = next(data)
            hidden = tuple(h.detach() for h in hidden)
            model.zero_grad()
            output, hidden = model(inputs, hidden)
            loss = criterion(output.view(-1, vocab), targets.reshape(-1))
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            with torch.no_grad():
                for param in model.parameters():
                    param.add_(param.grad, alpha=-1.0)
        return hidden

    def eval_steps(n: int, hidden):
        model.eval()
        with torch.no_grad():
            for _ in range(n):
                inputs, targets = next(data)
                output, hidden = model(inputs, hidden)
                criterion(output.view(-1, vocab), targets.reshape(-1)).item()
        return hidden

    tokens = args.steps * args.batch * args.bptt
    hidden = train_steps(args.warmup, zero_hidden())
    started = time.perf_counter()
    train_steps(args.steps, hidden)
    train_s = time.perf_counter() - started
    hidden = eval_steps(args.warmup, zero_hidden())
    started = time.perf_counter()
    eval_steps(args.steps, hidden)
    eval_s = time.perf_counter() - started
    result = {"train_tokens_per_s": tokens / train_s, "eval_tokens_per_s": tokens / eval_s}
    result["matmul_gflops"] = matmul_gflops()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
