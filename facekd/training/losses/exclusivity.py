"""Position-aware weight exclusivity (EC-KD, Wang et al. 2020): push filters of a layer apart."""
from __future__ import annotations

from torch import Tensor, nn

from facekd.training.losses.base import LossInputError, LossInputs, LossTerm, normalized, require

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def layer_exclusivity(filters: Tensor) -> Tensor:
    """Mean over filter pairs of ‖w_i ⊙ w_j‖₁ for one layer; ``filters`` is [K, D], K ≥ 2.

        Σ_{i≠j} ‖w_i ⊙ w_j‖₁ = Σ_{i≠j} Σ_k |w_ik|·|w_jk| = Σ_k [(Σ_i |w_ik|)² − Σ_i w_ik²]

    computed in O(K·D) by the right-hand side and divided by the K(K−1) ordered pairs.
    """
    count = filters.shape[0]
    column_sums = filters.abs().sum(dim=0)
    pair_sum = column_sums.pow(2).sum() - filters.pow(2).sum()
    return pair_sum / (count * (count - 1))


def is_grouped(conv: nn.Module) -> bool:
    """True for depthwise and other grouped convolutions (groups > 1)."""
    return conv.groups > 1


class WeightExclusivity(LossTerm):
    """Position-aware exclusivity over the student's conv layers, averaged over layers.

        L = (1/|𝓛|) Σ_{l∈𝓛} 1/(K_l(K_l−1)) Σ_{i≠j} ‖ŵ_i ⊙ ŵ_j‖₁,   ŵ_i = w_i / ‖w_i‖₂

    w_i is filter i of layer l flattened to D = C_in/groups · kernel area. The element-wise product
    only meets weights at the same position (input channel and kernel offset), hence
    "position-aware": the term is 0 exactly when no two filters use the same position.
    Layers 𝓛: every Conv1d/2d/3d with more than one filter; grouped (depthwise) convs only when
    ``include_depthwise`` (their filters read different input channels, so "same position" is
    weaker there). Filters are L2-normalised (``normalize_filters``, default on) because every conv of
    MobileFaceNet feeds a BatchNorm, which makes the conv's output invariant to weight scale: without
    normalisation the term would be minimised by merely shrinking all weights. With it each layer's
    value lies in [0, 1] (Cauchy–Schwarz), so the mean over layers is in [0, 1].
    """

    needs = frozenset({"model"})

    def __init__(self, include_depthwise: bool = False, normalize_filters: bool = True):
        super().__init__()
        self.include_depthwise = include_depthwise
        self.normalize_filters = normalize_filters

    def layers(self, model: nn.Module) -> list[nn.Module]:
        """The conv layers this term regularises."""
        return [
            module for module in model.modules()
            if isinstance(module, CONV_TYPES) and module.out_channels > 1
            and (self.include_depthwise or not is_grouped(module))
        ]

    def forward(self, inputs: LossInputs) -> Tensor:
        model = require(inputs.model, "model", type(self).__name__)
        layers = self.layers(model)
        if not layers:
            raise LossInputError("exclusivity found no conv layer with more than one filter in the model; set its weight to 0")
        total = 0.0
        for layer in layers:
            filters = layer.weight.flatten(1)
            if self.normalize_filters:
                filters = normalized(filters)
            total = total + layer_exclusivity(filters)
        return total / len(layers)
