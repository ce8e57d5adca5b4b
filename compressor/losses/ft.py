import torch
import torch.nn.functional as F
from torch import nn

from .base import DistillLoss, LossContext, Outputs, match_spatial


def _conv_stack(channels: list[int], transpose: bool = False, bn: bool = False) -> nn.Sequential:
    """3x3 convolutions (stride 1, padding 1, with bias), each followed by LeakyReLU(0.1), as in the
    authors' Paraphraser / Translator; ``bn`` adds a BatchNorm after each (the authors' code has it commented out)."""
    conv = nn.ConvTranspose2d if transpose else nn.Conv2d
    layers: list[nn.Module] = []
    for cin, cout in zip(channels[:-1], channels[1:], strict=True):
        layers += [conv(cin, cout, 3, 1, 1), *([nn.BatchNorm2d(cout)] if bn else []), nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers)


class FTPair(nn.Module):
    def __init__(self, s_channels: int, t_channels: int, rate: float, bn: bool = False):
        super().__init__()
        factor = max(1, int(round(t_channels * rate)))  # the authors' int(round(64 * RATE))
        self.paraphraser = _conv_stack([t_channels, t_channels, factor, factor], bn=bn)  # teacher-side encoder
        self.decoder = _conv_stack([factor, factor, t_channels, t_channels], transpose=True, bn=bn)
        self.translator = _conv_stack([s_channels, s_channels, factor, factor], bn=bn)  # student-side encoder


class FT(DistillLoss):
    """Factor transfer, Kim et al. 2018 (NeurIPS), as the authors' code runs it
    (github.com/Jangho-Kim/Factor-Transfer-pytorch): a paraphraser (convolutional autoencoder: three
    3x3 convolutions, three transposed ones, LeakyReLU(0.1) after each, no BatchNorm) is first trained
    to reconstruct the teacher's hint features (initialisation stage, ``init_epochs`` > 0,
    reconstruction L1, the ``nn.L1Loss`` of their ``train_Paraphraser.py``); then it is frozen and
    run in eval mode, and a translator (three 3x3 convolutions) on the student's features is trained
    so that its factors match the paraphraser's: mean |F_s/||F_s|| - F_t/||F_t|| |^p (p = 1, the
    authors' L1Loss), factors flattened per sample. Factor rate k = 0.5 (``int(round(C * k))``
    factor channels) and weight beta = 500 as in their code. ``bn=True`` adds BatchNorm after each
    convolution (then the frozen paraphraser uses its running statistics)."""

    default_weight = 500.0
    needs_init = True

    def __init__(self, pairs: nn.ModuleList, p: int = 1):
        super().__init__()
        self.pairs = pairs
        self.p = p

    @classmethod
    def build(cls, ctx: LossContext, rate: float = 0.5, p: int = 1, bn: bool = False) -> "FT":
        pairs = nn.ModuleList(FTPair(s[0], t[0], rate, bn) for s, t in zip(ctx.student_feats, ctx.teacher_feats, strict=True))
        return cls(pairs, p)

    def forward(self, s: Outputs, t: Outputs) -> torch.Tensor:
        total = s.logits.new_zeros(())
        for pair, fs, ft in zip(self.pairs, s.feats, t.feats, strict=True):
            fs, ft = match_spatial(fs, ft.detach())
            pair.paraphraser.eval()  # frozen: no batch statistics, no running-average updates (the trainer sets train mode each epoch)
            with torch.no_grad():
                factor_t = F.normalize(pair.paraphraser(ft).flatten(1), dim=1)
            factor_s = F.normalize(pair.translator(fs).flatten(1), dim=1)
            total = total + (factor_s - factor_t).abs().pow(self.p).mean()
        return total

    def init_loss(self, s: Outputs, t: Outputs) -> torch.Tensor:
        for pair in self.pairs:
            pair.paraphraser.train()
        return sum(
            F.l1_loss(pair.decoder(pair.paraphraser(ft.detach())), ft.detach()) for pair, ft in zip(self.pairs, t.feats, strict=True)
        )
