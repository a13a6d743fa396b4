"""OpenOOD v1.5's search of a score's settings on validation images: its grids, its order, its
choice (the first best AUROC), and what a network whose features cannot take a value gets."""

import math

import numpy as np
import pytest
import torch

from bench.methods.base import PosthocScoring
from bench.nn import posthoc
from bench.tuning import Choice, SettingOutOfRange, grid, search, setting_text, validation_auroc


def _openood_recursive_generator(lists, n):
    """OpenOOD v1.5's Evaluator.recursive_generator, transcribed."""
    if n == 1:
        return [[x] for x in lists[0]]
    results = []
    temp = _openood_recursive_generator(lists, n - 1)
    for x in lists[n - 1]:
        for y in temp:
            results.append([*y, x])
    return results


def test_the_grid_is_in_openoods_order():
    sweep = posthoc.POSTHOC["gen"].sweep
    want = _openood_recursive_generator([values for _, values in sweep], len(sweep))
    assert [list(c.values()) for c in grid(sweep)] == want
    assert grid(sweep)[:2] == [{"gen_gamma": 0.01, "gen_m": 10}, {"gen_gamma": 0.1, "gen_m": 10}]
    assert len(grid(sweep)) == 7 * 6


def test_the_grids_are_openoods_yml_sweeps():
    # configs/postprocessors/{knn,react,ash,gen,vim,odin}.yml at OpenOOD v1.5
    from bench.methods.supervised import CrossEntropy

    sweeps = {n: dict(s.sweep) for n, s in posthoc.POSTHOC.items() if s.sweep}
    assert sweeps == {
        "deep-knn": {"knn_k": (50, 100, 200, 500, 1000)},
        "gen": {"gen_gamma": (0.01, 0.1, 0.5, 1, 2, 5, 10), "gen_m": (10, 50, 100, 200, 500, 1000)},
        "react": {"react_percentile": (85, 90, 95, 99)},
        "ash-s": {"ash_percentile": (65, 70, 75, 80, 85, 90, 95)},
        "ash-b": {"ash_percentile": (65, 70, 75, 80, 85, 90, 95)},
        "vim": {"vim_dim": (256, 1000)},
    }
    assert dict(CrossEntropy.score_sweeps["odin"]) == {
        "odin_temperature": (1, 10, 100, 1000), "odin_epsilon": (0.0014, 0.0028)}
    assert posthoc.POSTHOC["react"].fit_on_validation  # its setup reads id_loader_dict['val']
    # every swept name is a setting the score reads
    for name, entry in posthoc.POSTHOC.items():
        assert {k for k, _ in entry.sweep} <= set(entry.settings), name


def test_search_keeps_the_first_best_auroc_and_leaves_out_what_cannot_be_scored():
    sweep = (("a", (1, 2, 3, 4)),)
    aurocs = {1: 0.6, 2: 0.8, 3: 0.8, 4: float("nan")}
    choice = search(sweep, lambda c: aurocs[c["a"]])
    assert choice.settings == {"a": 2} and choice.auroc == 0.8  # 3 ties: the first stays
    assert choice.tried[-1] == {"setting": "a=4", "left_out": "scores not finite"}

    def out_of_range(combo):
        raise SettingOutOfRange("too big")

    none = search(sweep, out_of_range)
    assert not none.tuned and none.settings == {} and math.isnan(none.auroc)
    assert "no combination" in none.record()["kept"]
    assert setting_text({"gen_gamma": 0.1, "gen_m": 100.0}) == "gen_gamma=0.1,gen_m=100"


def test_validation_auroc_is_ood_against_in_distribution():
    assert validation_auroc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
    assert validation_auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 0.0
    assert math.isnan(validation_auroc(np.array([0.0, np.inf]), np.array([1.0, 2.0])))


class _FeatureNet(PosthocScoring):
    """A network whose 'images' are its features already, with a fixed head."""

    outputs = frozenset({"features", "logits", "head"})
    scores = ()

    def __init__(self, config, head):
        self.config, self.head = config, head

    def penultimate(self, images):
        return images.float()

    def linear_head(self):
        return self.head


def test_tune_posthoc_picks_the_validation_best_and_scores_the_test_with_it():
    from dataclasses import dataclass

    from bench.datasets import ImageSet
    from bench.methods.network import LogitScoreConfig, NetworkConfig
    from bench.nn.context import FitContext

    @dataclass(frozen=True)
    class Config(NetworkConfig, LogitScoreConfig):
        pass

    g = torch.Generator().manual_seed(0)
    d = 8
    train = torch.randn(300, d, generator=g)
    labels = (train[:, 0] > 0).long()
    head = (torch.randn(2, d, generator=g), torch.zeros(2))
    net = _FeatureNet(Config(), head)
    net.ctx_ = FitContext(device=torch.device("cpu"), seed=0, labeled=True)
    fake = ImageSet(torch.zeros(300, 1, 1, 1, dtype=torch.uint8), labels, ("a", "b"), "t")
    net.train_features = lambda _: train
    net.fit_posthoc(fake)
    id_val = torch.randn(200, d, generator=g)
    ood_val = torch.randn(200, d, generator=g) * 2.5
    choices = net.tune_posthoc(id_val, ood_val)
    assert set(choices) == {"deep-knn", "gen", "react", "ash-s", "ash-b", "vim"}
    # deep-knn: the chosen k is the first with the best validation AUROC, found by hand
    bank = torch.nn.functional.normalize(train, dim=1)
    by_hand = {}
    for k in (50, 100, 200, 500, 1000):
        s = torch.cat([posthoc.knn_distance(id_val, bank, k), posthoc.knn_distance(ood_val, bank, k)])
        by_hand[k] = validation_auroc(s[:200].numpy(), s[200:].numpy())
    best = max(by_hand.values())
    assert choices["deep-knn"].settings == {"knn_k": next(k for k, v in by_hand.items() if v == best)}
    # vim: 256 and 1000 do not fit 8-dimensional features: the config's rule stays, untuned
    assert not choices["vim"].tuned and len(choices["vim"].tried) == 2
    # react's threshold comes from the validation features at the chosen percentile
    p = choices["react"].settings["react_percentile"]
    assert net.posthoc_["react"] == pytest.approx(posthoc.react_threshold(id_val, p))
    # test scores use the chosen settings
    test = torch.randn(50, d, generator=g)
    k = choices["deep-knn"].settings["knn_k"]
    assert torch.allclose(net.posthoc_of(test)["deep-knn"], posthoc.knn_distance(test, bank, k))
    assert isinstance(choices["gen"], Choice)


def test_a_methods_own_score_is_scored_with_the_setting_its_search_chose():
    """CE's ODIN, searched on validation images: score() gives ODIN at the chosen temperature
    and epsilon, from one pass of the method's scores (MSP unchanged)."""
    import dataclasses

    from bench.datasets import load_dataset
    from bench.nn.context import FitContext
    from helpers import tiny

    train = load_dataset("synthetic", "train")
    det = tiny("ce", epochs=1, max_train_samples=64)
    det.fit(train, FitContext(progress=False, labeled=True))
    id_val, ood_val = train.images[:40], (torch.rand(40, *train.shape) * 255).to(torch.uint8)
    choice = det.tune(id_val, ood_val)["odin"]
    assert choice.tuned and len(choice.tried) == 8
    images = train.images[40:60]
    torch.manual_seed(0)
    got = det.score(images)
    chosen = dataclasses.replace(det.config, **choice.settings)
    want = det._with_config(chosen, lambda: det.method_scores(images))
    assert np.allclose(got["odin"], want["odin"]) and np.allclose(got["msp"], want["msp"])
    plain = det.__class__(det.config)
    plain.__dict__.update({k: v for k, v in det.__dict__.items() if k != "own_config_"})
    if choice.settings != {"odin_temperature": 1000.0, "odin_epsilon": 0.0014}:
        assert not np.allclose(plain.score(images)["odin"], got["odin"])
