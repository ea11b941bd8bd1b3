"""Starting cells from real weights: torchvision-format files made here from MONAI nets (no torchvision, no network)."""

from __future__ import annotations

import json
import re

import pytest
import torch

from monai_cxr.cell.pretrained import (
    GREY_MEAN,
    GREY_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    load_arch_file,
    load_pretrained,
    min_resolution,
    pretrained_network,
)
from monai_cxr.errors import CxrError
from monai_cxr.grid.networks import network_def

torch.set_num_threads(1)


def _resnet(channels=1, classes=1):
    from monai.networks.nets import resnet34

    return resnet34(spatial_dims=2, n_input_channels=channels, num_classes=classes, conv1_t_size=7, conv1_t_stride=2)


def _densenet(channels=1, classes=1):
    from monai.networks.nets import DenseNet121

    return DenseNet121(spatial_dims=2, in_channels=channels, out_channels=classes)


def _imagenet_like(net):
    """Give every BatchNorm non-trivial statistics, so that a wrong stem shift shows in eval mode."""
    gen = torch.Generator().manual_seed(0)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
            module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
    return net.eval()


def _torchvision_names(state, legacy=False):
    """MONAI names -> torchvision's (DenseNet ``layers.norm1`` -> ``norm1``, or legacy ``norm.1``; ``classifier``)."""
    out = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue  # the published torchvision files predate this buffer
        key = re.sub(r"\.layers\.(norm|relu|conv)([12])\.", r".\1.\2." if legacy else r".\1\2.", key)
        out[key.replace("class_layers.out.", "classifier.")] = value
    return out


def _rgb_input(grey):
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (grey.expand(-1, 3, -1, -1) - mean) / std


def _features(net, x, head):
    """The network's output up to the head (the head replaced by identity)."""
    parent, _, name = head.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, name, torch.nn.Identity())
    with torch.no_grad():
        return net.eval()(x)


@pytest.mark.parametrize(
    "make, head, stem, legacy",
    [
        (_resnet, "fc", "conv1", False),
        (_densenet, "class_layers.out", "features.conv0", False),
        (_densenet, "class_layers.out", "features.conv0", True),
    ],
    ids=["resnet34", "densenet121", "densenet121-legacy"],
)
def test_imagenet_file_loads_with_folded_stem_and_fresh_head(tmp_path, make, head, stem, legacy):
    torch.manual_seed(0)
    reference = _imagenet_like(make(3, 1000))
    file = tmp_path / "imagenet.pth"
    torch.save(_torchvision_names(reference.state_dict(), legacy), file)
    if legacy:
        assert any(".norm.1." in k for k in torch.load(file, weights_only=True))

    net = make(1, 1)
    fresh_head = net.get_submodule(head).weight.detach().clone()
    net, record = load_pretrained(net, str(file))

    assert record["loaded"] / record["total"] >= 0.9
    assert record["skipped"] == [f"{head}.weight", f"{head}.bias"]
    assert torch.equal(net.get_submodule(head).weight, fresh_head)
    assert record["normalization"]["folded_imagenet_stats"] is True
    assert len(record["sha256"]) == 64 and record["source"] == str(file)
    # the stem: ImageNet's per-channel 1/std folded into the RGB sum
    w = reference.get_submodule(stem).weight
    expected = (w * GREY_STD / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)).sum(1, keepdim=True)
    assert torch.allclose(net.get_submodule(stem).weight, expected, atol=1e-6)

    # same features as the RGB net on the grey image replicated to RGB; exact once the stem's zero padding
    # (which means a different grey level per ImageNet channel) is out of the picture
    grey = torch.rand(2, 1, 64, 64)
    grey_in = (grey - GREY_MEAN) / GREY_STD
    padded = _features(net, grey_in, head), _features(reference, _rgb_input(grey), head)
    for model in (net, reference):
        model.get_submodule(stem).padding = (0, 0)
    unpadded = _features(net, grey_in, head), _features(reference, _rgb_input(grey), head)
    assert torch.allclose(*unpadded, rtol=1e-4, atol=1e-4)
    assert (padded[0] - padded[1]).norm() < 0.01 * padded[1].norm()


def test_wrong_architecture_is_refused_in_one_line_naming_the_file(tmp_path):
    file = tmp_path / "densenet121.pth"
    torch.save(_torchvision_names(_densenet(3, 1000).state_dict()), file)
    net = _resnet()
    before = net.conv1.weight.detach().clone()
    with pytest.raises(CxrError) as err:
        load_pretrained(net, str(file))
    message = str(err.value)
    assert "\n" not in message and str(file) in message and "conv1.weight" in message
    assert torch.equal(net.conv1.weight, before)  # refused files change nothing


@pytest.mark.parametrize("wrap", ["model", "state_dict", None])
def test_cell_model_round_trips_exactly(tmp_path, wrap):
    torch.manual_seed(1)
    cell = _imagenet_like(_resnet())
    state = cell.state_dict()
    file = tmp_path / "model.pt"
    torch.save({wrap: state} if wrap else state, file)

    net, record = load_pretrained(_resnet(), str(file))
    assert record["loaded"] == record["total"] and record["skipped"] == []
    assert record["normalization"] is None
    loaded = net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_unreadable_or_missing_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "notes.pth"
    bad.write_text("not a checkpoint")
    for path in (bad, tmp_path / "absent.pth"):
        with pytest.raises(CxrError, match=re.escape(str(path))) as err:
            load_pretrained(_resnet(), str(path))
        assert "\n" not in str(err.value)


def test_pretrained_network_writes_the_record_and_scratch_says_so(tmp_path):
    file = tmp_path / "model.pt"
    torch.save({"model": _resnet().state_dict()}, file)
    record_file = tmp_path / "cell" / "pretrained.json"
    net = _resnet()
    assert pretrained_network(net, str(file), str(record_file)) is net
    assert json.loads(record_file.read_text())["loaded"] == 185

    pretrained_network(_resnet(), None, str(record_file))
    assert json.loads(record_file.read_text()) == {"source": "scratch"}


def test_arch_file_is_data_only(tmp_path):
    good = {
        "efficientnet-b0": {
            "_target_": "EfficientNetBN",
            "model_name": "efficientnet-b0",
            "spatial_dims": 2,
            "in_channels": 1,
            "num_classes": 1,
            "pretrained": False,
        }
    }
    file = tmp_path / "archs.json"
    file.write_text(json.dumps(good))
    assert load_arch_file(str(file)) == good

    bad_cases = {
        "expression": {"net": {"_target_": "DenseNet121", "spatial_dims": "$__import__('os').getcwd()"}},
        "reference": {"net": {"_target_": "DenseNet121", "spatial_dims": "@device"}},
        "target": {"net": {"_target_": "$print"}},
        "not a network": {"net": {"_target_": "subprocess.run", "args": ["true"]}},
        "nested component": {"net": {"_target_": "DenseNet121", "act": {"_target_": "torch.nn.ReLU"}}},
        "unsafe name": {"../net": {"_target_": "DenseNet121"}},
        "no target": {"net": {"spatial_dims": 2}},
    }
    for case, archs in bad_cases.items():
        file.write_text(json.dumps(archs))
        with pytest.raises(CxrError) as err:
            load_arch_file(str(file))
        message = str(err.value)
        assert str(file) in message and "\n" not in message, case
        assert next(iter(archs)) in message, case


def test_min_resolution_is_where_a_training_step_stays_finite():
    # at 1 px every image z-scores to 0 and batch normalisation gives NaN gradients (an eval forward gave a result)
    assert min_resolution(network_def("resnet34"), candidates=(1, 2)) == 2


def test_min_resolution_comes_from_the_network():
    assert min_resolution(network_def("densenet121"), candidates=(8, 16, 32)) == 32
    assert min_resolution(network_def("resnet34"), candidates=(8, 16)) <= 16
    with pytest.raises(CxrError, match="out_channels"):
        min_resolution({"_target_": "DenseNet121", "spatial_dims": 2, "in_channels": 1}, candidates=(32,))
