"""volseg's torch-only UNet against MONAI's ``UNet``: same state dict, same outputs."""

from __future__ import annotations

import pytest
import torch

from volseg.models.unet import UNet

CASES = [
    # spatial_dims, channels, strides, num_res_units, norm, shape
    (3, (4, 8, 16), (2, 2), 2, "batch", (2, 1, 16, 16, 16)),
    (3, (4, 8), (2,), 1, "instance", (1, 1, 8, 16, 16)),
    (3, (4, 8, 8), ((1, 2, 2), 2), 0, "batch", (2, 2, 8, 16, 16)),
    (3, (3, 6, 12, 24), (2, 2, 2), 2, "instance", (1, 1, 16, 16, 16)),
    (2, (4, 8, 16), (2, 2), 2, "batch", (3, 3, 32, 32)),
    (2, (4, 8), (2,), 0, "instance", (2, 1, 16, 16)),
]


def _pair(dims: int, channels: tuple[int, ...], strides: tuple, units: int, norm: str,
          cin: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    from monai.networks.nets import UNet as MonaiUNet

    torch.manual_seed(0)
    ref = MonaiUNet(spatial_dims=dims, in_channels=cin, out_channels=5, channels=channels,
                    strides=strides, num_res_units=units, norm=norm.upper(), dropout=0.1)
    ours = UNet(dims, cin, 5, channels, strides, num_res_units=units,
                norm=norm, dropout=0.1)  # type: ignore[arg-type]
    return ref, ours


@pytest.mark.parametrize(("dims", "channels", "strides", "units", "norm", "shape"), CASES)
def test_same_modules_and_outputs_as_monai(dims: int, channels: tuple[int, ...],
                                           strides: tuple, units: int, norm: str,
                                           shape: tuple[int, ...]) -> None:
    ref, ours = _pair(dims, channels, strides, units, norm, shape[1])
    ref_state = ref.state_dict()
    assert list(ours.state_dict()) == list(ref_state)  # same names, same order
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in ref_state.items()}
    # MONAI's weights (and running statistics after a training step) load strictly
    ref.train()
    with torch.no_grad():
        ref(torch.randn(*shape))
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert str(ours.model) .count("Dropout") == str(ref.model).count("Dropout")
    ref.eval()
    ours.eval()
    x = torch.randn(*shape)
    with torch.inference_mode():
        expected, got = ref(x), ours(x)
    assert got.shape == expected.shape == (shape[0], 5, *shape[2:])
    assert torch.equal(got, expected)
    # channels-last (how volseg runs networks on CPUs) agrees too
    layout = torch.channels_last_3d if dims == 3 else torch.channels_last
    ref_cl = ref.to(memory_format=layout)  # type: ignore[call-overload]
    ours_cl = ours.to(memory_format=layout)  # type: ignore[call-overload]
    with torch.inference_mode():
        xl = x.contiguous(memory_format=layout)
        assert torch.equal(ours_cl(xl), ref_cl(xl))


def test_gradients_match_monai() -> None:
    ref, ours = _pair(3, (4, 8, 16), (2, 2), 2, "batch", 1)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.train()
    ours.train()
    torch.manual_seed(1)
    x = torch.randn(2, 1, 16, 16, 16)
    for net in (ref, ours):
        torch.manual_seed(2)  # same dropout masks
        net(x).square().mean().backward()
    for (name, a), (_, b) in zip(ref.named_parameters(), ours.named_parameters(), strict=True):
        assert a.grad is not None and b.grad is not None, name
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="channels"):
        UNet(3, 1, 2, (4,), ())
    with pytest.raises(ValueError, match="strides"):
        UNet(3, 1, 2, (4, 8, 16), (2,))


@pytest.mark.parametrize("dims", [2, 3])
def test_folded_batch_norm_gives_the_same_logits(dims: int) -> None:
    from volseg.models.unet import fold_batch_norm

    torch.manual_seed(0)
    net = UNet(dims, 1, 7, (4, 8, 16), (2, 2), num_res_units=2, norm="batch")
    net.train()
    with torch.no_grad():  # running statistics that are not the identity
        for _ in range(3):
            net(torch.randn(2, 1, *(16,) * dims) * 3 + 1)
    net.eval()
    x = torch.randn(2, 1, *(16,) * dims)
    with torch.inference_mode():
        expected = net(x)
        folded = fold_batch_norm(net)
        got = folded(x)
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d))
                   for m in folded.modules())
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="eval"):
        fold_batch_norm(UNet(dims, 1, 2, (4, 8), (2,), norm="batch").train())
    inst = UNet(dims, 1, 2, (4, 8), (2,), norm="instance").eval()  # nothing to fold
    before = [type(m) for m in inst.modules()]
    assert [type(m) for m in fold_batch_norm(inst).modules()] == before


@pytest.mark.parametrize(("dims", "strides"), [(3, (2, 2)), (3, ((1, 2, 2), 2)), (2, (2, 2))])
def test_fused_activations_give_the_same_logits_bit_for_bit(dims: int, strides: tuple) -> None:
    from volseg.models.unet import fold_batch_norm, fuse_activations

    torch.manual_seed(0)
    net = UNet(dims, 2, 7, (4, 8, 16), strides, num_res_units=2, norm="batch", dropout=0.1)
    with torch.no_grad():  # PReLU slopes other than the initial 0.25
        for m in net.modules():
            if isinstance(m, torch.nn.PReLU):
                m.weight.uniform_(-0.5, 0.5)
    net = fold_batch_norm(net.eval())
    layout = torch.channels_last_3d if dims == 3 else torch.channels_last
    net = net.to(memory_format=layout)  # type: ignore[call-overload]
    x = torch.randn(2, 2, *(16,) * dims).contiguous(memory_format=layout)
    with torch.inference_mode():
        expected = net(x)
        fused = fuse_activations(net)
        got = fused(x)
    names = {type(m).__name__ for m in fused.modules()}
    if "_ConvPReLU" not in names:
        pytest.skip("this torch has no oneDNN post-op convolutions")
    assert "PReLU" not in names
    assert torch.equal(got, expected)
    with torch.enable_grad():  # autograd on: the two ops separately, the same values
        torch.testing.assert_close(fused(x).detach(), expected, rtol=0, atol=1e-6)
