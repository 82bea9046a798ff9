"""Domain experts and the paper's domain-removal experiment, measured on held-out text.

An expert is specialised in domain D when its mean routing weight on D's tokens is at least twice
that of the next most-activating domain (Monet paper, section 5). Routing is shared by the layers
of a group, so the rule holds for every layer of the group at once; removing D's experts switches
them off in every layer of their group. The experiment: switch off D's experts, and compare the
relative rise of D's held-out loss with the mean relative rise of the other domains.

Input everywhere is `windows`: a dict domain -> LongTensor [n, seq_len] of token windows.
"""

from dataclasses import dataclass

import torch

from explorer.model.ablation import Ablation
from explorer.model.naming import ExpertRef, ModelShape
from explorer.model.sparse import sparse_expert_weights


@dataclass
class DomainRouting:
    """Per routing group and expert: mean weight on each domain's tokens, and the top contexts' domains."""

    domains: list[str]
    mean_weight: torch.Tensor  # [G, E*E, D]
    top_domain_share: torch.Tensor  # [G, E*E]: share of the expert's top-k positions in its commonest domain
    top_count: torch.Tensor  # [G, E*E]: how many top positions it has (fewer than k if it rarely fires)


def _batches(tensor: torch.Tensor, batch_size: int):
    for start in range(0, tensor.shape[0], batch_size):
        yield start, tensor[start : start + batch_size]


@torch.no_grad()
def domain_routing(model, windows: dict[str, torch.Tensor], top_k: int = 20, batch_size: int = 8) -> DomainRouting:
    """Mean expert weight per domain, and the domain purity of every expert's top-`top_k` positions."""
    shape = ModelShape.of(model.config)
    G, EE, device = shape.num_groups, shape.experts_per_side**2, model.device
    domains = sorted(windows)
    sums = torch.zeros(G, EE, len(domains), dtype=torch.float64)
    tokens = torch.zeros(len(domains), dtype=torch.float64)
    top_weight = torch.full((G, EE, top_k), -1.0)
    top_domain = torch.full((G, EE, top_k), -1, dtype=torch.long)
    for d, domain in enumerate(domains):
        for _, batch in _batches(windows[domain], batch_size):
            router_probs = model(batch.to(device), output_router_probs=True, use_cache=False).router_probs
            tokens[d] += batch.numel()
            for group in range(G):
                g1, g2 = router_probs[shape.group_layers(group)[0]]
                sparse = sparse_expert_weights(g1, g2)
                weight, expert = sparse.weight.cpu(), sparse.expert.cpu()
                sums[group, :, d].index_add_(0, expert, weight.double())
                # per expert, the best weight of this batch joins the running top-k (one per position)
                candidates = torch.full((EE, batch.numel()), -1.0)
                candidates[expert, (sparse.row * batch.shape[1] + sparse.position).cpu()] = weight
                best = torch.cat([top_weight[group], candidates], dim=1).topk(top_k, dim=1)
                merged_domain = torch.cat([top_domain[group], torch.full((EE, batch.numel()), d)], dim=1)
                top_weight[group], top_domain[group] = best.values, merged_domain.gather(1, best.indices)
    mean = (sums / tokens.clamp(min=1)).float()
    filled = top_weight > 0
    counts = torch.stack([((top_domain == d) & filled).sum(-1) for d in range(len(domains))], dim=-1)
    share = counts.max(-1).values / filled.sum(-1).clamp(min=1)
    return DomainRouting(domains, mean, share.float(), filled.sum(-1))


def skewed_experts(routing: DomainRouting, domain: str, ratio: float = 2.0, min_weight: float = 0.0):
    """Experts (ExpertRefs) whose mean weight on `domain` is at least `ratio` x every other domain's."""
    d = routing.domains.index(domain)
    mean = routing.mean_weight  # [G, EE, D]
    others = torch.cat([mean[..., :d], mean[..., d + 1 :]], dim=-1).amax(-1)
    chosen = (mean[..., d] >= ratio * others) & (mean[..., d] > min_weight)
    E = int(round(mean.shape[1] ** 0.5))
    return [ExpertRef(g, f // E, f % E, E) for g, f in chosen.nonzero().tolist()]


@torch.no_grad()
def heldout_loss(model, windows: torch.Tensor, ablate=None, batch_size: int = 8) -> float:
    """Mean next-token cross-entropy (nats) over all windows, with `ablate` switched off."""
    total, count = 0.0, 0
    for _, batch in _batches(windows, batch_size):
        batch = batch.to(model.device)
        logits = model(batch, ablate=ablate, use_cache=False).logits[:, :-1].float()
        losses = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="sum")
        total, count = total + losses.item(), count + batch[:, 1:].numel()
    return total / count


@dataclass
class RemovalRow:
    domain: str
    experts_off: int
    loss_before: float
    loss_after: float
    rise: float  # relative rise of this domain's loss
    others_mean_rise: float  # mean relative rise of the other domains' losses
    ratio: float  # rise / others_mean_rise: the paper's claim is that this is large


def domain_removal(model, windows: dict[str, torch.Tensor], routing: DomainRouting, ratio: float = 2.0):
    """For each domain D: switch off D's skewed experts and measure every domain's held-out loss."""
    config = model.config
    before = {domain: heldout_loss(model, windows[domain]) for domain in routing.domains}
    rows = []
    for domain in routing.domains:
        experts = skewed_experts(routing, domain, ratio)
        ablation = Ablation.build(experts, config)
        after = {other: heldout_loss(model, windows[other], ablate=ablation) for other in routing.domains}
        rises = {other: (after[other] - before[other]) / before[other] for other in routing.domains}
        others = [rises[other] for other in routing.domains if other != domain]
        others_mean = sum(others) / len(others)
        rows.append(
            RemovalRow(
                domain,
                len(experts),
                before[domain],
                after[domain],
                rises[domain],
                others_mean,
                rises[domain] / others_mean if others_mean > 0 else float("inf"),
            )
        )
    return before, rows
