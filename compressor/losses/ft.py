import torch
import torch.nn.functional as F
from torch import nn

from .base import DistillLoss, LossContext, Outputs, match_spatial


def _conv_stack(channels: list[int], transpose: bool = False) -> nn.Sequential:
    conv = nn.ConvTranspose2d if transpose else nn.Conv2d
    layers: list[nn.Module] = []
    for cin, cout in zip(channels[:-1], channels[1:], strict=True):
        layers += [conv(cin, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers)


class FTPair(nn.Module):
    def __init__(self, s_channels: int, t_channels: int, rate: float):
        super().__init__()
        factor = max(1, int(t_channels * rate))
        self.paraphraser = _conv_stack([t_channels, t_channels, factor, factor])  # teacher-side encoder
        self.decoder = _conv_stack([factor, factor, t_channels, t_channels], transpose=True)
        self.translator = _conv_stack([s_channels, s_channels, factor, factor])  # student-side encoder


class FT(DistillLoss):
    """Factor transfer, Kim et al. 2018 (NeurIPS): a paraphraser (convolutional autoencoder) is
    first trained to reconstruct the teacher's hint features (initialisation stage,
    ``init_epochs`` > 0, reconstruction MSE); then a translator on the student's features is
    trained so its factors match the frozen paraphraser's: || F_t/||F_t|| - F_s/||F_s|| ||_p
    (p = 1), factors flattened per sample. Factor rate k = 0.5 as in the paper."""

    default_weight = 200.0
    needs_init = True

    def __init__(self, pairs: nn.ModuleList, p: int = 1):
        super().__init__()
        self.pairs = pairs
        self.p = p

    @classmethod
    def build(cls, ctx: LossContext, rate: float = 0.5, p: int = 1) -> "FT":
        return cls(nn.ModuleList(FTPair(s[0], t[0], rate) for s, t in zip(ctx.student_feats, ctx.teacher_feats, strict=True)), p)

    def forward(self, s: Outputs, t: Outputs) -> torch.Tensor:
        total = s.logits.new_zeros(())
        for pair, fs, ft in zip(self.pairs, s.feats, t.feats, strict=True):
            fs, ft = match_spatial(fs, ft.detach())
            with torch.no_grad():
                factor_t = F.normalize(pair.paraphraser(ft).flatten(1), dim=1)
            factor_s = F.normalize(pair.translator(fs).flatten(1), dim=1)
            total = total + (factor_s - factor_t).abs().pow(self.p).mean()
        return total

    def init_loss(self, s: Outputs, t: Outputs) -> torch.Tensor:
        return sum(
            F.mse_loss(pair.decoder(pair.paraphraser(ft.detach())), ft.detach()) for pair, ft in zip(self.pairs, t.feats, strict=True)
        )
