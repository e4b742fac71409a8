"""The PyTorch side of bench/peer_bench.py, run with .venv-torch/bin/python; serves bench/peer_protocol.py.

Follows pytorch/examples word_language_model: Embedding -> nn.LSTM(num_layers) -> Linear; the
training step is forward, NLL loss, backward, clip_grad_norm_, a plain SGD update, and the
hidden state detached between batches; evaluation is the same forward under torch.no_grad.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from peer_protocol import serve
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


class TorchWorker:
    """Bursts of training steps and of evaluation steps on one stream, each carrying its own hidden state."""

    def __init__(self, ids_path: str, units: int, layers: int, batch: int, bptt: int):
        torch.manual_seed(0)
        ids = np.load(ids_path)
        self.vocab = int(ids.max()) + 1
        self.model = RNNModel(self.vocab, units, layers)
        self.criterion = nn.NLLLoss()
        self.data = batches(ids, batch, bptt)
        zeros = (torch.zeros(layers, batch, units), torch.zeros(layers, batch, units))
        self.train_hidden, self.eval_hidden = zeros, zeros

    def train(self, steps: int) -> dict:
        self.model.train()
        hidden = self.train_hidden
        started = time.perf_counter()
        for _ in range(steps):
            inputs, targets = next(self.data)
            hidden = tuple(h.detach() for h in hidden)
            self.model.zero_grad()
            output, hidden = self.model(inputs, hidden)
            loss = self.criterion(output.view(-1, self.vocab), targets.reshape(-1))
            loss.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), 0.25)
            with torch.no_grad():
                for param in self.model.parameters():
                    param.add_(param.grad, alpha=-1.0)
        seconds = time.perf_counter() - started
        self.train_hidden = hidden
        return {"seconds": seconds}

    def evaluate(self, steps: int) -> dict:
        self.model.eval()
        hidden, loss_sum, tokens = self.eval_hidden, 0.0, 0
        started = time.perf_counter()
        with torch.no_grad():
            for _ in range(steps):
                inputs, targets = next(self.data)
                output, hidden = self.model(inputs, hidden)
                loss_sum += targets.numel() * self.criterion(output.view(-1, self.vocab), targets.reshape(-1)).item()
                tokens += targets.numel()
        seconds = time.perf_counter() - started
        self.eval_hidden = hidden
        return {"seconds": seconds, "loss_sum": loss_sum, "tokens": tokens}

    def matmul(self, n: int = 2048, reps: int = 10) -> dict:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        started = time.perf_counter()
        for _ in range(reps):
            a @ b
        return {"gflops": 2 * n**3 * reps / (time.perf_counter() - started) / 1e9}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ids", required=True)
    p.add_argument("--units", type=int, default=200)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--bptt", type=int, default=35)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    serve(TorchWorker(args.ids, args.units, args.layers, args.batch, args.bptt))


if __name__ == "__main__":
    main()
