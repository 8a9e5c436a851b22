import pytest
import torch
import torch.nn.functional as F

from sagan_core.layers import SelfAttention, sn_conv
from sagan_core.losses import d_hinge_loss, g_hinge_loss
from sagan_core.models import Discriminator, Generator


def _attention(channels=16, gamma=0.7):
    torch.manual_seed(0)
    attn = SelfAttention(channels).eval()  # eval: spectral norm stops iterating, weights are fixed
    with torch.no_grad():
        attn.gamma.fill_(gamma)
    return attn


def test_attention_matches_explicit_softmax_implementation():
    attn = _attention()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        B, C, H, W = x.shape
        q = F.conv2d(x, attn.f.weight).flatten(2)  # (B, C/8, N)
        k = F.max_pool2d(F.conv2d(x, attn.g.weight), 2).flatten(2)  # (B, C/8, N/4)
        v = F.max_pool2d(F.conv2d(x, attn.h.weight), 2).flatten(2)  # (B, C/2, N/4)
        beta = torch.softmax(torch.einsum("bcn,bcm->bnm", q, k), dim=-1)  # (B, N, N/4)
        o = torch.einsum("bcm,bnm->bcn", v, beta).reshape(B, C // 2, H, W)
        expected = x + 0.7 * F.conv2d(o, attn.o.weight)
        fast = attn(x)
        readable, attn_map = attn.forward_with_map(x)
    torch.testing.assert_close(fast, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(readable, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attn_map, beta)
    assert not torch.allclose(fast, x)


def test_attention_with_zero_gamma_returns_input_exactly():
    attn = _attention(gamma=0.0)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        assert torch.equal(attn(x), x)


def test_attention_map_has_n_by_n_over_4_rows_summing_to_one():
    attn = _attention()
    with torch.no_grad():
        _, attn_map = attn.forward_with_map(torch.randn(3, 16, 8, 8))
    assert attn_map.shape == (3, 64, 16)
    torch.testing.assert_close(attn_map.sum(-1), torch.ones(3, 64))


@pytest.mark.parametrize("resolution, attn_size", [(32, 16), (64, 32), (128, 64)])
def test_generator_and_discriminator_shapes_and_attention_placement(resolution, attn_size):
    torch.manual_seed(0)
    G = Generator(z_dim=16, num_classes=5, resolution=resolution, ch=4)
    D = Discriminator(num_classes=5, resolution=resolution, ch=8)
    seen = {}
    for name, net in (("g", G), ("d", D)):
        for m in net.modules():
            if isinstance(m, SelfAttention):
                m.register_forward_pre_hook(
                    lambda m, args, name=name: seen.update({name: args[0].shape})
                )
    y = torch.tensor([0, 4])
    x = G(torch.randn(2, 16), y)
    logits = D(x, y)
    assert x.shape == (2, 3, resolution, resolution)
    assert x.min() >= -1 and x.max() <= 1
    assert logits.shape == (2,)
    assert seen["g"][-1] == attn_size
    assert seen["d"][-1] == resolution // 2  # D attends after its first (downsampling) block
    assert set(G.attention_gammas().values()) == {0.0}


def test_spectral_norm_keeps_top_singular_value_near_one():
    torch.manual_seed(0)
    conv = sn_conv(16, 32, 3)
    with torch.no_grad():
        conv.parametrizations.weight.original.mul_(10.0)  # far from unit norm before normalising
        for _ in range(20):  # power iterations run in train mode on each forward
            conv(torch.randn(1, 16, 4, 4))
    conv.eval()
    sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
    assert abs(float(sigma) - 1.0) < 0.02


def test_hinge_losses_give_known_values():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - real) = [0, 0.5, 2]
    fake = torch.tensor([-2.0, 0.0, 1.0])  # relu(1 + fake) = [0, 1, 2]
    assert float(d_hinge_loss(real, fake)) == pytest.approx(2.5 / 3 + 1.0)
    assert float(g_hinge_loss(fake)) == pytest.approx(1.0 / 3)
