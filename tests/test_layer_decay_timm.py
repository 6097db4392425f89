"""Layer-wise lr decay the way timm groups its models (``group_matcher``) and
timm's own ``lr_scale`` groups folded for fusedlr. timm is not installed here
(it needs a torchvision built for this torch): the expected layers are timm's
documented convention for its ViT and ResNet matchers, and the lr oracle is
torch.optim with the lr set each step as timm's scheduler sets it
(schedule value x lr_scale)."""
import math

import pytest
import torch

import fusedlr
from fusedlr import schedules as S

# timm 1.0.31's VisionTransformer.group_matcher() and ResNet.group_matcher(coarse=False), as they return them
VIT_MATCHER = dict(stem=r"^cls_token|reg_token|pos_embed|patch_embed|norm_pre",
                   blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])
RESNET_MATCHER = dict(stem=r"^conv1|bn1|maxpool", blocks=r"^layer(\d+)\.(\d+)")


class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(4)
        self.attn = torch.nn.Linear(4, 4)


class _ViT(torch.nn.Module):
    def __init__(self, depth=3):
        super().__init__()
        self.cls_token = torch.nn.Parameter(torch.zeros(1, 1, 4))
        self.pos_embed = torch.nn.Parameter(torch.zeros(1, 5, 4))
        self.patch_embed = torch.nn.Conv2d(3, 4, 2)
        self.blocks = torch.nn.ModuleList(_Block() for _ in range(depth))
        self.norm = torch.nn.LayerNorm(4)
        self.head = torch.nn.Linear(4, 2)


def _layers(groups):
    return {id(p): g["layer_id"] for g in groups for p in g["params"]}


def test_vit_layers_follow_timm_group_matcher():
    """stem 0, block k at k+1, the final norm with the last block, the head last (scale 1)."""
    model, depth, decay = _ViT(), 3, 0.75
    groups = fusedlr.layer_decay_param_groups(model.named_parameters(), lr=1e-3, layer_decay=decay,
                                              group_matcher=VIT_MATCHER)
    expected = {}
    for name, p in model.named_parameters():
        if name.startswith(("cls_token", "pos_embed", "patch_embed")):
            expected[id(p)] = 0
        elif name.startswith("blocks."):
            expected[id(p)] = int(name.split(".")[1]) + 1
        elif name.startswith("norm."):
            expected[id(p)] = depth
        else:
            expected[id(p)] = depth + 1
    assert _layers(groups) == expected
    for g in groups:
        assert math.isclose(g["lr"], 1e-3 * decay ** (depth + 1 - g["layer_id"]))
    assert [g["layer_scale"] for g in groups if any(p is model.norm.weight for p in g["params"])] == [decay]


def test_resnet_stem_is_one_layer_and_blocks_count_from_it():
    model = torch.nn.Module()
    model.conv1, model.bn1 = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)
    model.layer1 = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1), torch.nn.Conv2d(4, 4, 1))
    model.layer2 = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1))
    model.fc = torch.nn.Linear(4, 2)
    groups = fusedlr.layer_decay_param_groups(model.named_parameters(), lr=1.0, layer_decay=0.5,
                                              group_matcher=RESNET_MATCHER)
    layers = _layers(groups)
    assert layers[id(model.conv1.weight)] == layers[id(model.bn1.bias)] == 0
    assert [layers[id(m.weight)] for m in (model.layer1[0], model.layer1[1], model.layer2[0], model.fc)] == [1, 2, 3, 4]


def test_weight_decay_split_like_timm():
    """1-D params and no_weight_decay names get 0; each layer keeps its scale."""
    model = _ViT(depth=2)
    groups = fusedlr.layer_decay_param_groups(model.named_parameters(), lr=1e-3, layer_decay=0.5,
                                              group_matcher=VIT_MATCHER, weight_decay=0.05,
                                              no_weight_decay=("pos_embed", "cls_token"))
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    for name, p in model.named_parameters():
        no_decay = p.ndim <= 1 or name in ("pos_embed", "cls_token")
        assert decay_of[id(p)] == (0.0 if no_decay else 0.05), name
    assert len({(g["layer_id"], g["weight_decay"]) for g in groups}) == len(groups)
    fusedlr.AdamW(groups, lr=1e-3)


def test_timm_lr_scale_groups_folded_match_timm_scheduling(backend):
    """fold_lr_scale(timm groups) + a fusedlr cosine equals torch AdamW whose
    group lrs are set each step as timm's scheduler sets them: value(t) * lr_scale."""
    gen = torch.Generator().manual_seed(0)
    shapes, scales, base_lr, steps = [(5, 3), (7,), (4, 4)], [0.25, 0.5, 1.0], 0.1, 6
    init = [torch.randn(s, generator=gen) for s in shapes]
    tp = [torch.nn.Parameter(t.clone()) for t in init]
    fp = [torch.nn.Parameter(t.clone()) for t in init]
    timm_groups = lambda params: [{"params": [p], "lr_scale": s, "weight_decay": 0.01}  # noqa: E731
                                  for p, s in zip(params, scales)]
    t_opt = torch.optim.AdamW(timm_groups(tp), lr=base_lr)
    f_opt = fusedlr.AdamW(fusedlr.fold_lr_scale(timm_groups(fp), lr=base_lr), lr=base_lr,
                          schedule=S.Cosine(steps), backend=backend)
    for t in range(steps):
        cosine = 0.5 * (1 + math.cos(math.pi * t / steps))
        for group in t_opt.param_groups:
            group["lr"] = base_lr * cosine * group["lr_scale"]
        grads = [torch.randn(s, generator=gen) for s in shapes]
        for params in (tp, fp):
            for p, g in zip(params, grads):
                p.grad = g.clone()
        t_opt.step()
        f_opt.step()
    for a, b in zip(tp, fp):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(lr=1e-3, layer_decay=0.5), TypeError, "needs num_layers"),
    (dict(lr=1e-3, layer_decay=0.5, group_matcher=3), TypeError, "group_matcher must be"),
    (dict(lr=1e-3, layer_decay=0.5, num_layers=2, weight_decay=-1.0), ValueError, "weight_decay"),
    (dict(lr=1e-3, layer_decay=0.5, num_layers=2, min_scale=2.0), ValueError, "min_scale"),
])
def test_layer_decay_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        fusedlr.layer_decay_param_groups(_ViT().named_parameters(), **kwargs)


def test_fold_lr_scale_bad_groups():
    with pytest.raises(TypeError, match=r"param_groups\[0\] must be a dict"):
        fusedlr.fold_lr_scale([torch.zeros(1)], lr=0.1)
    with pytest.raises(ValueError, match=r"lr_scale"):
        fusedlr.fold_lr_scale([{"params": [], "lr_scale": -1.0}], lr=0.1)


def test_frozen_params_keep_their_layer_numbers():
    """timm numbers layers over all params, frozen ones too."""
    model = _ViT(depth=2)
    for p in model.head.parameters():
        p.requires_grad_(False)
    groups = fusedlr.layer_decay_param_groups(model.named_parameters(), lr=1.0, layer_decay=0.5,
                                              group_matcher=VIT_MATCHER)
    layers = _layers(groups)
    assert id(model.head.weight) not in layers
    assert layers[id(model.norm.weight)] == 2
    assert [g["lr"] for g in groups if g["layer_id"] == 2] == [0.5]  # the head's layer 3 still counts
