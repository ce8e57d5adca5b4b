"""Golden tests: every loss against its equation, computed independently in NumPy."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from compressor.models import UnknownNameError, create_model
from torch import nn

from compressor.losses import LOSSES, LossContext, Outputs, PrepareContext, build_objective, parse_method
from compressor.losses.crd import nce_loss

B, K = 6, 5


def rng(seed=0):
    return np.random.default_rng(seed)


def outputs(logits, feats=(), embedding=None, labels=None):
    logits = torch.as_tensor(logits, dtype=torch.float64)
    b = logits.shape[0]
    emb = torch.as_tensor(embedding if embedding is not None else np.zeros((b, 3)), dtype=torch.float64)
    lab = torch.as_tensor(labels if labels is not None else np.arange(b) % logits.shape[1])
    return Outputs(logits, [torch.as_tensor(f, dtype=torch.float64) for f in feats], emb, lab, torch.arange(b))


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def kl_np(p, q):
    return float((p * (np.log(p) - np.log(q))).sum(1).mean())


def ctx(s_feats, t_feats, s_embed=3, t_embed=3, num_data=100, preact=False):
    return LossContext(tuple(s_feats), tuple(t_feats), s_embed, t_embed, K, num_data, preact)


def identity_bn(bn):
    bn.eval()
    bn.running_mean.zero_()
    bn.running_var.fill_(1 - bn.eps)  # so that (x - 0) / sqrt(var + eps) = x


# --- logit losses -------------------------------------------------------------------------


def test_kd():
    zs, zt, T = rng(0).normal(size=(B, K)), rng(1).normal(size=(B, K)) * 3, 4.0
    value = LOSSES.get("kd")(T=T)(outputs(zs), outputs(zt))
    assert float(value) == pytest.approx(kl_np(softmax(zt / T), softmax(zs / T)) * T**2, rel=1e-10)


def test_skd():
    zs, zt, T = rng(0).normal(size=(B, K)), rng(1).normal(size=(B, K)) * 3, 4.0
    r = np.linalg.norm(zt, axis=1).mean()
    ns = zs / np.linalg.norm(zs, axis=1, keepdims=True) * r
    nt = zt / np.linalg.norm(zt, axis=1, keepdims=True) * r
    value = LOSSES.get("skd")(T=T)(outputs(zs), outputs(zt))
    assert float(value) == pytest.approx(kl_np(softmax(nt / T), softmax(ns / T)) * T**2, rel=1e-8)


def test_skd_script_variant_equals_the_authors_skd_main():
    """Transcription of skd_main.py's SKD branch (forjiuzhou/Spherical-Knowledge-Distillation), its
    (B,) x (B, 1) broadcast and / B / B included; the objective's CE reads the rescaled logits as
    theirs does. The default variant gives another value on the same tensors."""
    zs = torch.tensor(rng(0).normal(size=(B, K)), requires_grad=True)
    zt, labels, T, alpha = torch.tensor(rng(1).normal(size=(B, K)) * 3), torch.arange(B) % K, 4.0, 0.9
    tea_std, stu_std = torch.std(zt, dim=-1, keepdim=True), torch.std(zs, dim=-1, keepdim=True)
    p_s, p_t = F.log_softmax(zs / stu_std * tea_std / T, dim=1), F.softmax(zt / T, dim=1)
    ones = torch.ones(B, 1, dtype=zs.dtype)
    loss_kd = torch.sum(torch.sum(F.kl_div(p_s, p_t, reduction="none"), dim=-1) * (T * T * ones)) / B / B * alpha
    expected = loss_kd + nn.CrossEntropyLoss()(zs / stu_std * tea_std, labels) * (1 - alpha)
    obj = build_objective("skd", ctx([], []), gamma=1 - alpha, weights={"skd": alpha}, params={"skd": {"T": T, "variant": "script"}})
    s, t = Outputs(zs, [], None, labels, torch.arange(B)), Outputs(zt, [], None, labels, torch.arange(B))
    got = obj(s, t)["loss"]
    assert float(got) == pytest.approx(float(expected), rel=1e-10)
    torch.testing.assert_close(torch.autograd.grad(got, zs)[0], torch.autograd.grad(expected, zs)[0])
    raw = build_objective("skd", ctx([], []), params={"skd": {"variant": "script", "ce_scaled": False}})(s, t)
    assert float(raw["ce"]) == pytest.approx(float(F.cross_entropy(zs, labels)), rel=1e-12)
    norm = build_objective("skd", ctx([], []), params={"skd": {"T": T}})(s, t)
    assert abs(float(norm["skd"]) - float(loss_kd) / alpha) > 1e-3  # two readings, two values
    with pytest.raises(ValueError, match="variant"):
        LOSSES.get("skd")(variant="paper")


def test_wsl():
    zs, zt, T = rng(0).normal(size=(B, K)), rng(1).normal(size=(B, K)) * 2, 2.0
    y = np.array([0, 1, 2, 3, 4, 0])
    soft_ce = -(softmax(zt / T) * np.log(softmax(zs / T))).sum(1)
    ce_s = -np.log(softmax(zs)[np.arange(B), y])
    ce_t = -np.log(softmax(zt)[np.arange(B), y])
    w = 1 - np.exp(-np.maximum(ce_s / (ce_t + 1e-7), 0))
    value = LOSSES.get("wsl")(T=T)(outputs(zs, labels=y), outputs(zt, labels=y))
    assert float(value) == pytest.approx(T**2 * (w * soft_ce).mean(), rel=1e-8)


def test_dkd():
    zs, zt, T, alpha, beta = rng(0).normal(size=(B, K)), rng(1).normal(size=(B, K)) * 2, 4.0, 1.0, 8.0
    y = np.array([0, 1, 2, 3, 4, 1])
    ps, pt = softmax(zs / T), softmax(zt / T)
    gt_s, gt_t = ps[np.arange(B), y], pt[np.arange(B), y]
    bs, bt = np.stack([gt_s, 1 - gt_s], 1), np.stack([gt_t, 1 - gt_t], 1)
    tckd = kl_np(bt, bs) * T**2
    # non-target distribution: softmax over the logits with the true class deleted
    keep = np.ones((B, K), bool)
    keep[np.arange(B), y] = False
    nts, ntt = softmax(zs[keep].reshape(B, K - 1) / T), softmax(zt[keep].reshape(B, K - 1) / T)
    nckd = kl_np(ntt, nts) * T**2
    loss = LOSSES.get("dkd")(alpha=alpha, beta=beta, T=T, warmup=0)
    assert float(loss(outputs(zs, labels=y), outputs(zt, labels=y))) == pytest.approx(alpha * tckd + beta * nckd, rel=1e-6)
    ramped = LOSSES.get("dkd")(warmup=4)
    ramped.set_epoch(0)
    full = LOSSES.get("dkd")(warmup=0)
    s, t = outputs(zs, labels=y), outputs(zt, labels=y)
    assert float(ramped(s, t)) == pytest.approx(0.25 * float(full(s, t)))


@pytest.mark.parametrize("name", ["kd", "skd", "dkd"])
def test_logit_losses_vanish_when_student_equals_teacher(name):
    z = rng(3).normal(size=(B, K))
    assert float(LOSSES.get(name)()(outputs(z), outputs(z.copy()))) == pytest.approx(0.0, abs=1e-10)


# --- feature losses -----------------------------------------------------------------------


def feats(seed, shapes):
    return [rng(seed + i).normal(size=(B, *s)) for i, s in enumerate(shapes)]


def at_map(f, p):
    a = (np.abs(f) ** p).mean(1).reshape(len(f), -1)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def pool_to(f, h):
    b, c, fh, fw = f.shape
    r = fh // h
    return f.reshape(b, c, h, r, h, r).mean((3, 5))


def test_at_with_spatial_matching():
    fs, ft = feats(0, [(4, 8, 8), (6, 4, 4)]), feats(5, [(3, 4, 4), (2, 4, 4)])
    expected = ((at_map(pool_to(fs[0], 4), 2) - at_map(ft[0], 2)) ** 2).mean() + ((at_map(fs[1], 2) - at_map(ft[1], 2)) ** 2).mean()
    value = LOSSES.get("at")(p=2)(outputs(np.zeros((B, K)), fs), outputs(np.zeros((B, K)), ft))
    assert float(value) == pytest.approx(expected, rel=1e-10)


def test_fitnet_with_identity_regressor():
    fs, ft = feats(0, [(3, 4, 4)]), feats(1, [(3, 4, 4)])
    loss = LOSSES.get("fitnet").build(ctx([(3, 4, 4)], [(3, 4, 4)])).double()
    reg = loss.regressors[0]
    with torch.no_grad():
        reg.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        reg.conv.bias.zero_()
    identity_bn(reg.bn)
    value = loss(outputs(np.zeros((B, K)), fs), outputs(np.zeros((B, K)), ft))
    assert value.item() == pytest.approx(((np.maximum(fs[0], 0) - ft[0]) ** 2).mean(), rel=1e-6)
    post = [np.maximum(f, 0) for f in fs]
    assert loss(outputs(np.zeros((B, K)), post), outputs(np.zeros((B, K)), post)).item() == pytest.approx(0, abs=1e-10)


def test_fitnet_regressor_shapes():
    from compressor.losses.adapters import ConvRegressor

    for s, t in [((4, 8, 8), (6, 4, 4)), ((4, 4, 4), (6, 8, 8)), ((4, 6, 6), (2, 4, 4)), ((4, 3, 3), (5, 7, 7))]:
        assert ConvRegressor(s, t)(torch.zeros(2, *s)).shape == (2, *t)


def test_vid_gaussian_nll():
    fs, ft = feats(0, [(3, 2, 2)]), feats(1, [(3, 2, 2)])
    loss = LOSSES.get("vid").build(ctx([(3, 2, 2)], [(3, 2, 2)])).double()
    pair = loss.pairs[0]
    with torch.no_grad():
        for m in pair.regressor:
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        pair.log_scale.copy_(torch.tensor([0.0, 1.0, -1.0]))
    var = (np.log1p(np.exp([0.0, 1.0, -1.0])) + 1e-5).reshape(1, 3, 1, 1)
    mean = np.maximum(fs[0], 0)  # conv-relu-conv-relu-conv with identity weights
    expected = (0.5 * ((mean - ft[0]) ** 2 / var + np.log(var))).mean()
    value = loss(outputs(np.zeros((B, K)), fs), outputs(np.zeros((B, K)), ft))
    assert float(value) == pytest.approx(expected, rel=1e-8)


def test_nst_mmd():
    fs, ft = feats(0, [(3, 2, 2)]), feats(1, [(4, 2, 2)])

    def norm(f):
        f = f.reshape(B, f.shape[1], -1)
        return f / np.linalg.norm(f, axis=2, keepdims=True)

    s, t = norm(fs[0]), norm(ft[0])
    k = lambda a, b: (np.einsum("bid,bjd->bij", a, b) ** 2).mean()  # noqa: E731
    value = LOSSES.get("nst")()(outputs(np.zeros((B, K)), fs), outputs(np.zeros((B, K)), ft))
    assert float(value) == pytest.approx(k(t, t) - 2 * k(s, t) + k(s, s), rel=1e-10)


def test_ab_alternative_l2():
    fs, ft = feats(0, [(3, 2, 2), (3, 2, 2)]), feats(5, [(3, 2, 2), (3, 2, 2)])
    loss = LOSSES.get("ab").build(ctx([(3, 2, 2)] * 2, [(3, 2, 2)] * 2), margin=0.5).double()
    for conn in loss.connectors:
        with torch.no_grad():
            conn[0].weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        identity_bn(conn[1])
    m, expected = 0.5, 0.0
    for i, (s, t) in enumerate(zip(fs, ft, strict=True)):
        raw = (s + m) ** 2 * ((s > -m) & (t <= 0)) + (s - m) ** 2 * ((s <= m) & (t > 0))
        expected += 2.0 ** (i - 1) * raw.sum() / B / 1000 * 3
    value = loss(outputs(np.zeros((B, K)), fs), outputs(np.zeros((B, K)), ft))
    assert float(value) == pytest.approx(expected, rel=1e-8)
    assert float(loss.init_loss(outputs(np.zeros((B, K)), fs), outputs(np.zeros((B, K)), ft))) == pytest.approx(expected, rel=1e-8)


def test_fsp_matrices():
    shapes = [(3, 4, 4), (3, 2, 2), (2, 2, 2)]
    fs, ft = feats(0, shapes), feats(10, shapes)

    def g(a, b):
        if a.shape[2] > b.shape[2]:
            a = pool_to(a, b.shape[2])
        return np.einsum("bih,bjh->bij", a.reshape(B, a.shape[1], -1), b.reshape(B, b.shape[1], -1)) / (a.shape[2] * a.shape[3])

    expected = sum(((g(fs[i], fs[i + 1]) - g(ft[i], ft[i + 1])) ** 2).mean() for i in range(2))
    loss = LOSSES.get("fsp").build(ctx(shapes, shapes))
    assert float(loss(outputs(np.zeros((B, K)), fs), outputs(np.zeros((B, K)), ft))) == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="equal channel counts"):
        LOSSES.get("fsp").build(ctx(shapes, [(4, 4, 4), (3, 2, 2), (2, 2, 2)]))


def test_sp():
    fs, ft = feats(0, [(3, 2, 2)]), feats(1, [(5, 2, 2)])

    def gram(f):
        f = f.reshape(B, -1)
        g = f @ f.T
        return g / np.linalg.norm(g, axis=1, keepdims=True)

    expected = ((gram(fs[0]) - gram(ft[0])) ** 2).sum() / B**2
    assert float(LOSSES.get("sp")()(outputs(np.zeros((B, K)), fs), outputs(np.zeros((B, K)), ft))) == pytest.approx(expected, rel=1e-10)


def test_pkt():
    es, et = rng(0).normal(size=(B, 4)), rng(1).normal(size=(B, 7))

    def cond(x):
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        s = (x @ x.T + 1) / 2
        return s / s.sum(1, keepdims=True)

    ps, pt = cond(es), cond(et)
    expected = (pt * np.log((pt + 1e-7) / (ps + 1e-7))).mean()
    value = LOSSES.get("pkt")()(outputs(np.zeros((B, K)), embedding=es), outputs(np.zeros((B, K)), embedding=et))
    assert float(value) == pytest.approx(expected, rel=1e-6)


def huber(a, b):
    d = np.abs(a - b)
    return np.where(d < 1, 0.5 * d**2, d - 0.5).mean()


def test_rkd():
    es, et = rng(0).normal(size=(B, 4)), rng(1).normal(size=(B, 7))

    def dist(e):
        d = np.linalg.norm(e[:, None] - e[None], axis=2)
        return d / d[d > 0].mean()

    def angles(e):
        out = np.zeros((B, B, B))
        for j in range(B):
            for i in range(B):
                for k in range(B):
                    u, v = e[i] - e[j], e[k] - e[j]
                    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
                    out[j, i, k] = (u / max(nu, 1e-12)) @ (v / max(nv, 1e-12))
        return out.ravel()

    expected = 25 * huber(dist(es), dist(et)) + 50 * huber(angles(es), angles(et))
    value = LOSSES.get("rkd")()(outputs(np.zeros((B, K)), embedding=es), outputs(np.zeros((B, K)), embedding=et))
    assert float(value) == pytest.approx(expected, rel=1e-6)


def test_cc():
    fs, ft = feats(0, [(3, 2, 2)]), feats(1, [(5, 4, 4)])

    def corr(f):
        x = f.mean((2, 3))
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        d2 = ((x[:, None] - x[None]) ** 2).sum(2)
        return np.exp(-0.4 * d2)

    expected = ((corr(fs[0]) - corr(ft[0])) ** 2).mean()
    assert float(LOSSES.get("cc")()(outputs(np.zeros((B, K)), fs), outputs(np.zeros((B, K)), ft))) == pytest.approx(expected, rel=1e-8)


def test_nce_loss():
    scores = rng(0).uniform(0.1, 2.0, size=(B, 9))
    n = 50
    mpn = 8 / n
    expected = -(np.log(scores[:, 0] / (scores[:, 0] + mpn + 1e-7)).sum() + np.log(mpn / (scores[:, 1:] + mpn + 1e-7)).sum()) / B
    assert float(nce_loss(torch.tensor(scores), n)) == pytest.approx(expected, rel=1e-10)


def test_crd_memory_and_gradients():
    torch.manual_seed(0)
    loss = LOSSES.get("crd").build(ctx([], [], s_embed=4, t_embed=6, num_data=40), nce_k=8)
    emb = torch.randn(B, 4, requires_grad=True)
    s = Outputs(torch.zeros(B, K), [], emb, torch.zeros(B, dtype=torch.long), torch.arange(B))
    t = Outputs(torch.zeros(B, K), [], torch.randn(B, 6), torch.zeros(B, dtype=torch.long), torch.arange(B))
    before = loss.memory.memory_s[:B].clone()
    value = loss(s, t)
    value.backward()
    assert torch.isfinite(value) and emb.grad.abs().sum() > 0
    assert not torch.equal(before, loss.memory.memory_s[:B])  # positives updated
    torch.testing.assert_close(loss.memory.memory_s[:B].norm(dim=1), torch.ones(B))
    assert loss.memory.z[0] > 0  # normalising constant fixed on the first batch


def test_afd_matches_numpy():
    torch.manual_seed(0)
    s_shapes, t_shapes = [(3, 4, 4), (4, 2, 2)], [(5, 4, 4), (6, 2, 2)]
    loss = LOSSES.get("afd").build(ctx(s_shapes, t_shapes), qk_dim=8).double().eval()
    fs, ft = feats(0, s_shapes), feats(10, t_shapes)
    value = float(loss(outputs(np.zeros((B, K)), fs), outputs(np.zeros((B, K)), ft)))

    def lin_bn(seq, x):
        lin, bn = seq[0], seq[1]
        y = x @ lin.weight.detach().numpy().T + lin.bias.detach().numpy()
        return (y - bn.running_mean.numpy()) / np.sqrt(
            bn.running_var.numpy() + bn.eps
        ) * bn.weight.detach().numpy() + bn.bias.detach().numpy()

    q = np.stack([lin_bn(m, f.mean((2, 3))) for m, f in zip(loss.query, ft, strict=True)], 1)
    key = np.stack([np.maximum(lin_bn(m[0], f.mean((2, 3))), 0) for m, f in zip(loss.key, fs, strict=True)], 1)
    bk = lin_bn(loss.bilinear, key.reshape(B * 2, -1)).reshape(B, 2, 2, 8)
    logit = (np.einsum("bstq,btq->bts", bk, q) + loss.p_t.detach().numpy() @ loss.p_s.detach().numpy().T) / np.sqrt(8)
    att = np.exp(logit - logit.max(2, keepdims=True))
    att /= att.sum(2, keepdims=True)
    expected = 0.0
    for i, f in enumerate(ft):
        h = f.shape[2]
        vt = (f**2).mean(1).reshape(B, -1)
        vt /= np.linalg.norm(vt, axis=1, keepdims=True)
        vs = []
        for g in fs:
            m = (g**2).mean(1)
            if m.shape[1] >= h:  # adaptive average pooling down by an integer factor
                r = m.shape[1] // h
                m = m.reshape(B, h, r, h, r).mean((2, 4))
            else:  # up by an integer factor: each input cell is replicated
                r = h // m.shape[1]
                m = m.repeat(r, axis=1).repeat(r, axis=2)
            vs.append(m.reshape(B, -1))
        vs = np.stack(vs, 1)
        vs /= np.linalg.norm(vs, axis=2, keepdims=True)
        expected += (((vs - vt[:, None]) ** 2).mean(2) * att[:, i]).sum(1).mean()
    assert value == pytest.approx(expected, rel=1e-8)


def test_ft_vanishes_when_translator_equals_paraphraser():
    shape = (4, 2, 2)
    loss = LOSSES.get("ft").build(ctx([shape], [shape])).double().eval()
    pair = loss.pairs[0]
    pair.translator.load_state_dict(pair.paraphraser.state_dict())
    f = feats(0, [shape])
    assert float(loss(outputs(np.zeros((B, K)), f), outputs(np.zeros((B, K)), f))) == pytest.approx(0, abs=1e-12)
    rec = pair.decoder(pair.paraphraser(torch.tensor(f[0])))
    expected = np.abs(rec.detach().numpy() - f[0]).mean()  # the authors' nn.L1Loss (MSE gives a different value)
    assert float(loss.init_loss(outputs(np.zeros((B, K)), f), outputs(np.zeros((B, K)), f))) == pytest.approx(expected, rel=1e-10)


class _AuthorsParaphraser(nn.Module):
    """Transcription of Paraphraser (Jangho-Kim/Factor-Transfer-pytorch, Models/FeatureProjection.py): BN commented out there."""

    def __init__(self, in_planes, planes):
        super().__init__()
        self.leakyrelu = nn.LeakyReLU(0.1)
        self.conv0 = nn.Conv2d(in_planes, in_planes, 3, 1, 1, bias=True)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, 1, 1, bias=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=True)
        self.deconv0 = nn.ConvTranspose2d(planes, planes, 3, 1, 1, bias=True)
        self.deconv1 = nn.ConvTranspose2d(planes, in_planes, 3, 1, 1, bias=True)
        self.deconv2 = nn.ConvTranspose2d(in_planes, in_planes, 3, 1, 1, bias=True)

    def forward(self, x, mode=1):  # mode 1: the encoder; mode 0: encoder then decoder (reconstruction)
        out = self.leakyrelu(self.conv2(self.leakyrelu(self.conv1(self.leakyrelu(self.conv0(x))))))
        if mode == 0:
            out = self.leakyrelu(self.deconv2(self.leakyrelu(self.deconv1(self.leakyrelu(self.deconv0(out))))))
        return out


def test_ft_paraphraser_pretraining_equals_the_authors_train_paraphraser():
    """train_Paraphraser.py: Paraphraser(64, int(round(64 * RATE))) trained with nn.L1Loss on
    mode 0 (reconstruction) against the detached teacher features. 7 channels at k = 0.5 give
    round(3.5) = 4 factors (int() gives 3)."""
    torch.manual_seed(0)
    shape = (7, 4, 4)
    loss = LOSSES.get("ft").build(ctx([shape], [shape])).double()
    pair = loss.pairs[0]
    assert pair.paraphraser[2].out_channels == int(round(7 * 0.5)) == 4
    authors = _AuthorsParaphraser(7, 4).double()
    ours = [*pair.paraphraser.state_dict().values(), *pair.decoder.state_dict().values()]
    authors.load_state_dict({k: v for k, v in zip(authors.state_dict(), ours, strict=True)})
    ft = torch.tensor(feats(2, [shape])[0])
    expected = nn.L1Loss()(authors(ft, 0), ft.detach())
    value = loss.init_loss(outputs(np.zeros((B, K)), feats(1, [shape])), outputs(np.zeros((B, K)), [ft.numpy()]))
    assert float(value) == pytest.approx(float(expected), rel=1e-10)


def test_ft_equals_the_authors_modules_and_freezes_the_paraphraser():
    torch.manual_seed(0)
    s_shape, t_shape = (3, 4, 4), (6, 4, 4)
    loss = LOSSES.get("ft").build(ctx([s_shape], [t_shape])).double()
    pair = loss.pairs[0]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in loss.modules())
    assert LOSSES.get("ft").default_weight == 500.0
    para, trans = _AuthorsParaphraser(6, 3).double(), _AuthorsParaphraser(3, 3).double()  # Translator: the same encoder shape
    encoder = [k for k in para.state_dict() if k.startswith("conv")]  # mode 1 uses the encoder alone
    para.load_state_dict(dict(zip(encoder, pair.paraphraser.state_dict().values(), strict=True)), strict=False)
    trans.load_state_dict(dict(zip(encoder, pair.translator.state_dict().values(), strict=True)), strict=False)
    fs, ft = feats(0, [s_shape]), feats(3, [t_shape])

    def factor(x):  # the authors' FT(): F.normalize(x.view(x.size(0), -1))
        return torch.nn.functional.normalize(x.view(x.size(0), -1))

    expected = nn.L1Loss()(factor(trans(torch.tensor(fs[0]))), factor(para(torch.tensor(ft[0]))).detach())
    loss.train()
    value = loss(outputs(np.zeros((B, K)), fs), outputs(np.zeros((B, K)), ft))
    assert float(value) == pytest.approx(float(expected), rel=1e-10)
    value.backward()
    assert all(p.grad is None for p in pair.paraphraser.parameters())  # frozen in distillation
    assert not pair.paraphraser.training  # eval mode even though the trainer put the term in train mode
    bn = LOSSES.get("ft").build(ctx([s_shape], [t_shape]), bn=True).double().train()
    before = bn.pairs[0].paraphraser[1].running_mean.clone()
    bn(outputs(np.zeros((B, K)), fs), outputs(np.zeros((B, K)), ft))
    torch.testing.assert_close(bn.pairs[0].paraphraser[1].running_mean, before)  # running statistics do not move


@pytest.mark.parametrize("name", ["at", "nst", "sp", "cc", "fsp", "pkt", "rkd"])
def test_feature_losses_vanish_when_student_equals_teacher(name):
    shapes = [(3, 4, 4), (3, 2, 2)]
    f = feats(0, shapes)
    e = rng(9).normal(size=(B, 4))
    loss = LOSSES.get(name).build(ctx(shapes, shapes))
    value = loss(outputs(np.zeros((B, K)), f, e), outputs(np.zeros((B, K)), [x.copy() for x in f], e.copy()))
    assert float(value) == pytest.approx(0, abs=1e-10)


# --- objective ----------------------------------------------------------------------------


def test_objective_combines_terms_by_name():
    c = ctx([(3, 4, 4)], [(5, 4, 4)])
    obj = build_objective("at+kd", c, gamma=0.5, weights={"at": 10.0}).double()
    assert obj.weights == {"at": 10.0, "kd": 1.0} and obj.gamma == 0.5
    s = outputs(rng(0).normal(size=(B, K)), feats(0, [(3, 4, 4)]))
    t = outputs(rng(1).normal(size=(B, K)), feats(1, [(5, 4, 4)]))
    parts = obj(s, t)
    assert set(parts) == {"loss", "ce", "at", "kd"}
    assert float(parts["loss"]) == pytest.approx(0.5 * float(parts["ce"]) + 10 * float(parts["at"]) + float(parts["kd"]))
    assert build_objective("at+kd", c, alpha=0.9, beta=7.0).weights == {"at": 7.0, "kd": 0.9}


@pytest.mark.parametrize(("method", "params"), [("ab+kd", {}), ("fsp+kd", {}), ("fitnet+kd", {"fitnet": {"two_stage": True}})])
def test_initialisation_only_terms_leave_distillation(method, params):
    """RepDistiller's main loop sets AB's and FSP's term to 0 after their init stage; FitNets' stage
    2 is KD alone. The distillation loss is gamma * CE + KD, the term trains only in init_forward;
    ``keep: true`` (AB, FSP) puts it back."""
    shapes = [(3, 4, 4), (3, 2, 2)]
    name = method.split("+")[0]
    s = outputs(rng(0).normal(size=(B, K)), feats(0, shapes))
    t = outputs(rng(1).normal(size=(B, K)), feats(1, shapes))
    obj = build_objective(method, ctx(shapes, shapes), gamma=0.7, params=params).double()
    assert obj.terms[name].needs_init
    parts = obj(s, t)
    assert float(parts["loss"]) == pytest.approx(0.7 * float(parts["ce"]) + float(parts["kd"]), rel=1e-12)
    init = obj.init_forward(s, t)
    assert set(init) == {"loss", name} and float(init["loss"]) > 0
    if name != "fitnet":
        kept = build_objective(method, ctx(shapes, shapes), gamma=0.7, params={name: {"keep": True}}).double()
        kept.terms[name].load_state_dict(obj.terms[name].state_dict())
        both = kept(s, t)
        expected = 0.7 * float(both["ce"]) + float(both["kd"]) + kept.weights[name] * float(init[name])
        assert float(both["loss"]) == pytest.approx(expected, rel=1e-10)


def test_every_method_builds_and_backpropagates():
    """Every registered offline method runs on student tensors that need gradients and teacher tensors
    that need them too: the loss is finite, the term's own gradient (in distillation, else in its
    initialisation stage) reaches the student and never the teacher (a method that forgets to
    detach its target would train the frozen teacher's features)."""
    from compressor.losses.base import DistillLoss

    torch.manual_seed(0)
    shapes = [(4, 4, 4), (4, 2, 2)]
    c = ctx(shapes, shapes, s_embed=4, t_embed=4, num_data=32)
    ran = []
    for name in LOSSES:
        cls = LOSSES.get(name)
        if cls.kind == "online" or cls.prepare.__func__ is not DistillLoss.prepare.__func__:
            continue  # they build networks / layers of their own from a teacher: tested in test_schemes.py
        term = build_objective(name, c, params={"crd": {"nce_k": 4}} if name == "crd" else None).float()
        fs = [torch.randn(B, *sh, requires_grad=True) for sh in shapes]
        logits = torch.randn(B, K, requires_grad=True)
        emb = torch.randn(B, 4, requires_grad=True)
        labels = torch.arange(B) % K
        s = Outputs(logits, fs, emb, labels, torch.arange(B))
        t_logits, t_emb = torch.randn(B, K, requires_grad=True), torch.randn(B, 4, requires_grad=True)
        t_fs = [torch.randn(B, *sh, requires_grad=True) for sh in shapes]
        t = Outputs(t_logits, t_fs, t_emb, labels, torch.arange(B))
        out = term(s, t)
        assert torch.isfinite(out["loss"]), name
        distills = term.terms[name].in_distillation  # AB, FSP: initialisation stage only, then weight 0
        assert float(out[name]) != 0 if distills else float(out[name]) == 0, name
        (out[name] if distills else term.init_forward(s, t)["loss"]).backward()  # the term's own gradient, not CE's
        assert any(g is not None and bool(g.abs().sum() > 0) for g in (logits.grad, emb.grad, *(f.grad for f in fs))), name
        assert all(g is None or not bool(g.abs().sum() > 0) for g in (t_logits.grad, t_emb.grad, *(f.grad for f in t_fs))), name
        ran.append(name)
    offline = [n for n in LOSSES if LOSSES.get(n).kind != "online"]
    assert len(ran) >= len(offline) - 3, f"ran {ran} of {offline}: the filter skips methods it should run"


def test_parse_method():
    assert parse_method("crd+at+kd") == ["crd", "at", "kd"]
    assert parse_method("ce") == []
    with pytest.raises(UnknownNameError, match="unknown distillation method 'attn'"):
        parse_method("attn+kd")
    with pytest.raises(ValueError, match="twice"):
        parse_method("kd+kd")
    with pytest.raises(ValueError, match="not in method"):
        build_objective("kd", ctx([], []), weights={"at": 1.0})
    with pytest.raises(ValueError, match="bad parameters for method 'kd'"):
        build_objective("kd", ctx([], []), params={"kd": {"temperature": 3}})


# --- the papers' own schemes (issue 8) ----------------------------------------------------


def test_averager_uses_per_label_batch_means():
    zs, zt, T = rng(0).normal(size=(B, K)), rng(1).normal(size=(B, K)) * 3, 4.0
    labels = np.array([0, 2, 0, 1, 2, 0])
    mean = {y: zt[labels == y].mean(0) for y in set(labels.tolist())}
    zt_hat = np.stack([mean[y] for y in labels])  # thesis 000 eq. 4.4
    term = LOSSES.get("averager").build(ctx([], []), T=T)
    value = term(outputs(zs, labels=labels), outputs(zt, labels=labels))
    assert float(value) == pytest.approx(kl_np(softmax(zt_hat / T), softmax(zs / T)) * T**2, rel=1e-10)
    # a batch of distinct labels leaves the teacher's logits as they are: plain KD
    s, t = outputs(zs[:K], labels=np.arange(K)), outputs(zt[:K], labels=np.arange(K))
    assert float(term(s, t)) == pytest.approx(float(LOSSES.get("kd")(T=T)(s, t)), rel=1e-12)


def test_averager_wraps_other_logit_methods_and_refuses_feature_ones():
    zs, zt = rng(0).normal(size=(B, K)), rng(1).normal(size=(B, K))
    labels = np.zeros(B, dtype=np.int64)
    mean = np.repeat(zt.mean(0, keepdims=True), B, 0)
    skd = LOSSES.get("averager").build(ctx([], []), base="skd", T=2.0)
    reference = LOSSES.get("skd")(T=2.0)(outputs(zs, labels=labels), outputs(mean, labels=labels))
    assert float(skd(outputs(zs, labels=labels), outputs(zt, labels=labels))) == pytest.approx(float(reference), rel=1e-10)
    with pytest.raises(ValueError, match="needs a logit method"):
        LOSSES.get("averager").build(ctx([], []), base="at")


def test_averager_exits_add_ce_and_the_averaged_term_per_exit_and_report_the_ensemble():
    """The thesis' "-Ens" (Kundu et al.'s multi-exit student): every exit learns from the same
    per-label means with cross-entropy beside; the ensemble predicts with the mean of all logits."""
    from compressor.models import create_model

    from compressor.data import open_dataset
    from compressor.losses.averager import Averager, class_mean_logits

    torch.manual_seed(0)
    student, data = create_model("resnet8", num_classes=4), open_dataset("synthetic:classes=4,train=16,test=8")
    prepared = Averager.prepare(PrepareContext(None, student, data, [], [], {"exits": True}, torch.device("cpu"), 1))
    assert prepared["exit_points"] == [1, 2] and prepared["exit_shapes"] == [(16, 32, 32), (32, 16, 16)]
    c = LossContext((), (), 64, 64, 4, 16)
    term = LOSSES.get("averager").build(c, T=4.0, exits=True, **prepared)
    images, labels = torch.stack([data[i][0] for i in range(6)]), torch.tensor([0, 1, 0, 2, 3, 1])
    zs, zt = student(images), torch.randn(6, 4) * 3
    s, t = Outputs(zs, [], zs, labels, labels), Outputs(zt, [], zt, labels, labels)
    kd, target = LOSSES.get("kd")(T=4.0), Outputs(class_mean_logits(zt, labels), [], zt, labels, labels)
    exits = term.exit_logits()
    expected = kd(s, target) + sum(kd(Outputs(z, [], zs, labels, labels), target) + F.cross_entropy(z, labels) for z in exits)
    assert float(term(s, t).detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    report = term.report([Outputs(zt, [], zt, labels, labels, inputs=images)])
    ensemble = torch.stack([*exits, zs]).mean(0).argmax(1)
    assert report["ensemble_top1"] == pytest.approx(100 * float((ensemble == labels).double().mean()), abs=0.01)
    assert any(m._forward_hooks for m in student.modules())
    term.close()
    assert not any(m._forward_hooks for m in student.modules())  # the student leaves without the exits' hooks
    assert not LOSSES.get("averager").build(c).exits  # exits are opt-in


def test_self_undermining_is_negated_kd():
    zs, zt, T = rng(0).normal(size=(B, K)), rng(1).normal(size=(B, K)), 4.0
    value = LOSSES.get("undermine")(T=T)(outputs(zs), outputs(zt))
    assert float(value) == pytest.approx(-kl_np(softmax(zt / T), softmax(zs / T)) * T**2, rel=1e-10)
    assert LOSSES.get("undermine").default_weight == 0.04


def test_ekd_heads_cohort_and_init_stage():
    shapes = [(3, 4, 4), (4, 2, 2), (6, 1, 1)]  # a head on every stage output, the last too (thesis Table 5.6: 3 heads + main)
    term = LOSSES.get("ekd").build(ctx(shapes, shapes), T=5.0).double()
    assert len(term.heads) == 3 and term.needs_init and not LOSSES.get("ekd").reads_student_feats
    f = feats(0, shapes)
    zs, zt = rng(5).normal(size=(B, K)), rng(6).normal(size=(B, K))
    labels = np.arange(B) % K
    s, t = outputs(zs, [], labels=labels), outputs(zt, f, labels=labels)  # the student's features are not read
    heads = []
    for head, x in zip(term.heads, f, strict=True):
        w, b = head.fc.weight.detach().numpy(), head.fc.bias.detach().numpy()
        heads.append(x.reshape(B, -1) @ w.T + b)  # the thesis' head: flatten C x H x W, one FC layer
    members = [*heads, zt]
    expected = np.mean([kl_np(softmax(z / 5.0), softmax(zs / 5.0)) * 25 for z in members])
    assert float(term(s, t)) == pytest.approx(expected, rel=1e-10)
    # the thesis' ablation: only some classifiers in the cohort
    only = LOSSES.get("ekd").build(ctx(shapes, shapes), cohort=[2, 4]).double()
    only.heads.load_state_dict(term.heads.state_dict())
    assert float(only(s, t)) == pytest.approx(np.mean([kl_np(softmax(z / 5.0), softmax(zs / 5.0)) * 25 for z in (members[1], zt)]))
    # initialisation stage: cross-entropy of each head, and its accuracy is counted
    init = term.init_loss(s, t)
    ce = sum(float(torch.nn.functional.cross_entropy(torch.as_tensor(z), torch.as_tensor(labels))) for z in heads)
    assert float(init) == pytest.approx(ce, rel=1e-10)
    assert len(term.head_accuracy()) == 3
    with pytest.raises(ValueError, match="cohort"):
        LOSSES.get("ekd").build(ctx(shapes, shapes), cohort=[5])
    pooled = LOSSES.get("ekd").build(ctx(shapes, shapes), head="pool", include_last=False).double()
    assert len(pooled.heads) == 2 and pooled.heads[0].fc.in_features == 3


def _authors_kd_loss(out_s, out_t, target, alpha, temperature):
    """Transcription of kd_loss (aryanasadianuoit/Distilling-Knowledge-via-Intermediate-Classifiers, KD_Loss.py)."""
    kd = nn.KLDivLoss(reduction="batchmean")(F.log_softmax(out_s / temperature, dim=1), F.softmax(out_t / temperature, dim=1))
    return kd * (alpha * temperature * temperature) + F.cross_entropy(out_s, target) * (1.0 - alpha)


def test_ekd_sum_reduction_equals_the_authors_train_dih_loop():
    """train_dih.py adds kd_loss(student, member) for the teacher and every head: |cohort| times the
    thesis' Eq. 4.7. reduction: sum with gamma = |cohort| (1 - alpha) gives that loss; the default
    (mean) gives the thesis' value, 1/|cohort| of it."""
    shapes = [(3, 4, 4), (4, 2, 2), (6, 1, 1)]
    zs = torch.tensor(rng(5).normal(size=(B, K)), requires_grad=True)
    zt, labels = torch.tensor(rng(6).normal(size=(B, K))), torch.arange(B) % K
    f = [torch.tensor(x) for x in feats(0, shapes)]
    summed = build_objective("ekd", ctx(shapes, shapes), gamma=4 * 0.9, weights={"ekd": 0.1}, params={"ekd": {"reduction": "sum"}})
    thesis = build_objective("ekd", ctx(shapes, shapes), gamma=0.9, weights={"ekd": 0.1}).double()
    summed = summed.double()
    thesis.terms["ekd"].heads.load_state_dict(summed.terms["ekd"].heads.state_dict())
    heads = summed.terms["ekd"].heads
    members = [zt, *(head(x) for head, x in zip(heads, f, strict=True))]  # complete_teacher_outputs_dict: main + heads
    expected = sum(_authors_kd_loss(zs, z.detach(), labels, 0.1, 5.0) for z in members)
    s, t = Outputs(zs, [], None, labels, torch.arange(B)), Outputs(zt, f, None, labels, torch.arange(B))
    got = summed(s, t)["loss"]
    assert float(got) == pytest.approx(float(expected), rel=1e-10)
    (g_got,) = torch.autograd.grad(got, zs)
    (g_exp,) = torch.autograd.grad(expected, zs)
    torch.testing.assert_close(g_got, g_exp)
    assert float(thesis(s, t)["loss"]) == pytest.approx(float(expected) / 4, rel=1e-10)
    with pytest.raises(ValueError, match="reduction"):
        LOSSES.get("ekd").build(ctx(shapes, shapes), reduction="avg")


def test_ekd_reuses_saved_heads(tmp_path):
    shapes = [(3, 4, 4), (6, 1, 1)]
    term = LOSSES.get("ekd").build(ctx(shapes, shapes))
    torch.save(term.export_state(), tmp_path / "ekd_heads.pt")
    again = LOSSES.get("ekd").build(ctx(shapes, shapes), heads=str(tmp_path / "ekd_heads.pt"))
    assert not again.needs_init
    assert all(torch.equal(a, b) for a, b in zip(again.heads.state_dict().values(), term.heads.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="does not fit"):
        LOSSES.get("ekd").build(ctx([(5, 4, 4), (6, 1, 1)], [(5, 4, 4), (6, 1, 1)]), heads=str(tmp_path / "ekd_heads.pt"))


def test_letkd_soft_labels_golden():
    from compressor.losses.letkd import kmeans_soft_labels, subclass_labels

    g = rng(0)
    f = g.normal(size=(2, 3, 2, 2))
    centres = g.normal(size=(4, 3))
    tau = 0.7
    got = kmeans_soft_labels(torch.as_tensor(f), torch.as_tensor(centres), tau).numpy()
    for b in range(2):
        for i in range(2):
            for j in range(2):
                d = ((f[b, :, i, j][None] - centres) ** 2).sum(1)
                e = np.exp(-d / tau)
                np.testing.assert_allclose(got[b, :, i, j], e / e.sum(), rtol=1e-10)
    # intermediate: LDA projection, nearest own-class sub-centre, that row of p(h2 | h1)
    mean, proj = g.normal(size=3), g.normal(size=(3, 2))
    sub = g.normal(size=(2 * 2, 2))  # 2 classes x 2 sub-classes
    table = softmax(g.normal(size=(4, 4)))
    labels = np.array([1, 0])
    got = subclass_labels(*(torch.as_tensor(a) for a in (f, labels, mean, proj, sub, table)), per_class=2).numpy()
    for b in range(2):
        for i in range(2):
            for j in range(2):
                z = (f[b, :, i, j] - mean) @ proj
                own = [2 * labels[b], 2 * labels[b] + 1]
                h1 = own[int(np.argmin([((z - sub[k]) ** 2).sum() for k in own]))]
                np.testing.assert_allclose(got[b, :, i, j], table[h1], rtol=1e-10)


def test_kd_layer_is_residual_and_rebuilds_from_its_spec():
    from compressor.models import create_model
    from compressor.models.letkd import KDLayer, attach_kd_layers

    layer = KDLayer(4, 3, alpha=0.5).eval()
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        out = layer(x)
        g = layer.embed(layer.relu(layer.bn(layer.match(x))))
    torch.testing.assert_close(out, x + 0.5 * g)
    assert layer.scores.shape == (2, 3, 3, 3)
    model = attach_kd_layers(create_model("resnet20", 4), [7, 9], [64, 64], [6, 5], 1.0)
    twin = create_model("resnet20", 4, **model.model_options)
    twin.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(twin.eval()(x), model.eval()(x))
    assert not torch.allclose(create_model("resnet20", 4).eval()(x), model(x))
    with pytest.raises(ValueError, match="must be hint points"):
        attach_kd_layers(create_model("resnet8", 4), [9], [64], [4])


def _authors_attack_bss(model, inputs, target, num_steps=10, step_alpha=0.3):
    """Transcription of AttackBSS.run (bhheo/BSS_distillation, attacks/attack_BSS.py, norm=2), on current torch."""
    input_var = inputs.clone().requires_grad_(True)
    gt = None
    input_adv = inputs
    for step in range(num_steps):
        if input_var.grad is not None:
            input_var.grad.zero_()
        output = model(input_var)
        if not step:
            gt = output.data.max(1)[1]
        score_gt = output.gather(1, gt.unsqueeze(1))
        score_target = output.gather(1, target.unsqueeze(1))
        loss = (score_target - score_gt).sum()
        loss.backward()
        alpha = step_alpha * (gt == output.data.max(1)[1]).to(inputs.dtype)
        alpha = alpha.view(-1, *([1] * (inputs.dim() - 1)))
        if alpha.sum() == 0:
            break
        pert = (score_gt.data - score_target.data).view(-1, *([1] * (inputs.dim() - 1)))
        grad = input_var.grad.data
        l2 = grad.pow(2).flatten(1).sum(1).sqrt().view(-1, *([1] * (inputs.dim() - 1)))
        step_adv = input_var.data + alpha * (pert + 1e-4) * grad / l2
        input_adv = torch.clamp(inputs + (step_adv - inputs), -2.5, 2.5)
        input_var = input_adv.clone().requires_grad_(True)
    return input_adv


def test_bss_attack_equals_the_authors_code():
    from compressor.losses.bss import boundary_attack

    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 5)).double()
    x = torch.randn(7, 3, 2, 2, dtype=torch.float64)
    target = teacher(x).argsort(1, descending=True)[:, 2]  # not the runner-up: any class
    ours = boundary_attack(teacher, x, target, steps=10, eta=0.3)
    theirs = _authors_attack_bss(teacher, x, target)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    assert (ours - x).abs().max() > 0 and ours.abs().max() <= 2.5


def test_bss_selection_and_target_sampling_follow_the_authors():
    from compressor.losses.bss import disagreement_order, sample_targets

    torch.manual_seed(1)
    p_t, p_s = torch.softmax(torch.randn(20, 6, dtype=torch.float64), 1), torch.softmax(torch.randn(20, 6, dtype=torch.float64), 1)
    labels = torch.randint(0, 6, (20,))
    # the authors: diff = (p_t - p_s)^2; score = diff.sum(1) - diff[y]; sort descending
    diff = (p_t - p_s) ** 2
    score = diff.sum(1) - diff.gather(1, labels[:, None]).squeeze(1)
    assert disagreement_order(p_t, p_s, labels).tolist() == score.sort(descending=True)[1].tolist()
    # target: their loop over the cumulative non-top scores, first c with prob[k, c] >= rand_seed[k]
    uniform = torch.rand(20, dtype=torch.float64)
    class_score, class_idx = p_t.sort(1, descending=True)
    class_score, class_idx = class_score[:, 1:], class_idx[:, 1:]
    seed, prob = class_score.sum(1) * uniform, class_score.cumsum(1)
    expected = [next(int(class_idx[k, c]) for c in range(prob.shape[1]) if prob[k, c] >= seed[k]) for k in range(20)]
    assert sample_targets(p_t, uniform).tolist() == expected
    drawn = sample_targets(p_t[:1].expand(20000, 6), torch.rand(20000, dtype=torch.float64))
    freq = torch.bincount(drawn, minlength=6).double() / 20000
    others = p_t[0].clone()
    others[p_t[0].argmax()] = 0
    torch.testing.assert_close(freq, others / others.sum(), atol=0.015, rtol=0)


def test_bss_authors_loss_schedule_and_selection():
    from compressor.losses.bss import boundary_attack, soft_cross_entropy

    torch.manual_seed(0)
    teacher, student = nn.Linear(4, 3).double(), nn.Linear(4, 3).double()
    with torch.no_grad():
        student.weight.copy_(teacher.weight + 0.05 * torch.randn_like(teacher.weight))
        student.bias.copy_(teacher.bias)
    term = LOSSES.get("bss")({"teacher": teacher, "student": student}, T=3.0, steps=3, attack_size=2, decay_epochs=8)
    x = torch.randn(12, 4, dtype=torch.float64)
    with torch.no_grad():
        labels = teacher(x).argmax(1)
    s_out = Outputs(student(x), [], x, labels, torch.arange(12), inputs=x)
    t_out = Outputs(teacher(x).detach(), [], x, labels, torch.arange(12))
    both = ((t_out.logits.argmax(1) == labels) & (s_out.logits.argmax(1) == labels)).nonzero().flatten()
    assert len(both) > 2  # so the disagreement ranking picks 2
    torch.manual_seed(5)
    value = float(term(s_out, t_out))
    # the same draw by hand: the 2 most disagreeing samples, targets from the teacher's other classes
    from compressor.losses.bss import disagreement_order, sample_targets

    pt, ps = torch.softmax(t_out.logits[both], 1), torch.softmax(s_out.logits.detach()[both], 1)
    chosen = both[disagreement_order(pt, ps, labels[both])[:2]]
    torch.manual_seed(5)
    target = sample_targets(torch.softmax(t_out.logits[chosen], 1), torch.rand(2, dtype=torch.float64))
    adv = boundary_attack(teacher, x[chosen], target, 3, 0.3)
    p_t = softmax(teacher(adv).detach().numpy() / 3.0)
    log_p_s = np.log(softmax(student(adv).detach().numpy() / 3.0))
    expected = float(-(p_t * log_p_s).sum(1).mean())  # soft cross-entropy, no T^2
    assert value == pytest.approx(expected, rel=1e-10)
    assert float(soft_cross_entropy(student(adv), teacher(adv), 3.0)) == pytest.approx(expected, rel=1e-10)
    # weight 2 * max(1 - 4/3 * e / E, 0) at 1-based epoch e: term.scale carries the factor, 2 is its weight
    scales = []
    for epoch in range(8):
        term.set_epoch(epoch)
        scales.append(term.scale)
    assert scales == pytest.approx([max(1 - 4 / 3 * e / 8, 0) for e in range(1, 9)])
    assert scales[5:] == [0.0, 0.0, 0.0]  # off from 75 % of training


def test_bss_paper_variant_reaches_the_boundary_of_a_linear_teacher():
    from compressor.losses.bss import boundary_attack

    torch.manual_seed(0)
    teacher = nn.Linear(6, 3, bias=True).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    z = teacher(x)
    base, target = z.argmax(1), z.argsort(1, descending=True)[:, 1]
    adv = boundary_attack(teacher, x, target, steps=5, eta=1.0, eps=1e-6, power=2, clamp=None, base=base)
    za = teacher(adv)
    gap = (za.gather(1, base[:, None]) - za.gather(1, target[:, None])).flatten()
    # one DeepFool step lands a linear model just past the boundary: gap = -eps
    torch.testing.assert_close(gap, torch.full_like(gap, -1e-6), atol=1e-9, rtol=0)
    w = teacher.weight.detach()
    direction = (w[base] - w[target]) / (w[base] - w[target]).norm(dim=1, keepdim=True)
    move = (adv - x) / (adv - x).norm(dim=1, keepdim=True)
    torch.testing.assert_close(move, -direction)


def test_bss_paper_variant_loss_and_decay():
    torch.manual_seed(0)
    teacher, student = nn.Linear(4, 3).double(), nn.Linear(4, 3).double()
    term = LOSSES.get("bss")({"teacher": teacher, "student": student}, T=3.0, ratio=1.0, steps=3, decay_epochs=4, variant="paper")
    x = torch.randn(6, 4, dtype=torch.float64)
    with torch.no_grad():
        labels = teacher(x).argmax(1)
    s_out = Outputs(student(x), [], x, labels, torch.arange(6), inputs=x)
    t_out = Outputs(teacher(x).detach(), [], x, labels, torch.arange(6))
    from compressor.losses.bss import boundary_attack

    top2 = t_out.logits.topk(2, 1).indices
    adv = boundary_attack(teacher, x, top2[:, 1], 3, 1.0, power=2, clamp=None, base=labels)
    T = 3.0
    expected = kl_np(softmax(teacher(adv).detach().numpy() / T), softmax(student(adv).detach().numpy() / T)) * T**2
    term.set_epoch(0)
    assert float(term(s_out, t_out)) == pytest.approx(expected, rel=1e-8)
    term.set_epoch(2)
    assert float(term(s_out, t_out)) == pytest.approx(expected / 2, rel=1e-8)
    term.set_epoch(4)
    assert float(term(s_out, t_out)) == 0.0


def test_weight_ramp_matches_the_bss_authors_kd_schedule():
    from compressor.losses import ramp

    E = 80  # their max_epoch; their epoch is 1-based, ours 0-based
    assert [ramp(4, 1, 1.0, e - 1, E) for e in range(1, E + 1)] == pytest.approx([max(3 * (1 - e / E), 0) + 1 for e in range(1, E + 1)])
    assert [ramp(2, 0, 0.75, e - 1, E) for e in range(1, E + 1)] == pytest.approx(
        [max(2 * (1 - 4 / 3 * e / E), 0) for e in range(1, E + 1)]
    )


def test_cc_default_weight_matches_repdistiller_gradient_scale():
    """The paper-form CC at its default weight pulls on the student's features about as hard as
    RepDistiller's CC function at its weight 0.02 (see the CC docstring)."""
    import torch.nn.functional as F
    from compressor.models import create_model, forward_features

    from compressor.data import open_dataset
    from compressor.losses.cc import gaussian_correlation

    torch.manual_seed(0)
    data = open_dataset("synthetic:classes=100,train=256")
    x = torch.stack([data[i][0] for i in range(64)])
    ft = forward_features(create_model("resnet32x4").eval(), x, [15])[0][15].detach()
    fs = forward_features(create_model("resnet8x4").eval(), x, [3])[0][3].detach().requires_grad_(True)
    es = F.normalize(nn.Linear(fs.shape[1], 128)(fs.mean((2, 3))), dim=1)  # RepDistiller's Embed: linear + l2norm
    et = F.normalize(nn.Linear(ft.shape[1], 128)(ft.mean((2, 3))), dim=1)
    delta = (es - et).abs()
    repdistiller = 0.02 * (delta[:-1] * delta[1:]).sum(1).mean()  # distiller_zoo/CC.py
    g_rep = torch.autograd.grad(repdistiller, fs)[0].norm()
    c_s = gaussian_correlation(F.normalize(fs.mean((2, 3)), dim=1), 0.4)
    c_t = gaussian_correlation(F.normalize(ft.mean((2, 3)), dim=1), 0.4)
    ours = LOSSES.get("cc").default_weight * (c_s - c_t).pow(2).mean()
    g_ours = torch.autograd.grad(ours, fs)[0].norm()
    assert 0.5 < float(g_ours / g_rep) < 2


def test_letkd_kernels_come_from_the_3x3_that_feeds_bn_relu():
    """letKD §4.2.1: the 3x3 of a 3x3-BN-ReLU-1x1 unit; in a BasicBlock that is conv1 (conv2 feeds the residual sum)."""
    from compressor.losses.letkd import _last_3x3

    basic = create_model("resnet8", num_classes=4)
    assert _last_3x3(basic, 3) is basic.layer3[0].conv1
    bottleneck = create_model("ResNet50", num_classes=4)
    last = len(bottleneck.hint_points())
    assert _last_3x3(bottleneck, last) is bottleneck.get_submodule(bottleneck.hint_points()[-1].name).conv2


def test_loss_hooks_are_declared_on_the_base_class_and_never_probed():
    import inspect

    from compressor.losses import DistillLoss
    from compressor.train import engine

    assert "hasattr(" not in inspect.getsource(engine)  # the engine calls the declared hooks, whose defaults do nothing
    for name in LOSSES:
        cls = LOSSES.get(name)
        assert list(inspect.signature(cls.prepare).parameters) == ["ctx"], name
        assert list(inspect.signature(cls.default_hints).parameters) == ["teacher", "student", "params"], name
        if cls.report is not DistillLoss.report:  # a method with parts of its own saves them
            assert cls.state_file and cls.export_state is not DistillLoss.export_state, name


def test_topk_hits_counts_ties_like_argmax_and_caps_k():
    from compressor.metrics import top1_hits, topk_hits

    logits = torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 0, 0])
    assert topk_hits(logits, labels, 1) == (2, 2) == (top1_hits(logits, labels), top1_hits(logits, labels))  # a tie goes to class 0
    assert topk_hits(logits, labels, 2) == (2, 2) and topk_hits(logits, labels, 5) == (2, 3)  # k capped at 3 classes: all hit
