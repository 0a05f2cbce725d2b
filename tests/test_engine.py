import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pirl_core.engine.heads import ImageHead, PatchHead
from pirl_core.engine.loss import info_nce, pirl_loss
from pirl_core.engine.memory_bank import MemoryBank
from pirl_core.engine.views import ViewSizes, image_view, jigsaw_view, to_float


def test_loss_equals_a_hand_computation():
    q = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8]]), dim=1)
    bank = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]), dim=1)
    index = torch.tensor([0, 1])
    # candidates [0, 1, 2]; row 0 keeps {1, 2}, row 1 keeps {0, 2}
    keep = torch.tensor([[False, True, True], [True, False, True]])
    t = 0.5
    got = info_nce(q[None], bank[index], bank, keep, t)[0]

    def by_hand(qv, pos, negs):
        logits = [float(qv @ pos) / t] + [float(qv @ n) / t for n in negs]
        return -(logits[0] - math.log(sum(math.exp(v) for v in logits)))

    expected = [by_hand(q[0], bank[0], [bank[1], bank[2]]), by_hand(q[1], bank[1], [bank[0], bank[2]])]
    assert got.tolist() == pytest.approx(expected, rel=1e-5)

    total, terms = pirl_loss({"jigsaw": q, "image": q.flip(0)}, {"jigsaw": 0.3, "image": 0.7},
                             bank[index], bank, keep, t)
    assert float(total) == pytest.approx(0.3 * float(terms["jigsaw"]) + 0.7 * float(terms["image"]), rel=1e-6)
    assert float(terms["jigsaw"]) == pytest.approx(sum(expected) / 2, rel=1e-5)


def test_gradients_reach_backbone_and_both_heads():
    from pirl_core.engine.backbones import build_backbone
    from pirl_core.engine.model import PirlModel

    torch.manual_seed(0)
    model = PirlModel(build_backbone("resnet18"))
    x = torch.randn(4, 3, 32, 32)
    patches = torch.randn(4, 9, 3, 16, 16)
    f, g = model.embed_images(x), model.embed_jigsaw(patches)
    bank = MemoryBank.random(10, 128, list(range(10)))
    index = torch.arange(4)
    neg = bank.sample_negatives(index, 5)
    loss, _ = pirl_loss({"jigsaw": g, "image": f}, {"jigsaw": 0.5, "image": 0.5}, bank.vectors[index],
                        bank.vectors[neg.candidates], neg.keep)
    loss.backward()
    for name, module in [("backbone", model.backbone), ("f", model.image_head), ("g", model.patch_head)]:
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert all(gr is not None for gr in grads) and sum(float(gr.abs().sum()) for gr in grads) > 0, name


def test_heads_output_unit_vectors_of_128():
    f, g = ImageHead(512), PatchHead(512)
    assert torch.allclose(f(torch.randn(3, 512)).norm(dim=1), torch.ones(3))
    out = g(torch.randn(3 * 9, 512))
    assert out.shape == (3, 128) and torch.allclose(out.norm(dim=1), torch.ones(3))
    # the patch order matters: g sees the concatenation in the order given
    feats = torch.randn(9, 512)
    assert not torch.allclose(g(feats), g(feats.flip(0)))


def test_bank_update_is_momentum_mix_renormalised():
    bank = MemoryBank(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), ["a", "b"], momentum=0.5)
    bank.update(torch.tensor([0]), torch.tensor([[0.0, 1.0]]))
    assert torch.allclose(bank.vectors[0], torch.tensor([1.0, 1.0]) / math.sqrt(2))
    assert torch.allclose(bank.vectors[1], torch.tensor([0.0, 1.0]))
    assert torch.allclose(bank.vectors.norm(dim=1), torch.ones(2))


@pytest.mark.parametrize("n,k", [(10, 9), (10, 3), (1000, 999), (1_000_000, 4096)])
def test_negatives_exclude_the_positive_and_never_repeat(n, k):
    bank = MemoryBank(torch.randn(n, 8), list(range(n)))
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        index = torch.randperm(n, generator=gen)[: min(n, 16)]
        neg = bank.sample_negatives(index, k, gen).indices()
        assert neg.shape == (len(index), k)
        assert not (neg == index[:, None]).any()
        assert all(len(set(row.tolist())) == k for row in neg)


def test_near_copies_are_never_each_others_negatives():
    n = 40
    copies = [i - i % 3 if i < 12 else i for i in range(n)]  # four clusters of three copies, then singletons
    bank = MemoryBank(torch.randn(n, 8), list(range(n)), copies=copies)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        index = torch.randperm(n, generator=gen)[:16]
        neg = bank.sample_negatives(index, n - 1, gen)
        for row, i in enumerate(index.tolist()):
            kept = set(neg.candidates[neg.keep[row]].tolist())
            assert kept == {j for j in range(n) if copies[j] != copies[i]}  # every other image, no copy
    restored = MemoryBank.from_state_dict(bank.state_dict())  # a resumed run keeps them
    assert restored.copies.tolist() == copies


def test_the_loss_weighs_only_the_rows_kept_negatives():
    q = F.normalize(torch.randn(3, 2, 16), dim=-1)  # 3 views of 2 images
    bank = F.normalize(torch.randn(5, 16), dim=1)
    keep = torch.tensor([[False, True, False, True, True], [True, False, True, False, False]])
    got = info_nce(q, bank[:2], bank, keep, 0.2)
    for row in range(2):
        logits = torch.cat([(q[:, row] * bank[row]).sum(-1, keepdim=True), q[:, row] @ bank[keep[row]].T], 1) / 0.2
        torch.testing.assert_close(got[:, row], -F.log_softmax(logits, 1)[:, 0])


def test_negatives_over_n_minus_1_is_an_error():
    bank = MemoryBank(torch.randn(10, 8), list(range(10)))
    with pytest.raises(ValueError, match="N - 1 = 9"):
        bank.sample_negatives(torch.tensor([0]), 10)


@pytest.mark.parametrize("image_size", [64, 96, 128, 224])
def test_jigsaw_shapes_follow_the_paper_proportions(image_size):
    sizes = ViewSizes.for_image_size(image_size)
    if image_size == 224:
        assert (sizes.jigsaw, sizes.cell, sizes.patch) == (255, 85, 64)
    x = torch.rand(2, 3, int(image_size * 256 / 224), int(image_size * 256 / 224))
    gen = torch.Generator().manual_seed(0)
    patches, order = jigsaw_view(x, sizes, gen)
    assert patches.shape == (2, 9, 3, sizes.patch, sizes.patch)
    assert sorted(order[0].tolist()) == list(range(9))
    assert image_view(x, image_size, gen).shape == (2, 3, image_size, image_size)


def test_patch_order_changes_between_calls():
    x = torch.rand(1, 3, 110, 110)
    gen = torch.Generator().manual_seed(0)
    orders = {tuple(jigsaw_view(x, ViewSizes.for_image_size(96), gen)[1][0].tolist()) for _ in range(5)}
    assert len(orders) > 1


def test_jigsaw_patches_come_from_their_grid_cells():
    # A horizontal ramp image: patch brightness grows with its column in the unshuffled grid.
    ramp = torch.linspace(0, 1, 255).expand(1, 3, 255, 255).contiguous()
    from pirl_core.engine import views

    gen = torch.Generator().manual_seed(0)
    sizes = ViewSizes.for_image_size(224)
    original = views.color_distort
    views.color_distort = lambda x, gen, **kw: x  # isolate the geometry
    try:
        patches, order = jigsaw_view(ramp, sizes, gen, scale=(1.0, 1.0))
    finally:
        views.color_distort = original
    unshuffled = patches[0, torch.argsort(order[0])]
    col_means = unshuffled.mean((1, 2, 3)).view(3, 3)
    assert (col_means[:, 0] < col_means[:, 1]).all() and (col_means[:, 1] < col_means[:, 2]).all()


def test_to_float_accepts_channels_last_uint8():
    u8 = torch.full((2, 8, 8, 3), 255, dtype=torch.uint8)
    assert to_float(u8).shape == (2, 3, 8, 8) and float(to_float(u8).max()) == 1.0


def test_views_are_deterministic_for_a_generator():
    x = torch.rand(3, 3, 73, 73)
    a = image_view(x, 64, torch.Generator().manual_seed(5))
    b = image_view(x, 64, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert np.isfinite(a.numpy()).all()


def test_the_scan_augmentation_bends_intensity_and_blurs_and_keeps_a_scan_gray():
    from pirl_core.engine.views import color_distort, scan_distort

    checker = ((torch.arange(32)[:, None] + torch.arange(32)[None]) % 2).float().expand(64, 3, 32, 32) * 0.8 + 0.1
    gen = torch.Generator().manual_seed(0)
    blurred = scan_distort(checker, gen, blur_px=1.0, p_gamma=0.0, p_blur=1.0)
    smoother = blurred.var((1, 2, 3)) / checker.var((1, 2, 3))
    assert (smoother <= 1 + 1e-5).all() and (smoother < 0.5).float().mean() > 0.5  # sigma 0.05 to 1 px
    mid = torch.full((64, 3, 4, 4), 0.5)
    bent = scan_distort(mid, gen, blur_px=1.0, p_gamma=1.0, p_blur=0.0)[:, 0, 0, 0]
    assert bent.min() >= 0.5 ** 1.4 - 1e-6 and bent.max() <= 0.5 ** 0.7 + 1e-6 and bent.std() > 0.02
    photo = color_distort(checker, torch.Generator().manual_seed(1))
    scan = color_distort(checker, torch.Generator().manual_seed(1), augment="scan", blur_px=1.0)
    assert not torch.equal(photo, scan)
    assert torch.equal(scan[:, 0], scan[:, 1]) and torch.equal(scan[:, 1], scan[:, 2])  # gray stays gray


def test_rotation_view_uses_all_three_turns_and_rotates_the_content():
    from pirl_core.engine import views
    from pirl_core.engine.views import rotation_view

    # An asymmetric image: bright top-left corner only.
    x = torch.zeros(64, 3, 40, 40)
    x[:, :, :10, :10] = 1.0
    original = views.image_view
    views.image_view = lambda images, size, gen, scale, part=None: images[:, :, :size, :size]  # isolate the rotation
    try:
        out, turns = rotation_view(x, 40, torch.Generator().manual_seed(0))
    finally:
        views.image_view = original
    assert set(turns.tolist()) == {1, 2, 3}
    for img, k in zip(out, turns.tolist()):
        assert torch.equal(img, torch.rot90(x[0], k, dims=(1, 2)))
        assert not torch.equal(img, x[0])


def test_combined_pretext_loss_is_the_weighted_sum_of_its_terms():
    from pirl_core.engine.config import PretrainConfig

    cfg = PretrainConfig(pretext="jigsaw+rotation", pretext_weight=0.6, rotation_share=0.25)
    w = cfg.loss_weights
    assert w == pytest.approx({"jigsaw": 0.45, "rotation": 0.15, "image": 0.4}) and sum(w.values()) == pytest.approx(1)
    gen = torch.Generator().manual_seed(0)
    views = {k: F.normalize(torch.randn(4, 8, generator=gen), dim=1) for k in w}
    bank = F.normalize(torch.randn(6, 8, generator=gen), dim=1)
    keep = torch.ones(4, 6, dtype=torch.bool)
    keep[torch.arange(4), torch.arange(4)] = False
    total, terms = pirl_loss(views, w, bank[:4], bank, keep, 0.1)
    assert set(terms) == {"jigsaw", "rotation", "image"}
    assert float(total) == pytest.approx(sum(w[k] * float(terms[k]) for k in w), rel=1e-6)
    for k in w:  # each term alone equals its own InfoNCE
        assert float(terms[k]) == pytest.approx(float(info_nce(views[k][None], bank[:4], bank, keep, 0.1).mean()))


def test_loss_is_ln_k_plus_1_when_every_vector_is_the_same():
    """Closed form: positive and all K negatives score alike, so softmax gives the positive 1 / (K + 1)."""
    k, b = 7, 4
    v = F.normalize(torch.ones(1, 16), dim=1)
    bank = MemoryBank(v.expand(20, -1).clone(), list(range(20)))
    neg = bank.sample_negatives(torch.arange(b), k, torch.Generator().manual_seed(0))
    total, terms = pirl_loss({"jigsaw": v.expand(b, -1), "image": v.expand(b, -1)}, {"jigsaw": 0.5, "image": 0.5},
                             bank.vectors[:b], bank.vectors[neg.candidates], neg.keep, 0.07)
    assert float(total) == pytest.approx(math.log(k + 1), rel=1e-5)
    assert all(float(t) == pytest.approx(math.log(k + 1), rel=1e-5) for t in terms.values())
