"""Non-overlapping subnetwork ensembles ("Ex uno plures", Zhang, Gao & Sabuncu, arXiv 2106.04767).

Only the paper's abstract is available ("an ensemble of subnetworks, each corresponding to a
non-overlapping dropout mask computed via a pruning strategy and trained independently"), so this
is our reading of it. The option ``scope`` chooses which units the masks partition (README,
"Methods", says why both readings are plausible):

- ``all`` (the default, described first below): every channel of every layer, the residual
  stream included: M networks each 1/M as wide as the parent, run as one grouped network, about
  1/M of the parent's cost together;
- ``dropout_sites``: only the channels where MC dropout drops (``Layers.branch_dropout``: inside
  each residual branch, between its convolutions; a site on the residual stream stays whole). The
  stem, the residual stream (block outputs and shortcuts) and the head stay full width: every
  member is the parent with its branches 1/M wide, starts from its own copy of the parent's
  weights (the branch channels restricted to its mask) and is trained independently. The members
  run one after another (:class:`MemberNetworks`, M forward passes; each member's own copies of
  the shared parts are counted in its parameters and FLOPs): about the parent's convolution FLOPs
  in all, plus M-1 copies of the stem, shortcuts and head, as "a computational efficiency
  similar to MC dropout" with M samples. The dropout sites are found by building the backbone
  with :class:`DropoutSite` markers as its ``branch_dropout`` and tracing it.

The stages (both scopes):

1. **Parent.** Train the deterministic backbone (stage ``parent``) for
   ``parent_epochs_fraction * train.epochs`` epochs (the schedule's milestones scaled alike).
   With the default fraction 1 the parent *is* the deterministic run of the same seed, so it is
   obtained through ``ctx.member_model`` (its saved weights reused when the suite trained it).
2. **Masks.** Split the channels (filters) of every layer (``dropout_sites``: of every layer
   inside a residual branch) into M disjoint, equal, non-empty sets, one per subnetwork: a channel-level dropout mask with keep rate 1/M, the M masks
   non-overlapping and covering every channel. Channels tied by a residual addition share one
   mask (a *channel group*, found by tracing the network). Channels are ranked by a pruning
   criterion of the trained parent: ``bn_scale`` (|BatchNorm scale|, Network Slimming's
   criterion, averaged over the group's BatchNorms) or ``filter_norm`` (L2 norm of the filters
   writing into the channel, Li et al.'s criterion); ranks are dealt in snake order (0..M-1,
   M-1..0, ...), so each subnetwork gets an equal share of important and unimportant channels
   and near-equal total importance. ``random`` (a random equal partition) is the ablation.
3. **Subnetworks.** Train all M subnetworks independently (stage ``subnetworks``,
   ``train.epochs`` epochs); each starts from the parent's weights restricted to its mask
   (``reinit=False``, the default: the subnetworks are carved "out of one" trained network and
   the pruning criterion refers to those weights; ``reinit=True`` re-initialises them, which
   makes the criterion irrelevant and gives an ensemble of M thin networks trained from scratch).
   Prediction averages the subnetworks' probabilities (the harness's ``combine``).

With scope ``all``, because the masks are non-overlapping and equal, the M subnetworks run as
ONE grouped network (:class:`GroupedSubnetworks`): the parent's channels are permuted so that subnetwork m's channels
are contiguous, every convolution has ``groups=M`` (the stem reads the image tiled M times), each
BatchNorm channel belongs to one subnetwork, and the head is a grouped linear layer giving
``[M, B, K]``. The grouped network is built by the backbone's own builder through ``Layers``
factories; it keeps no weight connecting two subnetworks, so the shared loss (a sum over
members) gives each subnetwork exactly its own gradient. Every width must be divisible by M.

Cost (scope ``all``): one forward pass of the grouped network; each subnetwork is 1/M as wide as
the parent (~1/M^2 of its convolution FLOPs and parameters), so all M together cost ~1/M of the
parent's FLOPs and parameters (the head and the tiled stem input excepted).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
from torch import nn

from benchmark.core.runtime import hash_seed
from benchmark.methods import Method, MethodOptions, SingleMember, StageContext, register_method

from .layers import GroupedSubnetworks, _require_divisible, grouped_layers

CRITERIA = ("bn_scale", "filter_norm", "random")
SCOPES = ("all", "dropout_sites")  # which channels the masks partition (module docstring)
INPUT = -1  # the channel space of the images (shared by all subnetworks, never partitioned)


# ---------------------------------------------------------------------------------------------
# Channel groups: which layers' channels must share a mask (found by tracing the parent)


@dataclass
class ChannelGroup:
    """Channels that one mask partitions: written by ``writers`` (convolutions' outputs), normalised
    by ``norms``, read by ``readers`` (convolutions' and linear layers' inputs)."""

    channels: int
    writers: list[str] = field(default_factory=list)
    norms: list[str] = field(default_factory=list)
    readers: list[str] = field(default_factory=list)


@dataclass
class ChannelGraph:
    """The parent's layers by name: convolutions ``name -> (input group, output group)`` (input
    group ``INPUT`` for the image), norms ``name -> group``, linear layers ``name -> input group``."""

    groups: list[ChannelGroup]
    convs: dict[str, tuple[int, int]]
    norms: dict[str, int]
    linears: dict[str, int]
    dropout_sites: list[int] = field(default_factory=list)  # groups holding a dropout site (a DropoutSite marker), in order
    stream: set[int] = field(default_factory=set)  # groups joined by a residual addition (the residual stream)


class DropoutSite(nn.Identity):
    """A marker where MC dropout would drop (``Layers.branch_dropout``: inside each residual branch);
    it changes nothing and has no state. The ``dropout_sites`` scope partitions the channels it sees."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def new(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if 0 in (ra, rb) and ra != rb:  # index 0 stands for the images' channels
            raise ValueError("subnetwork: the image channels meet a layer's channels (a residual from the input?); cannot partition")
        self.parent[max(ra, rb)] = min(ra, rb)
        return min(ra, rb)


class _Tracer(torch.fx.Tracer):
    """torch.fx's tracer, keeping :class:`DropoutSite` markers as modules of the graph."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, DropoutSite) or super().is_leaf_module(m, module_qualified_name)


_CHANNEL_MIXING = {torch.cat, torch.stack, torch.split, torch.chunk, torch.reshape}


def channel_graph(backbone: nn.Module) -> ChannelGraph:
    """Trace ``backbone`` (``[B, C, H, W] -> [B, K]``, ungrouped) and group its channels.

    Convolutions start a new channel space; BatchNorm, activations, pooling, dropout and flatten
    keep it; an elementwise operation on two tensors (a residual addition) merges their spaces.
    """
    graph = _Tracer().trace(backbone)
    uf = _UnionFind()
    uf.parent = [0]  # index 0 stands for INPUT
    space: dict[torch.fx.Node, int | None] = {}
    convs: dict[str, tuple[int, int]] = {}
    norms: dict[str, int] = {}
    linears: dict[str, int] = {}
    width: dict[int, int] = {}
    sites: list[int] = []
    joined: list[int] = []

    def arg_spaces(node: torch.fx.Node) -> list[int]:
        return [space[a] for a in node.all_input_nodes if space.get(a) is not None]

    for node in graph.nodes:
        if node.op == "placeholder":
            space[node] = 0
        elif node.op == "call_module":
            mod = backbone.get_submodule(node.target)
            (inp,) = arg_spaces(node) or [None]
            if isinstance(mod, nn.Conv2d):
                if mod.groups != 1:
                    raise ValueError(f"subnetwork: parent layer {node.target!r} is already grouped (groups={mod.groups})")
                out = uf.new()
                width[out] = mod.out_channels
                convs[node.target] = (inp, out)
                space[node] = out
            elif isinstance(mod, nn.BatchNorm2d):
                norms[node.target] = inp
                space[node] = inp
            elif isinstance(mod, nn.Linear):
                linears[node.target] = inp
                space[node] = None
            elif isinstance(mod, DropoutSite):
                sites.append(inp)
                space[node] = inp
            elif any(True for _ in mod.parameters(recurse=False)):
                raise ValueError(f"subnetwork: cannot partition layer {node.target!r} of type {type(mod).__name__}; "
                                 f"supported layers with weights: Conv2d, BatchNorm2d, Linear")
            else:
                space[node] = inp
        elif node.op in ("call_function", "call_method"):
            if node.target in _CHANNEL_MIXING or node.target in ("view", "reshape", "split", "chunk"):
                raise ValueError(f"subnetwork: cannot follow channels through {node.target} in the parent network")
            spaces = arg_spaces(node)
            merged = spaces[0] if spaces else None
            for s in spaces[1:]:
                merged = uf.union(merged, s)
                joined.append(merged)
            space[node] = merged
        elif node.op == "get_attr":
            raise ValueError(f"subnetwork: the parent network reads a raw tensor {node.target!r}; cannot partition")

    roots = sorted({uf.find(s) for s in width})
    if uf.find(0) != 0 or 0 in roots:
        raise ValueError("subnetwork: a convolution's output is added to the input images; cannot partition")
    index = {r: i for i, r in enumerate(roots)}
    groups = [ChannelGroup(channels=width[r]) for r in roots]

    def gid(s: int | None) -> int:
        if s is None:
            raise ValueError("subnetwork: a layer reads a tensor whose channels could not be traced")
        return INPUT if uf.find(s) == 0 else index[uf.find(s)]

    convs = {n: (gid(i), gid(o)) for n, (i, o) in convs.items()}
    norms = {n: gid(s) for n, s in norms.items()}
    linears = {n: gid(s) for n, s in linears.items()}
    for n, (i, o) in convs.items():
        groups[o].writers.append(n)
        if i != INPUT:
            groups[i].readers.append(n)
    for n, g in norms.items():
        groups[g].norms.append(n)
    for n, g in linears.items():
        groups[g].readers.append(n)
    site_groups = list(dict.fromkeys(gid(s) for s in sites))
    return ChannelGraph(groups, convs, norms, linears, site_groups, {gid(s) for s in joined})


# ---------------------------------------------------------------------------------------------
# Masks from a pruning criterion


@dataclass
class Partition:
    """M disjoint channel masks per partitioned channel group: ``assignment[g][c]`` is the subnetwork
    that owns channel c of group g (each subnetwork owns ``channels / M`` channels of every such
    group); a group in ``shared`` is not partitioned: every subnetwork has all its channels (its
    assignment is -1)."""

    graph: ChannelGraph
    members: int
    criterion: str
    assignment: list[torch.Tensor]
    shared: frozenset[int] = frozenset()

    def indices(self, group: int, member: int) -> torch.Tensor:
        """Channels (ascending) of ``group`` that subnetwork ``member`` owns (a shared group: all of them)."""
        if group in self.shared:
            return torch.arange(self.graph.groups[group].channels)
        return torch.nonzero(self.assignment[group] == member).flatten()

    def permutation(self, group: int) -> torch.Tensor:
        """Channel order that makes each subnetwork's channels contiguous (member 0 first)."""
        return torch.cat([self.indices(group, m) for m in range(self.members)])

    def channel_counts(self) -> dict[str, Any]:
        """Per layer: its channels and each subnetwork's share (for the record)."""
        out = {}
        for g, group in enumerate(self.graph.groups):
            per = [len(self.indices(g, m)) for m in range(self.members)]
            for name in group.writers + group.norms:
                out[name] = {"channels": group.channels, "per_member": per, "group": g}
        return out


def channel_scores(backbone: nn.Module, graph: ChannelGraph, criterion: str, seed: int = 0, groups: list[int] | None = None) -> list[torch.Tensor]:
    """Importance of every channel of every group (higher = more important), ``[channels]`` each
    (``groups``: of those groups only, in that order; default all).

    ``bn_scale``: mean |BatchNorm scale| over the group's norms; ``filter_norm``: L2 norm of the
    filters writing into the channel (all writing convolutions together); ``random``: i.i.d.
    uniform scores from ``seed``.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown subnetwork criterion {criterion!r}; valid choices: {', '.join(CRITERIA)}")
    gen = torch.Generator().manual_seed(seed)
    scores = []
    for g in range(len(graph.groups)) if groups is None else groups:
        group = graph.groups[g]
        if criterion == "random":
            scores.append(torch.rand(group.channels, generator=gen))
        elif criterion == "bn_scale":
            if not group.norms:
                raise ValueError(f"subnetwork: criterion 'bn_scale' needs a BatchNorm on every channel group; group {g} "
                                 f"(written by {group.writers}) has none; use 'filter_norm' or 'random'")
            scales = [backbone.get_submodule(n).weight.detach().abs().float().cpu() for n in group.norms]
            scores.append(torch.stack(scales).mean(0))
        else:
            sq = [backbone.get_submodule(n).weight.detach().float().cpu().pow(2).flatten(1).sum(1) for n in group.writers]
            scores.append(torch.stack(sq).sum(0).sqrt())
    return scores


def snake_assignment(scores: torch.Tensor, members: int) -> torch.Tensor:
    """Deal channels by descending score in snake order 0..M-1, M-1..0, ...: ``[C]`` -> owner ``[C]``."""
    _require_divisible(scores.numel(), members, "a channel group")
    rank = torch.argsort(scores, descending=True, stable=True)
    r = torch.arange(scores.numel())
    lap, pos = r // members, r % members
    owner_by_rank = torch.where(lap % 2 == 0, pos, members - 1 - pos)
    owner = torch.empty_like(owner_by_rank)
    owner[rank] = owner_by_rank
    return owner


def partition_channels(backbone: nn.Module, members: int, criterion: str, seed: int = 0, scope: str = "all") -> Partition:
    """M disjoint equal channel masks from ``criterion``: of every channel group of ``backbone``
    (``scope="all"``), or only of the groups holding a dropout site (``"dropout_sites"``: the
    backbone built with :class:`DropoutSite` markers as its ``branch_dropout``; every other group
    is shared, whole, by all M)."""
    if members < 1:
        raise ValueError(f"subnetwork: members must be >= 1, got {members}")
    if scope not in SCOPES:
        raise ValueError(f"unknown subnetwork scope {scope!r}; valid choices: {', '.join(SCOPES)}")
    graph = channel_graph(backbone)
    split = list(range(len(graph.groups)))
    if scope == "dropout_sites":
        split = [g for g in graph.dropout_sites if g not in graph.stream]  # a site on the residual stream stays whole
        if not split:
            raise ValueError("subnetwork: scope 'dropout_sites' found no dropout site inside a residual branch of the backbone "
                             "(build it with branch_dropout=DropoutSite; a backbone without residual branches has none)")
    scores = channel_scores(backbone, graph, criterion, seed, split)
    assignment = [torch.full((group.channels,), -1) for group in graph.groups]
    for g, sc in zip(split, scores):
        _require_divisible(sc.numel(), members, f"the channel group written by {graph.groups[g].writers[0]!r}")
        assignment[g] = snake_assignment(sc, members)
    return Partition(graph, members, criterion, assignment, frozenset(set(range(len(graph.groups))) - set(split)))


# ---------------------------------------------------------------------------------------------
# From the parent to the subnetworks


def _slices(partition: Partition, group: int, channels: int) -> list[torch.Tensor]:
    if group == INPUT:
        return [torch.arange(channels)] * partition.members
    return [partition.indices(group, m) for m in range(partition.members)]


@torch.no_grad()
def load_from_parent(grouped: GroupedSubnetworks, parent: nn.Module, partition: Partition) -> None:
    """Copy the parent backbone's weights, restricted to each subnetwork's mask, into ``grouped``.

    Subnetwork m's block of every layer gets the parent's weights between the channels that m
    owns; weights between channels of different subnetworks are dropped.
    """
    graph, net = partition.graph, grouped.net
    done: set[str] = set()
    for name, (gi, go) in graph.convs.items():
        src, dst = parent.get_submodule(name), net.get_submodule(name)
        rows = _slices(partition, go, src.out_channels)
        cols = _slices(partition, gi, src.in_channels)
        dst.weight.copy_(torch.cat([src.weight[r][:, c] for r, c in zip(rows, cols)]))
        if src.bias is not None:
            dst.bias.copy_(torch.cat([src.bias[r] for r in rows]))
        done.update(f"{name}.{n}" for n, _ in dst.named_parameters())
    for name, g in graph.norms.items():
        src, dst = parent.get_submodule(name), net.get_submodule(name)
        perm = partition.permutation(g).to(src.weight.device)
        for key, value in src.state_dict().items():
            target = getattr(dst, key)
            target.copy_(value if value.dim() == 0 else value[perm])
        done.update(f"{name}.{n}" for n, _ in dst.named_parameters())
    for name, g in graph.linears.items():
        src, dst = parent.get_submodule(name), net.get_submodule(name)
        cols = _slices(partition, g, src.in_features)
        dst.weight.copy_(torch.stack([src.weight[:, c] for c in cols]))
        dst.bias.copy_(src.bias.expand_as(dst.bias))
        done.update(f"{name}.{n}" for n, _ in dst.named_parameters())
    missing = sorted({n for n, _ in net.named_parameters()} - done)
    if missing:
        raise ValueError(f"subnetwork: no parent weights were mapped to {missing}")


class MemberNetworks(nn.Module):
    """M networks of one architecture (``[B, C, H, W] -> [B, K]`` each) run one after another:
    ``[B, C, H, W] -> [M, B, K]``. Nothing is shared, so each member's loss reaches only its own weights."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([net(x) for net in self.members])


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    owner, _, attr = name.rpartition(".")
    setattr(root.get_submodule(owner), attr, module)


@torch.no_grad()
def extract_subnetwork(parent: nn.Module, partition: Partition, member: int) -> nn.Module:
    """Subnetwork ``member`` as a dense network of the parent's architecture, 1/M as wide:
    ``[B, C, H, W] -> [B, K]`` (the parent's weights between its channels; a reference for tests
    and for deploying one subnetwork alone)."""
    sub = copy.deepcopy(parent)
    graph = partition.graph
    for name, (gi, go) in graph.convs.items():
        src: nn.Conv2d = parent.get_submodule(name)
        rows, cols = _slices(partition, go, src.out_channels)[member], _slices(partition, gi, src.in_channels)[member]
        conv = nn.Conv2d(len(cols), len(rows), src.kernel_size, src.stride, src.padding, src.dilation, bias=src.bias is not None)
        conv.weight.copy_(src.weight[rows][:, cols])
        if src.bias is not None:
            conv.bias.copy_(src.bias[rows])
        _replace(sub, name, conv.to(src.weight.device))
    for name, g in graph.norms.items():
        src: nn.BatchNorm2d = parent.get_submodule(name)
        idx = partition.indices(g, member)
        norm = nn.BatchNorm2d(len(idx), eps=src.eps, momentum=src.momentum, affine=src.affine, track_running_stats=src.track_running_stats)
        norm.load_state_dict({k: (v if v.dim() == 0 else v[idx]) for k, v in src.state_dict().items()})
        _replace(sub, name, norm.to(src.weight.device).train(src.training))
    for name, g in graph.linears.items():
        src: nn.Linear = parent.get_submodule(name)
        idx = partition.indices(g, member)
        lin = nn.Linear(len(idx), src.out_features, bias=src.bias is not None)
        lin.weight.copy_(src.weight[:, idx])
        if src.bias is not None:
            lin.bias.copy_(src.bias)
        _replace(sub, name, lin.to(src.weight.device))
    return sub


# ---------------------------------------------------------------------------------------------
# The method


@dataclass
class SubnetworkOptions(MethodOptions):
    """``members``: M subnetworks; ``criterion``: pruning criterion ranking the channels
    (bn_scale, filter_norm, random); ``parent_epochs_fraction``: parent training epochs as a
    fraction of ``train.epochs`` (0: masks from the untrained parent); ``reinit``: re-initialise
    the subnetworks instead of keeping the parent's weights; ``scope``: which channels the masks
    partition (all, dropout_sites)."""

    members: int = 4
    criterion: str = "bn_scale"
    parent_epochs_fraction: float = 1.0
    reinit: bool = False
    scope: str = "all"  # which channels the masks split: "all" (every layer's: M networks 1/M as wide, one grouped pass) or "dropout_sites" (only those inside the residual branches: M full-width networks with thin branches, M passes)


@register_method("subnetwork")
class Subnetwork(Method):
    """Parent -> M disjoint channel masks by a pruning criterion -> M subnetworks trained
    independently in one grouped network (see the module docstring)."""

    Options = SubnetworkOptions

    def __init__(self, options: SubnetworkOptions, task: Any) -> None:
        super().__init__(options, task)
        if options.criterion not in CRITERIA:
            raise ValueError(f"unknown subnetwork criterion {options.criterion!r}; valid choices: {', '.join(CRITERIA)}")
        if int(options.members) < 1:
            raise ValueError(f"subnetwork: members must be >= 1, got {options.members}")
        if not options.parent_epochs_fraction >= 0:
            raise ValueError(f"subnetwork: parent_epochs_fraction must be >= 0, got {options.parent_epochs_fraction}")
        if options.scope not in SCOPES:
            raise ValueError(f"unknown subnetwork scope {options.scope!r}; valid choices: {', '.join(SCOPES)}")
        self.facts: dict[str, Any] = {}

    @property
    def scope(self) -> str:
        return str(self.options.scope)

    def variant(self) -> str:
        parts = [f"M={self.members}"]
        if self.options.criterion != "bn_scale":
            parts.append(self.options.criterion)
        if self.options.reinit:
            parts.append("reinit")
        if self.options.parent_epochs_fraction != 1.0:
            parts.append(f"parent={self.options.parent_epochs_fraction:g}")
        if self.scope != "all":
            parts.append(self.scope)
        return " ".join(parts)

    def parent_method(self) -> Method:
        """The parent is the deterministic single network (one member)."""
        return Method(MethodOptions(members=1), self.task)

    def build_parent(self) -> nn.Module:
        """The untrained parent: the task's backbone, ``[B, C, H, W] -> [1, B, K]``."""
        return SingleMember(self.task.backbone_net())

    def marked_backbone(self) -> nn.Module:
        """The parent's backbone with a :class:`DropoutSite` marker at every dropout site (same state-dict keys)."""
        return self.task.backbone_net(self.task.layers(branch_dropout=DropoutSite))

    def build(self) -> nn.Module:
        """The untrained ensemble, ``[B, C, H, W] -> [M, B, K]``: scope ``all``, the grouped network of
        M subnetworks; ``dropout_sites``, M member networks (thin residual branches) run one by one."""
        if self.scope == "all":
            return GroupedSubnetworks(self.task.backbone_net(grouped_layers(self.task.layers(), self.members)), self.members)
        nets = []
        for m in range(self.members):  # each member its own initialisation; the masks' layout is contiguous (any would do)
            parent = self.marked_backbone()
            nets.append(extract_subnetwork(parent, partition_channels(parent, self.members, "random", seed=m, scope=self.scope), m))
        return MemberNetworks(nets)

    def from_parent(self, parent: nn.Module, partition: Partition, fresh: nn.Module | None = None) -> nn.Module:
        """The M subnetworks of ``parent`` (a backbone) under ``partition``, starting from its weights
        (scope ``all``: loaded into ``fresh``, an untrained :meth:`build`, or a new one)."""
        if self.scope == "all":
            grouped = (fresh if fresh is not None else self.build()).to(next(parent.parameters()).device)
            load_from_parent(grouped, parent, partition)
            return grouped
        return MemberNetworks([extract_subnetwork(parent, partition, m) for m in range(self.members)])

    def run(self, ctx: StageContext) -> nn.Module:
        """Train the parent, partition its channels, train the subnetworks (one grouped network)."""
        cfg = ctx.train_config()
        frac = float(self.options.parent_epochs_fraction)
        parent_epochs = int(round(frac * cfg.epochs))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hash_seed(ctx.seed, "subnetwork", "parent-init"))
            parent = self.build_parent()
            # (dropout_sites builds its members from the parent's weights, after the parent is known)
            fresh = self.build() if self.scope == "all" else None
        if frac == 1.0:
            # The parent is exactly the deterministic run of this seed: reuse its weights when that
            # run exists (the suite trains it anyway), or train it once under its own run id.
            parent = ctx.member_model({"run": {"method": "deterministic"}, "method": {}})
        else:
            ctx.fit(parent, self.parent_method(), stage="parent", epochs=parent_epochs, milestones=[m * frac for m in cfg.milestones])
        parent.eval()
        backbone = parent.net
        if self.scope == "dropout_sites":  # the same weights, with the dropout sites marked for the partition
            backbone = self.marked_backbone().to(ctx.device)
            backbone.load_state_dict(parent.net.state_dict())
        partition = partition_channels(backbone, self.members, self.options.criterion, seed=hash_seed(ctx.seed, "subnetwork", "masks"),
                                       scope=self.scope)
        if self.options.reinit and fresh is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(hash_seed(ctx.seed, "subnetwork", "reinit"))
                fresh = self.build()
        model = fresh.to(ctx.device) if self.options.reinit else self.from_parent(backbone, partition, fresh)
        ctx.fit(model, self, stage="subnetworks")
        self.facts = {"parent_epochs": parent_epochs, "channels": partition.channel_counts(), "parent_run": ctx.members[-1] if frac == 1.0 else None,
                      "parent_params": sum(p.numel() for p in parent.parameters()),
                      "subnetwork_params": sum(p.numel() for p in model.parameters()) // self.members}
        return model

    def forward_passes(self) -> int:
        """1 (scope ``all``: one grouped pass) or M (``dropout_sites``: the members one after another)."""
        return 1 if self.scope == "all" else self.members

    def extra_record(self) -> dict[str, Any]:
        scope = {"scope": self.scope} if self.scope != "all" else {}
        return {"criterion": self.options.criterion, "reinit": self.options.reinit,
                "parent_epochs_fraction": self.options.parent_epochs_fraction, **scope, **self.facts}
