"""One batch's activations, as the streaming top-k asks about them: window hashes and window weights.

ExpertState (precompute.indexing.topk) keeps only a few of a batch's activations per expert; for
those it asks their window's hash (deduplication) and the expert's weights around them (highlights).
`BatchCandidates` answers from the batch's routing tensors, computing each window at most once.
"""

import torch

from precompute.indexing.topk import quantise_window, window_hash


class BatchCandidates:
    """One group's activations in a batch, answering what ExpertState asks of the few it keeps."""

    def __init__(self, g1, g2, row, position, expert, lengths, position_hash, context: int):
        self.g1, self.g2, self.row, self.position, self.expert = g1, g2, row, position, expert
        self.lengths, self.position_hash = lengths, position_hash
        self.offsets = torch.arange(-context, context + 1, device=g1.device)
        self._windows = None  # (done mask, quantised windows, maxima) per activation, once asked for

    def window_hash(self, index: torch.Tensor) -> torch.Tensor:
        return self.position_hash[self.row[index], self.position[index]]

    def window_weights(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantised window weights of some activations; each computed once per batch (while the banks
        are filling, the top-K and the sample both take most activations)."""
        if self._windows is None:
            n, device = self.row.numel(), self.row.device
            self._windows = (
                torch.zeros(n, dtype=torch.bool, device=device),
                torch.zeros((n, self.offsets.numel()), dtype=torch.uint8, device=device),
                torch.zeros(n, device=device),
            )
        done, windows, maxima = self._windows
        todo = index[~done[index]]
        increasing = bool((todo[1:] > todo[:-1]).all())
        if not increasing:  # repeats or out of order: each window once (a sorted index skips the sort)
            todo = todo.unique()
        if todo.numel() == 0:
            return windows[index], maxima[index]
        computed = self._compute_window_weights(todo)
        windows[todo], maxima[todo] = computed
        done[todo] = True
        if increasing and todo.numel() == index.numel():  # all of index was new: todo is index itself
            return computed
        return windows[index], maxima[index]

    def _compute_window_weights(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, H, E = self.g1.shape
        if self.g1.device.type == "cpu":  # a compiled loop: each window reads only its own weights
            from precompute.indexing import topk_cpu

            expert = self.expert[index]
            context = self.offsets.numel() // 2
            return topk_cpu.window_weights(
                self.g1, self.g2, self.row[index], self.position[index], expert // E, expert % E, self.lengths, context
            )
        row = self.row[index, None]
        position = self.position[index, None] + self.offsets  # [n, W]
        inside = (position >= 0) & (position < self.lengths[row])
        token = row * T + position.clamp(0, T - 1)
        i, j = (self.expert[index] // E)[:, None], (self.expert[index] % E)[:, None]
        if token.numel() * 8 > B * T * E:  # many windows (a cold start): gather whole head rows
            rows = [g.transpose(-1, -2).reshape(-1, H) for g in (self.g1, self.g2)]  # [B*T*E, H]
            g1 = rows[0].index_select(0, (token * E + i).flatten()).view(*token.shape, H)
            g2 = rows[1].index_select(0, (token * E + j).flatten()).view(*token.shape, H)
        else:  # a few windows: gather single weights, never copying g1 / g2
            heads = torch.arange(H, device=token.device) * E
            g1 = self.g1.reshape(-1).index_select(0, ((token * H * E + i)[..., None] + heads).flatten())
            g2 = self.g2.reshape(-1).index_select(0, ((token * H * E + j)[..., None] + heads).flatten())
            g1, g2 = g1.view(*token.shape, H), g2.view(*token.shape, H)  # [n, W, H]
        weights = (g1 * g2).sum(-1) * inside
        return quantise_window(weights)


def window_hashes(context_ids: torch.Tensor, context: int) -> torch.Tensor:
    """[B, T] hash of the window around every position; context_ids is [B, T + 2*context] (-1 outside the doc)."""
    B, width = context_ids.shape
    windows = context_ids.unfold(1, 2 * context + 1, 1)  # [B, T, W]
    return window_hash(windows.reshape(-1, 2 * context + 1)).view(B, width - 2 * context)
