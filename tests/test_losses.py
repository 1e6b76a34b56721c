"""Loss terms vs naive reference implementations (explicit loops), edge cases, and the suite."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from facekd.training.losses import (
    CombinedMarginHead, FeatureConsistency, HardnessAwareFeatureConsistency, LogitDistillation, LossConfig,
    LossConfigError, LossInputError, LossInputs, LossSuite, RelationAwareDistillation, RelationalDistance,
    SimilarityPreserving, TERM_NAMES, WeightExclusivity,
)
from facekd.training.losses.exclusivity import layer_exclusivity
from facekd.training.models.mobilefacenet import MobileFaceNet

BATCH, STUDENT_DIM, TEACHER_DIM, CLASSES = 8, 16, 16, 5


def close(actual: torch.Tensor, expected: float | torch.Tensor) -> None:
    torch.testing.assert_close(actual.double(), torch.as_tensor(expected, dtype=torch.float64), rtol=1e-4, atol=1e-5)


def unit(vector: torch.Tensor) -> torch.Tensor:
    return vector / vector.norm()


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def reference_cross_entropy(logits: list[list[float]], labels: list[int]) -> float:
    total = 0.0
    for row, label in zip(logits, labels):
        log_sum = math.log(sum(math.exp(value) for value in row))
        total += log_sum - row[label]
    return total / len(labels)


@pytest.fixture
def batch() -> LossInputs:
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(BATCH, STUDENT_DIM, generator=generator).requires_grad_()
    teacher = torch.nn.functional.normalize(torch.randn(BATCH, TEACHER_DIM, generator=generator), dim=1)
    labels = torch.tensor([0, 0, 1, 1, 2, 3, 3, 4])
    queue = torch.nn.functional.normalize(torch.randn(12, TEACHER_DIM, generator=generator), dim=1)
    queue[0] = teacher[2]  # the queue may hold a batch image's own embedding
    queue_labels = torch.tensor([1, 0, 2, 4, 4, 1, 0, 3, 2, 2, 0, 1])
    return LossInputs(student=student, labels=labels, teacher=teacher, queue=queue, queue_labels=queue_labels)


def assert_student_gradient(loss: torch.Tensor, inputs: LossInputs) -> None:
    loss.backward()
    grad = inputs.student.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


# ---------------------------------------------------------------- margin head


def reference_margin_loss(head: CombinedMarginHead, inputs: LossInputs, arc: float, cosine_margin: float) -> float:
    weights = head.weight.detach()
    logits = []
    for feature, label in zip(inputs.student.detach(), inputs.labels.tolist()):
        row = []
        for cls in range(weights.shape[0]):
            c = cos(feature, weights[cls])
            if cls == label:
                theta = math.acos(max(-1.0, min(1.0, c)))
                c = (math.cos(theta + arc) if theta + arc <= math.pi else c - arc * math.sin(arc)) - cosine_margin
            row.append(head.scale * c)
        logits.append(row)
    return reference_cross_entropy(logits, inputs.labels.tolist())


@pytest.mark.parametrize("arc, cosine_margin", [(0.5, 0.0), (0.0, 0.35), (0.3, 0.2)])
def test_margin_head_matches_reference(batch: LossInputs, arc: float, cosine_margin: float) -> None:
    head = CombinedMarginHead(CLASSES, STUDENT_DIM, scale=16.0, angular_margin=arc, cosine_margin=cosine_margin)
    with torch.no_grad():  # sample 4 sits almost opposite its class centre: θ + m > π, the fallback branch
        batch.student[4] = -head.weight[batch.labels[4]] * 50 + 0.01 * torch.randn(STUDENT_DIM)
    loss = head(batch)
    close(loss, reference_margin_loss(head, batch, arc, cosine_margin))
    assert_student_gradient(loss, batch)
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_arcface_with_zero_margin_is_scaled_normalised_softmax(batch: LossInputs) -> None:
    head = CombinedMarginHead(CLASSES, STUDENT_DIM, scale=64.0, angular_margin=0.0)
    weights = head.weight.detach()
    logits = [[64.0 * cos(feature, weights[c]) for c in range(CLASSES)] for feature in batch.student.detach()]
    close(head(batch), reference_cross_entropy(logits, batch.labels.tolist()))


def test_margin_raises_the_loss_of_a_correct_sample(batch: LossInputs) -> None:
    plain = CombinedMarginHead(CLASSES, STUDENT_DIM, scale=16.0, angular_margin=0.0)
    arc = CombinedMarginHead(CLASSES, STUDENT_DIM, scale=16.0, angular_margin=0.5)
    arc.load_state_dict(plain.state_dict())
    assert arc(batch) > plain(batch)


def test_margin_head_is_safe_at_cosine_one() -> None:
    head = CombinedMarginHead(CLASSES, STUDENT_DIM, scale=64.0, angular_margin=0.5)
    student = head.weight.detach()[:3].clone().requires_grad_()  # cos θ = 1 exactly for the target
    inputs = LossInputs(student=student, labels=torch.tensor([0, 1, 2]))
    loss = head(inputs)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()


def test_margin_head_rejects_out_of_range_labels(batch: LossInputs) -> None:
    head = CombinedMarginHead(3, STUDENT_DIM)
    with pytest.raises(LossInputError, match="num_classes"):
        head(batch)


# ---------------------------------------------------------------- feature consistency


def reference_distances(inputs: LossInputs) -> list[float]:
    return [float(((unit(s) - unit(t)) ** 2).sum()) for s, t in zip(inputs.student.detach(), inputs.teacher)]


def test_fcd_matches_reference(batch: LossInputs) -> None:
    loss = FeatureConsistency(STUDENT_DIM, TEACHER_DIM)(batch)
    close(loss, sum(reference_distances(batch)) / BATCH)
    assert_student_gradient(loss, batch)


def test_fcd_is_zero_for_identical_embeddings_and_ignores_student_norm(batch: LossInputs) -> None:
    term = FeatureConsistency(TEACHER_DIM, TEACHER_DIM)
    close(term(LossInputs(student=batch.teacher * 7.0, labels=batch.labels, teacher=batch.teacher)), 0.0)
    scaled = LossInputs(student=batch.student * 3.0, labels=batch.labels, teacher=batch.teacher)
    close(term(scaled), term(batch))


def test_fcd_projects_when_dimensions_differ(batch: LossInputs) -> None:
    term = FeatureConsistency(STUDENT_DIM, 24)
    teacher = torch.nn.functional.normalize(torch.randn(BATCH, 24), dim=1)
    loss = term(LossInputs(student=batch.student, labels=batch.labels, teacher=teacher))
    projected = batch.student.detach() @ term.projection.weight.detach().T
    expected = sum(float(((unit(p) - unit(t)) ** 2).sum()) for p, t in zip(projected, teacher)) / BATCH
    close(loss, expected)
    loss.backward()
    assert term.projection.weight.grad.abs().sum() > 0


def test_hard_fcd_matches_reference_with_detached_weights(batch: LossInputs) -> None:
    scale = 3.0
    loss = HardnessAwareFeatureConsistency(STUDENT_DIM, TEACHER_DIM, hardness_scale=scale)(batch)
    distances = reference_distances(batch)
    exps = [math.exp(scale * (1.0 - cos(s, t))) for s, t in zip(batch.student.detach(), batch.teacher)]
    weights = [BATCH * e / sum(exps) for e in exps]
    close(loss, sum(w * d for w, d in zip(weights, distances)) / BATCH)
    loss.backward()
    # detached weights: the gradient is that of Σ w_i d_i with w_i constants
    student = batch.student.detach().clone().requires_grad_()
    constant = torch.tensor(weights)
    (constant * ((torch.nn.functional.normalize(student, dim=1) - batch.teacher) ** 2).sum(1)).mean().backward()
    torch.testing.assert_close(batch.student.grad, student.grad, rtol=1e-4, atol=1e-6)


def test_hard_fcd_with_zero_scale_is_fcd(batch: LossInputs) -> None:
    hard = HardnessAwareFeatureConsistency(STUDENT_DIM, TEACHER_DIM, hardness_scale=0.0)
    close(hard(batch), FeatureConsistency(STUDENT_DIM, TEACHER_DIM)(batch))


# ---------------------------------------------------------------- exclusivity


def reference_pairwise_exclusivity(filters: torch.Tensor) -> float:
    count = filters.shape[0]
    total = 0.0
    for i in range(count):
        for j in range(count):
            if i != j:
                total += float((filters[i] * filters[j]).abs().sum())
    return total / (count * (count - 1))


def test_layer_exclusivity_equals_pairwise_loop() -> None:
    filters = torch.randn(6, 20)
    close(layer_exclusivity(filters), reference_pairwise_exclusivity(filters))


def test_exclusivity_of_disjoint_support_filters_is_zero() -> None:
    filters = torch.zeros(4, 12)
    for i in range(4):
        filters[i, 3 * i: 3 * i + 3] = torch.randn(3)
    close(layer_exclusivity(filters), 0.0)
    overlapping = filters.clone()
    overlapping[1, 0] = 1.0
    assert layer_exclusivity(overlapping) > 0


class TinyConvNet(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8),
            nn.Conv2d(8, 8, 3, groups=8),  # depthwise
            nn.Conv2d(8, 4, 1),
            nn.Conv2d(4, 1, 1),  # a single filter has no pair
        )


def expected_model_exclusivity(convs: list[nn.Conv2d], normalize: bool) -> float:
    values = []
    for conv in convs:
        filters = conv.weight.detach().flatten(1)
        if normalize:
            filters = torch.nn.functional.normalize(filters, dim=1)
        values.append(reference_pairwise_exclusivity(filters))
    return sum(values) / len(values)


@pytest.mark.parametrize("depthwise", [False, True])
def test_exclusivity_selects_layers_and_averages_them(depthwise: bool) -> None:
    model = TinyConvNet()
    term = WeightExclusivity(include_depthwise=depthwise)
    expected_layers = [model[0], model[2], model[3]] if depthwise else [model[0], model[3]]
    assert term.layers(model) == expected_layers
    loss = term(LossInputs(student=torch.zeros(1, 1), labels=torch.zeros(1, dtype=torch.long), model=model))
    close(loss, expected_model_exclusivity(expected_layers, normalize=True))
    loss.backward()
    assert model[0].weight.grad.abs().sum() > 0 and model[4].weight.grad is None


def test_exclusivity_normalisation_makes_it_scale_free() -> None:
    model = TinyConvNet()
    inputs = LossInputs(student=torch.zeros(1, 1), labels=torch.zeros(1, dtype=torch.long), model=model)
    normalized_term, raw_term = WeightExclusivity(), WeightExclusivity(normalize_filters=False)
    before_normalized, before_raw = normalized_term(inputs).detach(), raw_term(inputs).detach()
    with torch.no_grad():
        for conv in normalized_term.layers(model):
            conv.weight.mul_(3.0)
    close(normalized_term(inputs), before_normalized)
    close(raw_term(inputs), 9.0 * before_raw)
    close(raw_term(inputs), expected_model_exclusivity(raw_term.layers(model), normalize=False))


def test_exclusivity_on_mobilefacenet_is_bounded_and_needs_convs() -> None:
    model = MobileFaceNet(width=0.25, embedding_size=16)
    inputs = LossInputs(student=torch.zeros(1, 1), labels=torch.zeros(1, dtype=torch.long), model=model)
    value = float(WeightExclusivity()(inputs).detach())
    assert 0.0 < value < 1.0
    with pytest.raises(LossInputError, match="no conv layer"):
        WeightExclusivity()(LossInputs(student=inputs.student, labels=inputs.labels, model=nn.Linear(2, 2)))


# ---------------------------------------------------------------- relation-aware distillation


def reference_rad(inputs: LossInputs, form: str, top_k: int, temperature: float) -> float:
    candidates = [t for t in inputs.teacher]
    candidate_labels = inputs.labels.tolist()
    if inputs.queue is not None:
        candidates += list(inputs.queue)
        candidate_labels += inputs.queue_labels.tolist()
    per_anchor = []
    for i, (student, teacher) in enumerate(zip(inputs.student.detach(), inputs.teacher)):
        label = int(inputs.labels[i])
        positives, negatives = [], []
        for j, candidate in enumerate(candidates):
            teacher_relation = cos(teacher, candidate)
            if j == i or teacher_relation >= 1.0 - 1e-6:
                continue
            pair = (cos(student, candidate), teacher_relation)
            (positives if candidate_labels[j] == label else negatives).append(pair)
        negatives.sort(key=lambda pair: pair[1], reverse=True)
        mined = positives + negatives[:top_k]
        if not mined:
            continue
        if form == "mse":
            per_anchor.append(sum((s - t) ** 2 for s, t in mined) / len(mined))
        elif form == "l1":
            per_anchor.append(sum(abs(s - t) for s, t in mined) / len(mined))
        else:
            student_norm = sum(math.exp(s / temperature) for s, _ in mined)
            teacher_norm = sum(math.exp(t / temperature) for _, t in mined)
            kl = 0.0
            for s, t in mined:
                p_teacher = math.exp(t / temperature) / teacher_norm
                p_student = math.exp(s / temperature) / student_norm
                kl += p_teacher * math.log(p_teacher / p_student)
            per_anchor.append(kl)
    return sum(per_anchor) / len(per_anchor)


@pytest.mark.parametrize("form", ["mse", "l1", "kl"])
@pytest.mark.parametrize("use_queue", [True, False])
def test_rad_matches_reference(batch: LossInputs, form: str, use_queue: bool) -> None:
    if not use_queue:
        batch.queue = batch.queue_labels = None
    term = RelationAwareDistillation(STUDENT_DIM, TEACHER_DIM, form=form, top_k=3, temperature=0.5)
    loss = term(batch)
    close(loss, reference_rad(batch, form, top_k=3, temperature=0.5))
    assert_student_gradient(loss, batch)


def test_rad_top_k_zero_keeps_only_positives(batch: LossInputs) -> None:
    term = RelationAwareDistillation(STUDENT_DIM, TEACHER_DIM, form="mse", top_k=0)
    close(term(batch), reference_rad(batch, "mse", top_k=0, temperature=1.0))


@pytest.mark.parametrize("form", ["mse", "kl"])
def test_rad_is_zero_when_student_equals_teacher(batch: LossInputs, form: str) -> None:
    same = LossInputs(student=batch.teacher.clone(), labels=batch.labels, teacher=batch.teacher,
                      queue=batch.queue, queue_labels=batch.queue_labels)
    close(RelationAwareDistillation(TEACHER_DIM, TEACHER_DIM, form=form)(same), 0.0)


def test_rad_rows_without_positives_and_single_sample(batch: LossInputs) -> None:
    distinct = LossInputs(student=batch.student, labels=torch.arange(BATCH), teacher=batch.teacher)
    term = RelationAwareDistillation(STUDENT_DIM, TEACHER_DIM, form="mse", top_k=4)
    close(term(distinct), reference_rad(distinct, "mse", top_k=4, temperature=1.0))
    single = LossInputs(student=batch.student[:1], labels=batch.labels[:1], teacher=batch.teacher[:1])
    loss = term(single)
    close(loss, 0.0)
    loss.backward()  # stays connected to the graph


def test_rad_projects_when_dimensions_differ(batch: LossInputs) -> None:
    term = RelationAwareDistillation(STUDENT_DIM, 24, form="kl")
    generator = torch.Generator().manual_seed(1)
    teacher = torch.nn.functional.normalize(torch.randn(BATCH, 24, generator=generator), dim=1)
    loss = term(LossInputs(student=batch.student, labels=batch.labels, teacher=teacher))
    loss.backward()
    assert torch.isfinite(loss) and term.projection.weight.grad.abs().sum() > 0


def test_rad_needs_queue_labels(batch: LossInputs) -> None:
    batch.queue_labels = None
    with pytest.raises(LossInputError, match="queue_labels"):
        RelationAwareDistillation(STUDENT_DIM, TEACHER_DIM)(batch)


# ---------------------------------------------------------------- logit KD, SP, RKD


def reference_softmax(row: list[float]) -> list[float]:
    exps = [math.exp(value) for value in row]
    return [e / sum(exps) for e in exps]


def test_logit_kd_matches_reference(batch: LossInputs) -> None:
    centres = torch.randn(CLASSES, TEACHER_DIM)
    scale, tau = 10.0, 2.0
    term = LogitDistillation(centres, STUDENT_DIM, scale=scale, temperature=tau)
    loss = term(batch)
    weights = term.class_weight.detach()
    total = 0.0
    for student, teacher in zip(batch.student.detach(), batch.teacher):
        p_teacher = reference_softmax([scale * cos(teacher, c) / tau for c in centres])
        p_student = reference_softmax([scale * cos(student, w) / tau for w in weights])
        total += sum(pt * math.log(pt / ps) for pt, ps in zip(p_teacher, p_student))
    close(loss, tau**2 * total / BATCH)
    assert_student_gradient(loss, batch)
    assert term.class_weight.grad.abs().sum() > 0 and term.class_centres.grad is None


def test_logit_kd_is_zero_when_student_matches_teacher(batch: LossInputs) -> None:
    centres = torch.randn(CLASSES, TEACHER_DIM)
    term = LogitDistillation(centres, TEACHER_DIM, class_weight=nn.Parameter(centres.clone()))
    close(term(LossInputs(student=batch.teacher * 2.0, labels=batch.labels, teacher=batch.teacher)), 0.0)


def test_sp_matches_reference(batch: LossInputs) -> None:
    loss = SimilarityPreserving()(batch)

    def gram(features: torch.Tensor) -> list[list[float]]:
        rows = [[cos(a, b) for b in features] for a in features]
        return [[value / math.sqrt(sum(v * v for v in row)) for value in row] for row in rows]

    student_gram, teacher_gram = gram(batch.student.detach()), gram(batch.teacher)
    expected = sum((student_gram[i][j] - teacher_gram[i][j]) ** 2 for i in range(BATCH) for j in range(BATCH))
    close(loss, expected / BATCH**2)
    assert_student_gradient(loss, batch)
    close(SimilarityPreserving()(LossInputs(student=batch.teacher * 3, labels=batch.labels, teacher=batch.teacher)), 0.0)


def test_rkd_matches_reference(batch: LossInputs) -> None:
    loss = RelationalDistance()(batch)

    def distances(features: torch.Tensor) -> list[float]:
        units = [unit(f) for f in features]
        values = [float((units[i] - units[j]).norm()) for i in range(BATCH) for j in range(BATCH) if i != j]
        mean = sum(values) / len(values)
        return [value / mean for value in values]

    def huber(a: float) -> float:
        return 0.5 * a * a if abs(a) < 1.0 else abs(a) - 0.5

    pairs = list(zip(distances(batch.student.detach()), distances(batch.teacher)))
    close(loss, sum(huber(s - t) for s, t in pairs) / len(pairs))
    assert_student_gradient(loss, batch)
    close(RelationalDistance()(LossInputs(student=batch.teacher * 5, labels=batch.labels, teacher=batch.teacher)), 0.0)


# ---------------------------------------------------------------- suite


def full_config(**overrides: float) -> LossConfig:
    weights = dict(margin=1.0, fcd=2.0, hard_fcd=0.5, exclusivity=0.1, rad=3.0, logit_kd=0.7, sp=1.5, rkd=0.3)
    weights.update(overrides)
    return LossConfig(**weights)


def test_suite_total_is_the_weighted_sum_of_terms(batch: LossInputs) -> None:
    batch.model = TinyConvNet()
    centres = torch.randn(CLASSES, TEACHER_DIM)
    config = full_config()
    suite = LossSuite(config, CLASSES, STUDENT_DIM, TEACHER_DIM, class_centres=centres)
    assert suite.needs == {"teacher", "queue", "model"}
    total, values = suite(batch)
    assert set(values) == set(suite.terms) == set(config.weights())
    expected = 0.0
    for name, term in suite.terms.items():
        term_value = float(term(batch).detach())
        close(torch.tensor(values[name]), getattr(config, name) * term_value)
        expected += getattr(config, name) * term_value
    close(total, expected)
    assert suite.terms["logit_kd"].class_weight is suite.terms["margin"].weight
    total.backward()
    assert batch.student.grad.abs().sum() > 0 and suite.terms["margin"].weight.grad.abs().sum() > 0


def test_suite_zero_weight_terms_are_absent(batch: LossInputs) -> None:
    config = LossConfig(margin=1.0, fcd=0.0, rad=0.0, exclusivity=0.0)
    suite = LossSuite(config, CLASSES, STUDENT_DIM, teacher_dim=24)
    assert list(suite.terms) == ["margin"] and suite.needs == frozenset()
    assert [name for name, _ in suite.named_parameters()] == ["terms.margin.weight"]
    total, values = suite(LossInputs(student=batch.student, labels=batch.labels))  # no teacher needed
    assert list(values) == ["margin"]
    close(total, float(suite.terms["margin"](batch).detach()))

    with_fcd = LossSuite(LossConfig(margin=1.0, fcd=1.0), CLASSES, STUDENT_DIM, teacher_dim=24)
    assert "terms.fcd.projection.weight" in dict(with_fcd.named_parameters())
    assert with_fcd.needs == {"teacher"}


def test_suite_logit_kd_without_margin_learns_its_own_weights() -> None:
    suite = LossSuite(LossConfig(margin=0.0, logit_kd=1.0), CLASSES, STUDENT_DIM, TEACHER_DIM,
                      class_centres=torch.randn(CLASSES, TEACHER_DIM))
    assert [name for name, _ in suite.named_parameters()] == ["terms.logit_kd.class_weight"]


@pytest.mark.parametrize("overrides, message", [
    (dict(margin_type="sphereface"), "margin_type"),
    (dict(rad_form="cosine"), "rad_form"),
    (dict(fcd=-1.0), "fcd"),
    (dict(sp=float("nan")), "sp"),
    (dict(margin=0.0), "all loss weights are 0"),
])
def test_config_validation(overrides: dict, message: str) -> None:
    with pytest.raises(LossConfigError, match=message):
        LossConfig(**overrides)


def test_suite_validation(batch: LossInputs) -> None:
    with pytest.raises(LossConfigError, match="teacher_dim"):
        LossSuite(LossConfig(fcd=1.0), CLASSES, STUDENT_DIM, teacher_dim=None)
    with pytest.raises(LossConfigError, match="class centres"):
        LossSuite(LossConfig(logit_kd=1.0), CLASSES, STUDENT_DIM, TEACHER_DIM)
    with pytest.raises(LossConfigError, match="rad"):
        LossSuite(LossConfig(rad=1.0, rad_top_k=-1), CLASSES, STUDENT_DIM, TEACHER_DIM)
    suite = LossSuite(LossConfig(fcd=1.0, exclusivity=1.0), CLASSES, STUDENT_DIM, TEACHER_DIM)
    with pytest.raises(LossInputError, match="teacher"):
        suite(LossInputs(student=batch.student, labels=batch.labels, model=TinyConvNet()))
    with pytest.raises(LossInputError, match="model"):
        suite(LossInputs(student=batch.student, labels=batch.labels, teacher=batch.teacher))
    with pytest.raises(LossInputError, match="teacher_dim"):
        suite(LossInputs(student=batch.student, labels=batch.labels, teacher=batch.teacher[:, :8], model=TinyConvNet()))


# ---------------------------------------------------------------- unlabelled samples


def test_margin_head_skips_unlabelled_samples(batch: LossInputs) -> None:
    from dataclasses import replace

    from facekd.core.data import UNLABELLED

    head = CombinedMarginHead(5, STUDENT_DIM)
    mixed = replace(batch, labels=torch.tensor([0, UNLABELLED, 1, 1, UNLABELLED, 3, 3, 4]))
    keep = mixed.labels != UNLABELLED
    subset = replace(batch, student=batch.student[keep], labels=mixed.labels[keep])
    close(head(mixed), float(head(subset)))
    none = replace(batch, labels=torch.full((BATCH,), UNLABELLED))
    loss = head(none)
    close(loss, 0.0)
    loss.backward()  # a batch of unlabelled faces still gives a graph-connected zero


def test_rad_gives_unlabelled_anchors_no_positives(batch: LossInputs) -> None:
    from facekd.core.data import UNLABELLED

    term = RelationAwareDistillation(STUDENT_DIM, TEACHER_DIM, form="mse", top_k=0)
    labels = torch.tensor([UNLABELLED, UNLABELLED, 1, 1, 2, 3, 3, 4])
    relations = torch.nn.functional.normalize(batch.teacher, dim=1) @ torch.nn.functional.normalize(batch.teacher, dim=1).T
    mined = term.mined_mask(relations, labels, labels)
    assert not mined[0].any() and not mined[1].any()  # two unlabelled faces are not "the same identity"
    assert mined[2, 3] and mined[5, 6]


def test_feature_hint_is_the_energy_normalised_error_of_the_projected_maps():
    from facekd.training.losses import FeatureHint

    torch.manual_seed(0)
    hint = FeatureHint([(4, 4), (2, 2)])
    for projection in hint.projections:
        projection.weight.data = torch.eye(projection.weight.shape[0])[:, :, None, None]
    teacher = [torch.randn(3, 4, 6, 6), torch.randn(3, 2, 3, 3) * 100.0]  # very different scales
    student = [(0.5 * t).requires_grad_() for t in teacher]
    loss = hint(LossInputs(student=torch.zeros(3, 8), labels=torch.zeros(3, dtype=torch.long),
                           student_maps=student, teacher_maps=teacher))
    assert loss.item() == pytest.approx(0.25, rel=1e-5)  # each tap: ‖0.5t − t‖² / ‖t‖², whatever its scale
    loss.backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)
    exact = hint(LossInputs(student=torch.zeros(3, 8), labels=torch.zeros(3, dtype=torch.long),
                            student_maps=teacher, teacher_maps=teacher))
    assert exact.item() == pytest.approx(0.0, abs=1e-7)


def test_hint_weight_without_taps_is_a_config_error():
    with pytest.raises(LossConfigError, match="loss.hint needs tapped feature maps"):
        LossSuite(LossConfig(margin=0.0, hint=1.0), num_classes=3, student_dim=8, teacher_dim=8)


def test_every_configurable_term_has_one_registered_builder_and_unknown_names_are_refused():
    from facekd.training.losses import TERMS, TermContext, build_term

    assert sorted(TERMS) == sorted(TERM_NAMES)
    context = TermContext(LossConfig(), 4, 8, 8, None, [], {})
    with pytest.raises(LossConfigError, match="unknown loss term 'hardfcd'; did you mean hard_fcd"):
        build_term("hardfcd", context)
