"""The study's networks: the standard ImageNet ResNet34 and DenseNet121, one channel in, one logit out."""

import json

import pytest
import torch
from monai.bundle import ConfigParser

from monai_cxr.cell.networks import load_weights
from monai_cxr.grid.generate import template_dir
from monai_cxr.grid.networks import ARCHS, network_def


def build(arch):
    return ConfigParser({"net": network_def(arch)}).get_parsed_content("net")


def n_params(net):
    return sum(p.numel() for p in net.parameters())


def test_resnet34_is_the_imagenet_architecture():
    net = build("resnet34")
    assert n_params(net) == pytest.approx(21.3e6, rel=0.005)  # torchvision's resnet34 less RGB and 1000 classes
    assert net.conv1.kernel_size == (7, 7) and net.conv1.stride == (2, 2)
    assert isinstance(net.maxpool, torch.nn.MaxPool2d)
    assert [len(layer) for layer in (net.layer1, net.layer2, net.layer3, net.layer4)] == [3, 4, 6, 3]


def test_densenet121_parameter_count():
    assert n_params(build("densenet121")) == pytest.approx(7.0e6, rel=0.01)


@pytest.mark.parametrize("arch,resolution", [("resnet34", 16), ("densenet121", 32)])
def test_one_channel_in_one_logit_out(arch, resolution):
    net = build(arch).eval()
    with torch.no_grad():
        out = net(torch.rand(3, 1, resolution, resolution))
    assert out.shape == (3, 1) and out.dtype == torch.float32


def test_template_network_def_is_the_resnet34_of_the_registry():
    train = json.loads((template_dir() / "configs" / "train.json").read_text())
    assert train["network_def"] == ARCHS["resnet34"]


def test_initial_weights_come_from_a_local_file(tmp_path):
    source = build("resnet34")
    torch.save({"model": source.state_dict()}, tmp_path / "w.pt")
    target = load_weights(build("resnet34"), str(tmp_path / "w.pt"))
    assert torch.equal(target.fc.weight, source.fc.weight)
    with pytest.raises(FileNotFoundError):
        load_weights(build("resnet34"), str(tmp_path / "missing.pt"))
