import copy

import pytest
import torch
import torchvision

from pirl_core.engine import backbones
from pirl_core.engine.backbones import REGISTRY, build_backbone, load_weights_file, sha256_prefix
from pirl_core.engine.small_maps import use_small_map_convs
from pirl_core.errors import PirlError


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_backbone_gives_features_of_its_registered_width(name):
    model = build_backbone(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, REGISTRY[name].dim)


def test_efficientnet_lite0_imagenet_weights_are_the_published_trained_file():
    path = REGISTRY["efficientnet_lite0"].imagenet_file()
    # torch hub convention: the file name carries the first 8 hex digits of its sha256
    assert sha256_prefix(path) == "57934424" == path.stem.split("-")[-1]
    trained, random = build_backbone("efficientnet_lite0", pretrained=True), build_backbone("efficientnet_lite0")
    bn_t, bn_r = trained.trunk._bn0, random.trunk._bn0
    assert torch.allclose(bn_r.running_var, torch.ones_like(bn_r.running_var))
    assert not torch.allclose(bn_t.running_var, torch.ones_like(bn_t.running_var))

    # Trained first-layer filters are smooth: neighbouring weights correlate; random ones do not.
    def smoothness(conv):
        w = conv.weight.detach()
        a, b = w[..., :, :-1].flatten(), w[..., :, 1:].flatten()
        return float(torch.corrcoef(torch.stack([a, b]))[0, 1])

    assert smoothness(trained.trunk._conv_stem) > 0.3 > abs(smoothness(random.trunk._conv_stem))


def test_resnet_imagenet_offline_error_names_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("network unreachable")))
    with pytest.raises(PirlError) as err:
        build_backbone("resnet18", pretrained=True)
    msg = str(err.value)
    assert "resnet18-f37072fd.pth" in msg and str(tmp_path / "hub" / "hub" / "checkpoints") in msg


def test_resnet_imagenet_weights_found_in_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    source = build_backbone("resnet18").trunk.state_dict()
    source = {k: v + 0.5 if v.is_floating_point() else v for k, v in source.items()}
    path = REGISTRY["resnet18"].imagenet_file()
    path.parent.mkdir(parents=True)
    torch.save(source, path)
    model = build_backbone("resnet18", pretrained=True)
    assert torch.equal(model.trunk.conv1.weight, source["conv1.weight"])


def test_user_weights_file_is_loaded_and_checked(tmp_path):
    state = build_backbone("resnet18").trunk.state_dict()
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, tmp_path / "mine.pth")
    model = build_backbone("resnet18", weights_path=tmp_path / "mine.pth")
    assert torch.equal(model.trunk.conv1.weight, state["conv1.weight"])
    with pytest.raises(PirlError, match="do not fit resnet50"):
        build_backbone("resnet50", weights_path=tmp_path / "mine.pth")


def test_weights_files_never_unpickle_arbitrary_objects(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(PirlError, match="Cannot read"):
        load_weights_file(tmp_path / "evil.pth")


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(PirlError, match="choose one of"):
        backbones.build_backbone("vgg11")


def test_checking_for_imagenet_weights_never_reaches_the_network(monkeypatch, tmp_path):
    from pirl_core.evaluation.compare import imagenet_problem

    def no_network(*a, **k):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # an empty cache
    problem = imagenet_problem("resnet18")
    assert "not on this machine" in problem and "resnet18-" in problem
    assert imagenet_problem("efficientnet_lite0") is None  # installed with the package


@pytest.mark.parametrize("in_size,kernel,stride,padding,groups,bias", [
    (1, 3, 1, 1, 1, False),  # resnet layer4 on the jigsaw patches of a small image
    (2, 3, 2, 1, 1, False),  # its first, strided convolution
    (2, 7, 2, 3, 1, True),
    ((1, 3), (3, 5), 3, (1, 1), 1, True),  # not square: one position across, one down
    (1, 5, 1, 2, 6, True),  # depthwise (efficientnet's 5 x 5 on a 1 x 1 map)
    (3, 5, 2, 1, 6, False),
])
def test_a_convolution_with_one_output_position_gives_the_plain_convolutions_outputs_and_gradients(
        in_size, kernel, stride, padding, groups, bias):
    torch.manual_seed(0)
    plain = torch.nn.Conv2d(6, 6, kernel, stride, padding, groups=groups, bias=bias)
    small = use_small_map_convs(copy.deepcopy(plain))
    h, w = (in_size, in_size) if isinstance(in_size, int) else in_size
    x = torch.randn(4, 6, h, w, requires_grad=True)
    out_plain, out_small = plain(x), small(x)
    assert out_small.shape == out_plain.shape and out_small.shape[-2:] == (1, 1)
    torch.testing.assert_close(out_small, out_plain)
    grads = [torch.autograd.grad(out.square().sum(), [x, *conv.parameters()]) for out, conv in
             ((out_plain, plain), (out_small, small))]
    for g_plain, g_small in zip(*grads):
        torch.testing.assert_close(g_small, g_plain)


def _plain(name: str) -> torch.nn.Module:
    if name == "resnet18":
        net = torchvision.models.resnet18(weights=None)
        net.fc = torch.nn.Identity()
        return net
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    net._fc = torch.nn.Identity()
    return net


@pytest.mark.parametrize("name,patch", [("resnet18", 27), ("efficientnet_lite0", 37)])  # at 96 / 128 px
def test_jigsaw_patches_skip_the_padding_with_the_same_features_and_gradients(name, patch, monkeypatch):
    torch.manual_seed(0)
    fast, plain = build_backbone(name), _plain(name)
    plain.load_state_dict(fast.trunk.state_dict())
    general = []  # output sizes of the k x k convolutions (k > 1) that took the library's path
    conv2d = torch.nn.functional.conv2d

    def recorded(x, weight, *args, **kwargs):
        out = conv2d(x, weight, *args, **kwargs)
        if weight.shape[-2:] != (1, 1):
            general.append(tuple(out.shape[-2:]))
        return out

    monkeypatch.setattr(torch.nn.functional, "conv2d", recorded)
    patches = torch.randn(18, 3, patch, patch)  # the jigsaw patches of two images
    torch.manual_seed(1)  # efficientnet drops blocks at random in training
    out_fast = fast(patches)
    assert general and (1, 1) not in general  # every single-position convolution skipped its padding
    monkeypatch.undo()
    torch.manual_seed(1)
    out_plain = plain(patches) if name == "resnet18" else torch.flatten(plain._avg_pooling(
        plain.extract_features(patches)), 1)
    torch.testing.assert_close(out_fast, out_plain, rtol=1e-4, atol=1e-5)
    g_fast = torch.autograd.grad(out_fast.square().sum(), list(fast.parameters()))
    g_plain = torch.autograd.grad(out_plain.square().sum(), list(plain.parameters()))
    largest = max(float(g.abs().max()) for g in g_plain)  # gradients that are zero in exact maths (a bias
    for a, b in zip(g_fast, g_plain):                      # before BatchNorm) differ by rounding alone
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4 * largest)
